"""RPC encoding against bytes captured from a third-party client (libnfs-utils 4.0 nfs-ls).

The vectors were recorded by a logging TCP proxy between ``nfs-ls`` and a server; they
pin our decoder and encoder to what a real implementation puts on the wire.
"""

from __future__ import annotations

from ferry.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM
from ferry.rpc.auth import decode_credentials, encode_auth_sys
from ferry.rpc.dispatch import Dispatcher, Program
from ferry.rpc.message import AuthFlavor, CallHeader, read_xid, unpack_call
from ferry.xdr import Packer, Unpacker

# MOUNT v3 NULL, then MNT "/tmp/exp", then NFS v3 NULL, each with libnfs's AUTH_SYS
# credential (stamp, machine "libnfs", uid 0, gid 0, no gids) and an AUTH_NONE verifier.
LIBNFS_MOUNT_NULL = bytes.fromhex(
    "322795550000000000000002000186a50000000300000000000000010000001c000a9555"
    "000000066c69626e667300000000000000000000000000000000000000000000"
)
LIBNFS_MNT = bytes.fromhex(
    "322795560000000000000002000186a50000000300000001000000010000001c000a9555"
    "000000066c69626e667300000000000000000000000000000000000000000000"
    "000000082f746d702f657870"
)
LIBNFS_NFS_NULL = bytes.fromhex(
    "322795580000000000000002000186a30000000300000000000000010000001c000a9555"
    "000000066c69626e667300000000000000000000000000000000000000000000"
)
# RFC 5531 accepted reply with AUTH_NONE verifier and SUCCESS, as every server sends to NULL.
NULL_REPLY = bytes.fromhex("322795580000000100000000000000000000000000000000")


def _decode(record: bytes) -> tuple[CallHeader, Unpacker]:
    u = Unpacker(record)
    return unpack_call(u, read_xid(u)), u


def test_libnfs_mount_null_decodes() -> None:
    header, u = _decode(LIBNFS_MOUNT_NULL)
    assert (header.xid, header.rpcvers, header.prog, header.vers, header.proc) == (
        0x32279555,
        2,
        MOUNT_PROGRAM,
        3,
        0,
    )
    cred = decode_credentials(header.cred)
    assert (cred.flavor, cred.uid, cred.gid, cred.gids, cred.machine, cred.stamp) == (
        AuthFlavor.AUTH_SYS,
        0,
        0,
        (),
        "libnfs",
        0xA9555,
    )
    assert header.verf.flavor == AuthFlavor.AUTH_NONE
    assert u.remaining() == 0


def test_libnfs_mnt_arguments_follow_the_header() -> None:
    header, u = _decode(LIBNFS_MNT)
    assert header.proc == 1
    assert u.unpack_bytes() == b"/tmp/exp"


def test_call_header_reencodes_byte_for_byte() -> None:
    for record in (LIBNFS_MOUNT_NULL, LIBNFS_MNT, LIBNFS_NFS_NULL):
        header, u = _decode(record)
        p = Packer()
        CallHeader(
            header.xid,
            2,
            header.prog,
            header.vers,
            header.proc,
            encode_auth_sys(0, 0, (), "libnfs", 0xA9555),
            header.verf,
        ).pack(p)
        assert p.get_buffer() + bytes(u.rest()) == record


def test_null_reply_is_byte_exact() -> None:
    d = Dispatcher([Program(NFS_PROGRAM, "nfs", {3: {0: lambda u, c, p: None}})])
    reply = d.handle(LIBNFS_NFS_NULL)
    assert reply is not None
    assert b"".join(reply) == NULL_REPLY

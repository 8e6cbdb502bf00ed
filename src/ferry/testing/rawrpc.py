"""A deliberately small ONC RPC client over TCP, for tests: no retries, no pipelining.

It builds calls byte by byte from Ferry's wire layer (XDR, RPC headers, record marking)
so tests can send malformed input too, and asserts on what it expects back: a tool for
tests of any RPC server (Ferry's protocol suite uses it against every server model).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ferry.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, Nfsstat3
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.message import NULL_AUTH, CallHeader, OpaqueAuth
from ferry.rpc.record import frame_bytes
from ferry.xdr import Packer, Unpacker


@dataclass
class Reply:
    """One RPC reply, its header decoded; ``body`` is positioned at the results."""

    xid: int
    reply_stat: int  # 0 accepted, 1 denied
    stat: int  # accept_stat or reject_stat
    body: Unpacker

    def ok(self) -> Unpacker:
        assert (self.reply_stat, self.stat) == (0, 0), f"rpc failed: {self.reply_stat}/{self.stat}"
        return self.body


class RawClient:
    """One TCP connection; each call is sent and its reply awaited (no pipelining).

    ``call_bytes`` builds a call header without sending it, so a test can append any
    body, valid or not, and ``send_record`` it.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.xid = 0x1000
        self.cred: OpaqueAuth = encode_auth_sys(0, 0)

    def close(self) -> None:
        self.sock.close()

    def as_user(self, uid: int, gid: int, gids: tuple[int, ...] = ()) -> None:
        self.cred = encode_auth_sys(uid, gid, gids)

    def send_record(self, data: bytes) -> None:
        self.sock.sendall(frame_bytes(data))

    def recv_record(self) -> bytes:
        chunks = []
        while True:
            (header,) = struct.unpack(">I", self._recv_exact(4))
            chunks.append(self._recv_exact(header & 0x7FFFFFFF))
            if header & 0x80000000:
                return b"".join(chunks)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return bytes(buf)

    def call_bytes(
        self,
        prog: int,
        vers: int,
        proc: int,
        args: bytes = b"",
        cred: OpaqueAuth | None = None,
        rpcvers: int = 2,
    ) -> bytes:
        self.xid += 1
        p = Packer()
        CallHeader(self.xid, rpcvers, prog, vers, proc, cred or self.cred, NULL_AUTH).pack(p)
        return p.get_buffer() + args

    def call(self, prog: int, vers: int, proc: int, args: bytes = b"", **kw: object) -> Reply:
        self.send_record(self.call_bytes(prog, vers, proc, args, **kw))  # type: ignore[arg-type]
        return parse_reply(self.recv_record())

    def nfs(
        self, proc: int, build: Callable[[Packer], None] | None = None
    ) -> tuple[Nfsstat3, Unpacker]:
        p = Packer()
        if build:
            build(p)
        u = self.call(NFS_PROGRAM, 3, proc, p.get_buffer()).ok()
        return Nfsstat3(u.unpack_uint()), u

    def mount(self, path: str) -> bytes:
        p = Packer()
        p.pack_string(path)
        u = self.call(MOUNT_PROGRAM, 3, 1, p.get_buffer()).ok()
        status = u.unpack_uint()
        assert status == 0, f"MNT {path} -> {status}"
        return bytes(u.unpack_opaque(64))


def parse_reply(data: bytes) -> Reply:
    """Decode a reply record's header: xid, accepted or denied, and its status."""
    u = Unpacker(data)
    xid, mtype, reply_stat = u.unpack_uint(), u.unpack_uint(), u.unpack_uint()
    assert mtype == 1
    if reply_stat == 0:
        u.unpack_uint()
        u.unpack_opaque(400)  # verifier
    return Reply(xid, reply_stat, u.unpack_uint(), u)

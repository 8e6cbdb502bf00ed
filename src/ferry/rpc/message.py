"""ONC RPC v2 messages (RFC 5531 sections 8-9): call header decoding and reply encoding.

Only the header lives here; procedure arguments and results belong to each program. The
header of an ordinary call is read in one go (``parse_call``, the server's hot path); any
other is decoded field by field (``read_xid``, ``unpack_call``), which decides its errors.
"""

from __future__ import annotations

import dataclasses
import enum
import struct

from ferry.errors import XdrError
from ferry.xdr import Packer, Unpacker

RPC_VERSION = 2
MAX_AUTH_BYTES = 400  # RFC 5531 section 8.2: opaque_auth body<400>
_MAX_DECODED_AUTH = 64 * 1024
_CALL_HEAD = struct.Struct(">IiIIIIiI")
"""A call's first 32 bytes: xid, msg_type, rpcvers, prog, vers, proc, then the credential's
flavor and body length (RFC 5531 section 9), read in one go on the hot path."""
_AUTH_HEAD = struct.Struct(">iI")  # the verifier's flavor and body length
_SEEN_AUTH_MAX = 256


class MsgType(enum.IntEnum):
    CALL = 0
    REPLY = 1


class ReplyStat(enum.IntEnum):
    MSG_ACCEPTED = 0
    MSG_DENIED = 1


class AcceptStat(enum.IntEnum):
    SUCCESS = 0
    PROG_UNAVAIL = 1
    PROG_MISMATCH = 2
    PROC_UNAVAIL = 3
    GARBAGE_ARGS = 4
    SYSTEM_ERR = 5


class RejectStat(enum.IntEnum):
    RPC_MISMATCH = 0
    AUTH_ERROR = 1


class AuthStat(enum.IntEnum):
    OK = 0
    BADCRED = 1
    REJECTEDCRED = 2
    BADVERF = 3
    REJECTEDVERF = 4
    TOOWEAK = 5
    INVALIDRESP = 6
    FAILED = 7


class AuthFlavor(enum.IntEnum):
    AUTH_NONE = 0
    AUTH_SYS = 1
    AUTH_SHORT = 2
    AUTH_DH = 3
    RPCSEC_GSS = 6


@dataclasses.dataclass(slots=True, frozen=True)
class OpaqueAuth:
    """``opaque_auth``: a flavor and its body (at most 400 bytes)."""

    flavor: int
    body: bytes = b""

    def pack(self, p: Packer) -> None:
        p.pack_enum(self.flavor)
        p.pack_opaque(self.body)

    @classmethod
    def unpack(cls, u: Unpacker, max_len: int = MAX_AUTH_BYTES) -> OpaqueAuth:
        flavor = u.unpack_enum()
        return cls(flavor, u.unpack_bytes(max_len))


NULL_AUTH = OpaqueAuth(AuthFlavor.AUTH_NONE)


@dataclasses.dataclass(slots=True)
class CallHeader:
    """``call_body`` of an RPC call, with the xid in front. Not frozen: one is made per
    call, and a frozen dataclass takes three times as long to make; nothing changes it."""

    xid: int
    rpcvers: int
    prog: int
    vers: int
    proc: int
    cred: OpaqueAuth
    verf: OpaqueAuth

    def pack(self, p: Packer) -> None:
        for v in (self.xid, MsgType.CALL, self.rpcvers, self.prog, self.vers, self.proc):
            p.pack_uint(v)
        self.cred.pack(p)
        self.verf.pack(p)


_CALL = MsgType.CALL
"""Hoisted for ``parse_call``: an enum member read through its class costs ten times a
global."""


class NotACall(XdrError):
    """The message is a REPLY or has an unknown type: a server ignores it."""


def read_xid(u: Unpacker) -> int:
    return u.unpack_uint()


def unpack_call(u: Unpacker, xid: int) -> CallHeader:
    """Decode the rest of a call header after the xid; the cursor is left at the arguments."""
    mtype = u.unpack_enum()
    if mtype != MsgType.CALL:
        raise NotACall(f"message type {mtype} is not a call")
    rpcvers = u.unpack_uint()
    if rpcvers != RPC_VERSION:  # cannot parse the rest reliably; the caller replies RPC_MISMATCH
        return CallHeader(xid, rpcvers, 0, 0, 0, NULL_AUTH, NULL_AUTH)
    prog, vers, proc = u.unpack_uint(), u.unpack_uint(), u.unpack_uint()
    # Oversized credentials are decoded (the record size bounds them) so that the
    # dispatcher can answer AUTH_BADCRED rather than GARBAGE_ARGS (RFC 5531 section 9).
    cred = OpaqueAuth.unpack(u, _MAX_DECODED_AUTH)
    return CallHeader(xid, rpcvers, prog, vers, proc, cred, OpaqueAuth.unpack(u, _MAX_DECODED_AUTH))


_seen_auth: dict[bytes, OpaqueAuth] = {}
"""Credentials as they came on the wire (flavor, length, body) -> the ``OpaqueAuth`` made of
them: clients send the same bytes on every call. Bounded (emptied when full); values are
immutable, so threads may share it."""


def parse_call(record: bytes | bytearray | memoryview) -> tuple[CallHeader, int] | None:
    """The hot path of ``read_xid`` + ``unpack_call``: the header of a well-formed RPC v2
    call whose credential and verifier fit ``MAX_AUTH_BYTES``, and the offset of its
    arguments; None for anything else (short, not a call, another RPC version, long auth),
    which ``unpack_call`` then decodes or refuses as before."""
    if isinstance(record, memoryview):
        record = record.cast("B")  # lengths and slices in bytes
    try:
        xid, mtype, rpcvers, prog, vers, proc, flavor, length = _CALL_HEAD.unpack_from(record)
        if mtype != _CALL or rpcvers != RPC_VERSION or length > MAX_AUTH_BYTES:
            return None
        pos = 32 + ((length + 3) & ~3)
        vflavor, vlength = _AUTH_HEAD.unpack_from(record, pos)
    except struct.error:
        return None
    end = pos + 8 + ((vlength + 3) & ~3)
    if vlength > MAX_AUTH_BYTES or end > len(record):
        return None
    raw = bytes(record[24 : 32 + length])
    cred = _seen_auth.get(raw)
    if cred is None:
        cred = OpaqueAuth(flavor, raw[8:])
        if len(_seen_auth) >= _SEEN_AUTH_MAX:
            _seen_auth.clear()
        _seen_auth[raw] = cred
    if vflavor == 0 and vlength == 0:
        verf = NULL_AUTH
    else:
        verf = OpaqueAuth(vflavor, bytes(record[pos + 8 : pos + 8 + vlength]))
    return CallHeader(xid, rpcvers, prog, vers, proc, cred, verf), end


_ACCEPTED = struct.Struct(">IiiiIi")
"""An accepted reply's header with an AUTH_NONE verifier (every reply Ferry sends): xid,
REPLY, MSG_ACCEPTED, AUTH_NONE, an empty body, accept_stat (RFC 5531 section 9)."""


def accepted_head(xid: int, stat: AcceptStat = AcceptStat.SUCCESS) -> bytes:
    """The header of an accepted reply with an AUTH_NONE verifier, packed in one call."""
    return _ACCEPTED.pack(xid, 1, 0, 0, 0, stat)


def pack_accepted(p: Packer, xid: int, stat: AcceptStat, verf: OpaqueAuth = NULL_AUTH) -> None:
    """Reply header for an accepted call; the caller appends results (SUCCESS) or mismatch info."""
    if verf is NULL_AUTH:
        p.pack_raw(accepted_head(xid, stat))
        return
    p.pack_uint(xid)
    p.pack_enum(MsgType.REPLY)
    p.pack_enum(ReplyStat.MSG_ACCEPTED)
    verf.pack(p)
    p.pack_enum(stat)


def pack_prog_mismatch(p: Packer, xid: int, low: int, high: int) -> None:
    pack_accepted(p, xid, AcceptStat.PROG_MISMATCH)
    p.pack_uint(low)
    p.pack_uint(high)


def pack_rpc_mismatch(p: Packer, xid: int) -> None:
    """MSG_DENIED / RPC_MISMATCH with the supported range [2, 2]."""
    p.pack_uint(xid)
    p.pack_enum(MsgType.REPLY)
    p.pack_enum(ReplyStat.MSG_DENIED)
    p.pack_enum(RejectStat.RPC_MISMATCH)
    p.pack_uint(RPC_VERSION)
    p.pack_uint(RPC_VERSION)


def pack_auth_error(p: Packer, xid: int, stat: AuthStat) -> None:
    p.pack_uint(xid)
    p.pack_enum(MsgType.REPLY)
    p.pack_enum(ReplyStat.MSG_DENIED)
    p.pack_enum(RejectStat.AUTH_ERROR)
    p.pack_enum(stat)

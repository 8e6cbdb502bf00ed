"""The hot paths of the RPC layer (issue 20) decide exactly what the general ones do.

``parse_call`` reads a well-formed call header in one go and must give the header and the
argument offset ``read_xid`` + ``unpack_call`` give, or None (then the general path decodes
or refuses the call as before). The caches behind it are bounded.
"""

from __future__ import annotations

import struct

import pytest

from ferry.rpc import message
from ferry.rpc.auth import (
    ANONYMOUS,
    BadCredentials,
    CredentialCache,
    UnsupportedFlavor,
    decode_credentials,
    encode_auth_sys,
)
from ferry.rpc.dispatch import Dispatcher, Program
from ferry.rpc.message import NULL_AUTH, CallHeader, OpaqueAuth, parse_call, read_xid, unpack_call
from ferry.xdr import Packer, Unpacker


def _record(
    cred: OpaqueAuth = NULL_AUTH, verf: OpaqueAuth = NULL_AUTH, args: bytes = b"\0\0\0\7"
) -> bytes:
    p = Packer()
    CallHeader(0x1234, 2, 100003, 3, 1, cred, verf).pack(p)
    return p.get_buffer() + args


def _general(record: bytes) -> tuple[CallHeader, int]:
    u = Unpacker(record)
    return unpack_call(u, read_xid(u)), u.position


CREDS = [
    NULL_AUTH,
    encode_auth_sys(0, 0),
    encode_auth_sys(1000, 100, (4, 24, 27), machine="a-host-name"),
    encode_auth_sys(1, 1, tuple(range(16)), machine="x" * 255),
    OpaqueAuth(6, b"gss"),  # decoded here; refused later (AUTH_TOOWEAK) as before
    OpaqueAuth(1, b"\0\0"),  # malformed AUTH_SYS: refused later (AUTH_BADCRED) as before
]
VERFS = [NULL_AUTH, OpaqueAuth(0, b"12345678"), OpaqueAuth(3, b"x" * 400)]


@pytest.mark.parametrize("cred", CREDS)
@pytest.mark.parametrize("verf", VERFS)
@pytest.mark.parametrize("args", [b"", b"\0\0\0\7", bytes(100)])
def test_parse_call_matches_the_general_decoder(
    cred: OpaqueAuth, verf: OpaqueAuth, args: bytes
) -> None:
    record = _record(cred, verf, args)
    for form in (record, bytearray(record), memoryview(record)):
        assert parse_call(form) == _general(record)


def test_parse_call_leaves_unusual_calls_to_the_general_path() -> None:
    good = _record(encode_auth_sys(0, 0))
    assert parse_call(good) is not None
    reply = good[:4] + struct.pack(">I", 1) + good[8:]
    rpc3 = good[:8] + struct.pack(">I", 3) + good[12:]
    cases = {
        "empty": b"",
        "xid only": good[:4],
        "truncated credential": good[:40],
        "no verifier": _record(args=b"")[:-8],
        "verifier body cut": _record(verf=OpaqueAuth(0, b"12345678"), args=b"")[:-4],
        "a reply": reply,
        "rpc version 3": rpc3,
        "credential over 400 bytes": _record(OpaqueAuth(1, bytes(404))),
        "verifier over 400 bytes": _record(verf=OpaqueAuth(0, bytes(404))),
    }
    for name, record in cases.items():
        assert parse_call(record) is None, name


def test_credentials_seen_are_shared_and_bounded() -> None:
    message._seen_auth.clear()
    cred = encode_auth_sys(1000, 1000)
    first, _ = parse_call(_record(cred)) or pytest.fail("not parsed")
    second, _ = parse_call(_record(cred)) or pytest.fail("not parsed")
    assert first.cred is second.cred  # one object for the same bytes
    assert first.cred == cred
    for uid in range(3 * message._SEEN_AUTH_MAX):
        parse_call(_record(encode_auth_sys(uid, 0)))
        assert len(message._seen_auth) <= message._SEEN_AUTH_MAX


@pytest.mark.parametrize("stat", list(message.AcceptStat))
def test_accepted_head_is_the_field_by_field_encoding(stat: message.AcceptStat) -> None:
    p = Packer()
    for word in (0xDEADBEEF, message.MsgType.REPLY, message.ReplyStat.MSG_ACCEPTED):
        p.pack_uint(word)
    NULL_AUTH.pack(p)
    p.pack_enum(stat)
    assert message.accepted_head(0xDEADBEEF, stat) == p.get_buffer()
    q = Packer()
    message.pack_accepted(q, 0xDEADBEEF, stat)
    assert q.get_buffer() == p.get_buffer()


def test_credential_cache_decodes_once_and_stays_bounded() -> None:
    cache = CredentialCache(size=8)
    cred = encode_auth_sys(1000, 100, (4, 24), machine="host")
    first = cache.decode(cred)
    assert first == decode_credentials(cred)
    assert cache.decode(OpaqueAuth(cred.flavor, bytes(cred.body))) is first  # by value
    for uid in range(50):
        assert cache.decode(encode_auth_sys(uid, 7)).uid == uid
        assert len(cache) <= 8
    assert cache.decode(NULL_AUTH) is ANONYMOUS


@pytest.mark.parametrize(
    ("cred", "error"),
    [
        (OpaqueAuth(1, b"\0\0"), BadCredentials),  # truncated AUTH_SYS
        (OpaqueAuth(1, bytes(401)), BadCredentials),  # over 400 bytes
        (encode_auth_sys(0, 0, tuple(range(17))), BadCredentials),  # 17 gids
        (OpaqueAuth(6, b"gss"), UnsupportedFlavor),
    ],
)
def test_bad_credentials_fail_every_time_and_are_never_kept(
    cred: OpaqueAuth, error: type[Exception]
) -> None:
    cache = CredentialCache()
    for _ in range(3):
        with pytest.raises(error):
            cache.decode(cred)
    assert len(cache) == 0


def test_dispatcher_refuses_bad_credentials_after_good_ones_were_cached() -> None:
    """AUTH_BADCRED and AUTH_TOOWEAK replies are what they were without the cache."""
    d = Dispatcher([Program(100003, "nfs", {3: {0: lambda u, ctx, p: None}})])
    good, bad = encode_auth_sys(0, 0), OpaqueAuth(1, b"\0\0")
    for _ in range(2):
        ok = b"".join(d.handle(_null_call(good)) or [])
        assert ok[4:] == bytes.fromhex("00000001 00000000 00000000 00000000 00000000")
        refused = b"".join(d.handle(_null_call(bad)) or [])
        assert refused[4:] == bytes.fromhex("00000001 00000001 00000001 00000001")  # BADCRED
        weak = b"".join(d.handle(_null_call(OpaqueAuth(6, b"gss"))) or [])
        assert weak[4:] == bytes.fromhex("00000001 00000001 00000001 00000005")  # TOOWEAK


def _null_call(cred: OpaqueAuth) -> bytes:
    p = Packer()
    CallHeader(7, 2, 100003, 3, 0, cred, NULL_AUTH).pack(p)
    return p.get_buffer()

"""XDR codec: the RFC 4506 section 7 example byte for byte, limits, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.errors import XdrError
from ferry.xdr import Packer, Unpacker

# RFC 4506 section 7: file "sillyprog", kind EXEC, interpretor "lisp", owner "john",
# data "(quit)".
RFC4506_FILE = bytes.fromhex(
    "00000009 73696c6c 7970726f 67000000"
    "00000002 00000004 6c697370"
    "00000004 6a6f686e"
    "00000006 28717569 74290000".replace(" ", "")
)


def test_rfc4506_example_encodes_byte_for_byte() -> None:
    p = Packer()
    p.pack_string("sillyprog")
    p.pack_enum(2)  # EXEC
    p.pack_string("lisp")
    p.pack_string("john")
    p.pack_opaque(b"(quit)")
    assert p.get_buffer() == RFC4506_FILE


def test_rfc4506_example_decodes() -> None:
    u = Unpacker(RFC4506_FILE)
    assert u.unpack_bytes() == b"sillyprog"
    assert u.unpack_enum() == 2
    assert u.unpack_bytes() == b"lisp"
    assert u.unpack_bytes() == b"john"
    assert u.unpack_bytes() == b"(quit)"
    assert u.remaining() == 0


@pytest.mark.parametrize(
    "data",
    [b"", b"\0\0\0", b"\0\0\0\x05abc", b"\0\0\0\x01"],
)
def test_truncated_input_raises_xdr_error(data: bytes) -> None:
    u = Unpacker(data)
    with pytest.raises(XdrError):
        u.unpack_opaque()


def test_opaque_over_limit_is_refused_before_reading() -> None:
    u = Unpacker(b"\xff\xff\xff\xff")
    with pytest.raises(XdrError, match="exceeds limit"):
        u.unpack_opaque(1024)


def test_array_count_over_limit_is_refused() -> None:
    u = Unpacker(b"\x00\x10\x00\x00")
    with pytest.raises(XdrError):
        u.unpack_array(u.unpack_uint, 16)


def test_bool_other_than_0_or_1_is_refused() -> None:
    with pytest.raises(XdrError):
        Unpacker(b"\0\0\0\x02").unpack_bool()


def test_large_opaque_is_referenced_not_copied() -> None:
    payload = bytearray(b"x" * 65536)
    p = Packer()
    p.pack_uint(7)
    p.pack_opaque(payload)
    assert any(b is payload for b in p.buffers())
    assert p.get_buffer() == b"\0\0\0\x07" + b"\0\x01\0\0" + bytes(payload)


@given(
    st.integers(0, 2**32 - 1),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.binary(max_size=9000),
    st.booleans(),
    st.lists(st.integers(0, 2**32 - 1), max_size=20),
)
def test_round_trip(
    u32: int, i32: int, u64: int, i64: int, blob: bytes, flag: bool, items: list[int]
) -> None:
    p = Packer()
    p.pack_uint(u32)
    p.pack_int(i32)
    p.pack_uhyper(u64)
    p.pack_hyper(i64)
    p.pack_opaque(blob)
    p.pack_bool(flag)
    p.pack_array(items, p.pack_uint)
    p.pack_optional(None, p.pack_uint)
    p.pack_optional(u32, p.pack_uint)
    data = p.get_buffer()
    assert len(data) % 4 == 0
    u = Unpacker(data)
    assert u.unpack_uint() == u32
    assert u.unpack_int() == i32
    assert u.unpack_uhyper() == u64
    assert u.unpack_hyper() == i64
    assert u.unpack_bytes() == blob
    assert u.unpack_bool() is flag
    assert u.unpack_array(u.unpack_uint, 100) == items
    assert u.unpack_optional(u.unpack_uint) is None
    assert u.unpack_optional(u.unpack_uint) == u32
    assert u.remaining() == 0


def test_flat_unpack_bytes_matches_unpack_opaque() -> None:
    """``unpack_bytes`` is written flat for speed: same values, positions and errors as
    ``bytes(unpack_opaque())`` on every truncation of every length."""
    for n in range(0, 10):
        p = Packer()
        p.pack_opaque(bytes(range(1, n + 1)))
        p.pack_uint(7)
        data = p.get_buffer()
        for cut in range(len(data) + 1):
            for form in (data[:cut], bytearray(data[:cut]), memoryview(data)[:cut]):
                for limit in (0xFFFFFFFF, n, max(n - 1, 0)):
                    a, b = Unpacker(form), Unpacker(form)
                    try:
                        want: object = bytes(a.unpack_opaque(limit))
                    except XdrError as exc:
                        want = str(exc)
                    try:
                        got: object = b.unpack_bytes(limit)
                    except XdrError as exc:
                        got = str(exc)
                    assert (got, b.position) == (want, a.position), (n, cut, limit)

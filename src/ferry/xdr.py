"""XDR (RFC 4506) encoding and decoding: a Packer that builds, an Unpacker cursor that reads.

Rules: every short read raises ``XdrError``; variable-length items are checked against a
caller-given maximum before any allocation; opaque data decodes as ``memoryview`` slices
of the input (no copy), and ``Packer.pack_opaque_ref`` appends large payloads as separate
buffers so READ replies go out scatter-gather without being copied.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

from ferry.errors import XdrError

T = TypeVar("T")

_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_COPY_LIMIT = 4096  # payloads at least this big are referenced, not copied


def _pad_len(n: int) -> int:
    return (4 - n % 4) % 4


class Packer:
    """Accumulates XDR items; ``buffers()`` returns the encoding as a list of buffers.
    ``head``: bytes already encoded to start with (a reply header packed in one call)."""

    __slots__ = ("_buf", "_chunks")

    def __init__(self, head: bytes = b"") -> None:
        self._buf = bytearray(head)
        self._chunks: list[bytes | bytearray | memoryview] = []

    def pack_uint(self, v: int) -> None:
        self._buf += _U32.pack(v)

    def pack_int(self, v: int) -> None:
        self._buf += _I32.pack(v)

    def pack_uhyper(self, v: int) -> None:
        self._buf += _U64.pack(v)

    def pack_hyper(self, v: int) -> None:
        self._buf += _I64.pack(v)

    def pack_bool(self, v: bool) -> None:
        self._buf += _U32.pack(1 if v else 0)

    pack_enum = pack_int

    def pack_fopaque(self, n: int, data: bytes | bytearray | memoryview) -> None:
        """Fixed-length opaque[n]; ``data`` must be exactly ``n`` bytes."""
        if len(data) != n:
            raise XdrError(f"fixed opaque needs {n} bytes, got {len(data)}")
        self._buf += data
        self._buf += _PAD[n % 4]

    def pack_opaque(self, data: bytes | bytearray | memoryview) -> None:
        """Variable-length opaque<>: length, bytes, padding."""
        n = len(data)
        self._buf += _U32.pack(n)
        if n >= _COPY_LIMIT:
            self._chunks.append(self._buf)
            self._chunks.append(data)
            self._buf = bytearray(_PAD[n % 4])
        else:
            self._buf += data
            self._buf += _PAD[n % 4]

    pack_opaque_ref = pack_opaque

    def pack_string(self, s: bytes | str) -> None:
        self.pack_opaque(s.encode() if isinstance(s, str) else s)

    def pack_array(self, items: Sequence[T], pack_item: Callable[[T], None]) -> None:
        """Variable-length array: count, then each item."""
        self.pack_uint(len(items))
        for item in items:
            pack_item(item)

    def pack_optional(self, item: T | None, pack_item: Callable[[T], None]) -> None:
        """Optional-data (``*T``): a bool, then the item if present."""
        if item is None:
            self._buf += b"\0\0\0\0"
        else:
            self._buf += b"\0\0\0\1"
            pack_item(item)

    def pack_struct(self, fmt: struct.Struct, *values: int) -> None:
        """Append a fixed layout in one call (hot paths: fattr3, directory entries)."""
        self._buf += fmt.pack(*values)

    def pack_raw(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes already XDR-encoded."""
        self._buf += data

    def buffers(self) -> list[bytes | bytearray | memoryview]:
        """The encoding as a list of buffers (one unless large opaques were referenced)."""
        return [*self._chunks, self._buf] if self._chunks else [self._buf]

    def get_buffer(self) -> bytes:
        """The whole encoding as one bytes object (copies; for tests and small messages)."""
        return b"".join(self.buffers())

    def __len__(self) -> int:
        return sum(len(b) for b in self._chunks) + len(self._buf)


class Unpacker:
    """A cursor over XDR bytes; opaque results are zero-copy memoryview slices."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes | bytearray | memoryview, pos: int = 0) -> None:
        self._data = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        self._pos = pos

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def _take(self, n: int) -> int:
        pos = self._pos
        end = pos + n
        if end > len(self._data):
            raise XdrError(
                f"truncated: need {n} bytes at offset {pos}, have {len(self._data) - pos}"
            )
        self._pos = end
        return pos

    def unpack_uint(self) -> int:
        """Flat, like ``unpack_bytes`` (no ``_take`` call unless short): an ACCESS mask,
        a READ count, every number of every reply the client reads."""
        pos = self._pos
        if pos + 4 > len(self._data):
            self._take(4)  # raises, with the message every short read has
        self._pos = pos + 4
        v: int = _U32.unpack_from(self._data, pos)[0]
        return v

    def unpack_int(self) -> int:
        """Flat, as ``unpack_uint``: every enum (a status, a file type) comes through here."""
        pos = self._pos
        if pos + 4 > len(self._data):
            self._take(4)  # raises
        self._pos = pos + 4
        v: int = _I32.unpack_from(self._data, pos)[0]
        return v

    def unpack_uhyper(self) -> int:
        return int(_U64.unpack_from(self._data, self._take(8))[0])

    def unpack_hyper(self) -> int:
        return int(_I64.unpack_from(self._data, self._take(8))[0])

    def unpack_bool(self) -> bool:
        v = self.unpack_uint()
        if v > 1:
            raise XdrError(f"bad bool value {v}")
        return v == 1

    unpack_enum = unpack_int

    def unpack_struct(self, fmt: struct.Struct) -> tuple[int, ...]:
        """A fixed layout in one call (``Packer.pack_struct``'s counterpart: hot paths)."""
        return fmt.unpack_from(self._data, self._take(fmt.size))

    def unpack_fopaque(self, n: int) -> memoryview:
        pos = self._take(n + _pad_len(n))
        return memoryview(self._data)[pos : pos + n]

    def unpack_opaque(self, max_len: int = 0xFFFFFFFF) -> memoryview:
        n = self.unpack_uint()
        if n > max_len:
            raise XdrError(f"opaque of {n} bytes exceeds limit {max_len}")
        return self.unpack_fopaque(n)

    def unpack_bytes(self, max_len: int = 0xFFFFFFFF) -> bytes:
        """Variable-length opaque or string, copied into ``bytes``. Flat (no calls to the
        methods above): every file handle and name in a call comes through here."""
        data, pos = self._data, self._pos
        if pos + 4 > len(data):
            self._take(4)  # raises, with the message every short read has
        (n,) = _U32.unpack_from(data, pos)
        start = pos + 4
        if n > max_len:
            self._pos = start
            raise XdrError(f"opaque of {n} bytes exceeds limit {max_len}")
        end = start + n + (-n & 3)
        if end > len(data):
            self._pos = start
            self._take(n + (-n & 3))  # raises
        self._pos = end
        return bytes(data[start : start + n])

    def unpack_array(self, unpack_item: Callable[[], T], max_items: int) -> list[T]:
        n = self.unpack_uint()
        if n > max_items:
            raise XdrError(f"array of {n} items exceeds limit {max_items}")
        return [unpack_item() for _ in range(n)]

    def unpack_optional(self, unpack_item: Callable[[], T]) -> T | None:
        return unpack_item() if self.unpack_bool() else None

    def rest(self) -> memoryview:
        """Everything not yet consumed (e.g. procedure arguments after an RPC header)."""
        return memoryview(self._data)[self._pos :]

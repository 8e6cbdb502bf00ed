"""RPC record marking over a byte stream (RFC 5531 section 11), sans-IO.

A record is one or more fragments, each preceded by a 4-byte header: the top bit marks
the last fragment, the low 31 bits give the fragment length. ``RecordReader`` turns
received bytes into complete records and enforces a maximum record size *before*
buffering, so a peer cannot make us allocate more than the limit; ``frame`` does the
reverse for sending.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ferry.errors import RecordError

_HEADER = struct.Struct(">I")
LAST_FRAGMENT = 0x80000000
MAX_FRAGMENT = 0x7FFFFFFF
DEFAULT_MAX_RECORD = 4 * 1024 * 1024 + 64 * 1024  # a 4 MiB WRITE plus headers

Buffer = bytes | bytearray | memoryview


class RecordReader:
    """Reassembles records from stream data.

    Feed it with ``receive_data(data)``; ``b""`` signals EOF. ``next_record()`` returns the
    next complete record as ``bytes``, or ``None`` when more data is needed. After EOF,
    ``incomplete`` tells whether the peer hung up mid-record.
    """

    __slots__ = ("max_record", "_buf", "_fragments", "_size", "_eof")

    def __init__(self, max_record: int = DEFAULT_MAX_RECORD) -> None:
        self.max_record = max_record
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._size = 0
        self._eof = False

    def receive_data(self, data: Buffer) -> None:
        if not data:
            self._eof = True
        self._buf += data

    @property
    def eof(self) -> bool:
        return self._eof

    @property
    def incomplete(self) -> bool:
        """True when bytes of an unfinished record are buffered."""
        return bool(self._buf or self._fragments)

    @property
    def buffered(self) -> int:
        """Bytes held, for memory accounting."""
        return len(self._buf) + self._size

    def next_record(self) -> bytes | None:
        """Return the next complete record, or ``None``; raises RecordError if too big."""
        buf = self._buf
        while len(buf) >= 4:
            (header,) = _HEADER.unpack_from(buf, 0)
            length = header & MAX_FRAGMENT
            if self._size + length > self.max_record:
                raise RecordError(f"record of at least {self._size + length} bytes "
                                  f"exceeds limit {self.max_record}")
            if len(buf) < 4 + length:
                return None
            fragment = bytes(memoryview(buf)[4 : 4 + length])
            del buf[: 4 + length]
            if header & LAST_FRAGMENT:
                if not self._fragments:
                    return fragment
                self._fragments.append(fragment)
                record = b"".join(self._fragments)
                self._fragments.clear()
                self._size = 0
                return record
            self._fragments.append(fragment)
            self._size += length + 4  # headers count: empty fragments must not pile up free
        return None


def frame(buffers: Sequence[Buffer], max_fragment: int = MAX_FRAGMENT) -> list[Buffer]:
    """Prefix record marks to a message given as buffers; returns buffers to send as-is.

    The common case (under ``max_fragment``) is one header plus the untouched buffers.
    """
    total = sum(len(b) for b in buffers)
    if total <= max_fragment:
        return [_HEADER.pack(LAST_FRAGMENT | total), *buffers]
    data = memoryview(b"".join(buffers))
    out: list[Buffer] = []
    for start in range(0, total, max_fragment):
        chunk = data[start : start + max_fragment]
        last = LAST_FRAGMENT if start + max_fragment >= total else 0
        out += [_HEADER.pack(last | len(chunk)), chunk]
    return out


def frame_bytes(message: Buffer, max_fragment: int = MAX_FRAGMENT) -> bytes:
    """``frame`` joined into one bytes object (for tests and small messages)."""
    return b"".join(frame([message], max_fragment))

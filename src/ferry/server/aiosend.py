"""A framed reply written to an asyncio transport, a READ's data sent from its file.

Why: the asyncio adapter used to read a READ's data into memory on a call thread
(``os.pread``: a copy from the page cache) and then write it with the transport (a second
copy into the socket, made by uvloop with the GIL held). With ``sendfile`` the socket takes
the page cache's pages instead: both copies go, and the system call runs without the GIL.

How, without a second writer on the socket: asyncio transports own their socket, so the
file's bytes may go straight to it only while nothing of ours waits in the transport's
buffer. The parts before a segment are written with the transport (uvloop sends them at
once when its buffer is empty); if the buffer is then empty, ``sendfile`` sends what the
socket takes without blocking; what it does not take (a full send buffer), or all of it on
a transport that could not send at once, is read into memory and handed to the transport
after, in order. On the loop thread only, like every other use of the transport.

The loop must never wait for the disk, and ``sendfile`` reads what the page cache lacks
synchronously. So on the call thread, before a reply goes to the loop, ``settle`` reads
into memory every segment whose pages are not all cached (``FileSegment.cached``; a kernel
that cannot tell gets copies). A READ answered on the loop itself made its segment only
after the same check (``Backend.read_segment_nowait``).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Sequence

from ferry.segment import Buffer, FileSegment, Part, SegmentShrank, close_segments

__all__ = ["settle", "write_reply"]

_NO_SENDFILE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # file system cannot: copy


def settle(parts: Sequence[Part] | None) -> Sequence[Part] | None:
    """A reply fit for the loop (call it on the call thread): segments whose data is not
    all in the page cache, or whose cache cannot be asked about, are read into memory."""
    if parts is None or FileSegment not in map(type, parts):
        return parts
    return [_settled(p) if isinstance(p, FileSegment) else p for p in parts]


def _settled(segment: FileSegment) -> Part:
    return segment if segment.cached() else segment.read()


def write_reply(transport: asyncio.Transport, parts: Sequence[Part]) -> None:
    """Write a framed reply's ``parts`` in order; SegmentShrank if a file ended early
    (the record's mark promised those bytes: the connection must then be cut off)."""
    if FileSegment not in map(type, parts):
        transport.writelines(parts)  # type: ignore[arg-type]
        return
    try:
        out: list[Buffer] = []
        for part in parts:
            if not isinstance(part, FileSegment):
                out.append(part)
                continue
            transport.writelines(out)
            out = []
            sent = _send_now(transport, part) if not transport.get_write_buffer_size() else 0
            if sent < part.count:
                out.append(part.read(sent))
        transport.writelines(out)
    finally:
        close_segments(parts)


def _send_now(transport: asyncio.Transport, segment: FileSegment) -> int:
    """Bytes of ``segment`` sent with sendfile before the socket would block (0 when the
    transport has no socket to give or the file system cannot)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    out, pos, end = sock.fileno(), segment.offset, segment.offset + segment.count
    while pos < end:
        try:
            n = os.sendfile(out, segment.fd, pos, end - pos)
        except BlockingIOError:
            break
        except OSError as exc:
            if pos == segment.offset and exc.errno in _NO_SENDFILE:
                return 0
            raise
        if n == 0:
            raise SegmentShrank(end - pos)
        pos += n
    return pos - segment.offset

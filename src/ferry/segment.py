"""READ data left in its file: sent with ``sendfile`` by the TCP adapters (the blocking
ones, and the asyncio one through ``ferry.server.aiosend``), read into memory
(``materialize``) everywhere else.

Why: copying a 1 MiB READ into a Python buffer and then into the socket costs more CPU than
the rest of the call; ``sendfile`` hands the page cache's pages to the socket instead. The
sans-IO core stays free of sockets: a backend makes the segment, the reply carries it as one
of its parts, and only whoever turns the reply into bytes touches the file.

A segment may go to the socket from an event loop only while its pages are all in the
page cache (``sendfile`` reads what the cache lacks synchronously, and the loop must never
wait for the disk): ``cached`` asks the kernel (Linux ``cachestat``, 6.5+: one system call
of about 2 us; a kernel without it says "not cached", so the data is copied on a thread).

Layer: wire (beside ``xdr`` and ``rpc``), shared by the protocol, the backends that make
segments and the server that sends them; imports nothing of Ferry.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import sys
from collections.abc import Callable, Sequence

Buffer = bytes | bytearray | memoryview
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")
_PAGE = mmap.PAGESIZE
_NR_CACHESTAT = 451  # Linux 6.5+; one number on every architecture but alpha (unistd.h)


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _CacheStat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
    ]


class PageCache:
    """Asks the kernel whether the page cache holds a file range (``cachestat``)."""

    def __init__(self) -> None:
        self._syscall: Callable[..., int] | None = None
        if sys.platform == "linux":
            with contextlib.suppress(OSError, AttributeError):
                self._syscall = ctypes.CDLL(None, use_errno=True).syscall

    def holds(self, fd: int, offset: int, count: int) -> bool:
        """True if every page of the range is cached; False if not, or if the kernel
        cannot tell (then never asked again)."""
        syscall = self._syscall
        if syscall is None:
            return False
        span, stat = _Range(offset, count), _CacheStat()
        if syscall(_NR_CACHESTAT, fd, ctypes.byref(span), ctypes.byref(stat), 0) != 0:
            if ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):  # old kernel, or seccomp
                self._syscall = None
            return False
        pages = (offset + count - 1) // _PAGE - offset // _PAGE + 1
        return int(stat.nr_cache) >= pages


page_cache = PageCache()
"""The one instance (it remembers whether the kernel can be asked)."""


class SegmentShrank(OSError):
    """The file ended before a segment's last byte. The reply already promised ``count``
    bytes, so its record cannot be completed: the connection must be closed."""

    def __init__(self, missing: int) -> None:
        super().__init__(errno.EIO, f"file shrank by {missing} bytes while a READ was sent")


class FileSegment:
    """``count`` bytes of the open file ``fd`` at ``offset``, owned by this object.

    ``fd`` is a duplicate of the backend's descriptor, so the backend's descriptor cache may
    close its own (eviction) while this one is being sent. ``close`` (or garbage collection,
    should a reply be dropped on an error path) gives it back."""

    __slots__ = ("fd", "offset", "count")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd = fd
        self.offset = offset
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def cached(self) -> bool:
        """Whether the page cache holds all of it (False for an empty segment: nothing to
        send from the file)."""
        return self.count > 0 and page_cache.holds(self.fd, self.offset, self.count)

    def read(self, skip: int = 0) -> bytearray:
        """The ``count`` bytes after the first ``skip`` (those already sent), then closes;
        SegmentShrank if the file is shorter by now."""
        count = self.count - skip
        buf = bytearray(count)
        view = memoryview(buf)
        done = 0
        try:
            while done < count:
                n = os.preadv(self.fd, [view[done:]], self.offset + skip + done)
                if n == 0:
                    raise SegmentShrank(count - done)
                done += n
        finally:
            self.close()
        return buf


Part = Buffer | FileSegment
"""One piece of a reply: bytes to send, or bytes still in a file."""


def opaque_tail(segment: FileSegment) -> list[Part]:
    """A segment as the body of an XDR opaque whose length is already encoded: its bytes,
    then the padding to a multiple of four."""
    pad = _PAD[segment.count % 4]
    return [segment, pad] if pad else [segment]


def materialize(parts: Sequence[Part]) -> list[Buffer]:
    """``parts`` with every segment read into memory: for transports that cannot send from a
    file (UDP) and for replies that are kept (the duplicate request cache)."""
    return [p.read() if isinstance(p, FileSegment) else p for p in parts]


def close_segments(parts: Sequence[Part]) -> None:
    """Give back the descriptors of a reply's segments (sent or not)."""
    for p in parts:
        if isinstance(p, FileSegment):
            p.close()

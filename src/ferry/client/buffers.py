"""Buffers that READ replies land in: fixed-size, reused, on huge pages where Linux has them.

Why: read-ahead receives each rsize chunk straight into a buffer, and the FUSE mount hands
that buffer to the kernel as the reply (``/dev/fuse`` pins its pages one by one and copies
them into the page cache). A fresh ``bytearray`` per chunk costs zeroing (calloc), a buffer
on 4 KiB pages costs a page-table walk and a ``struct page`` per pin. Slots carved from one
anonymous mapping, advised ``MADV_HUGEPAGE`` and aligned to 2 MiB, avoid both: measured
through the mount (cold 256 MiB reads, one run switching between the variants), the mount
spent 14% less CPU per read and read 10% faster than with fresh buffers.

The pool is small and fixed (``count`` slots, mapped on first use); when all are out,
``take`` hands out a fresh buffer that ``give`` then lets go. A slot is only given back
once nothing can write into it or still reads from it (see ``AsyncFile``).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap

HUGE_PAGE = 2 << 20
DEFAULT_COUNT = 32  # four files reading ahead 8 MiB of 1 MiB chunks at once


class ChunkBuffers:
    """A pool of ``count`` buffers of ``size`` bytes (memoryviews, format ``B``)."""

    def __init__(self, size: int, count: int = DEFAULT_COUNT) -> None:
        self.size, self.count = size, count
        self.fresh = 0  # buffers handed out beyond the pool (it was empty)
        self._free: list[memoryview] = []
        self._slots: dict[int, memoryview] = {}  # id() -> slot, held so ids stay unique
        self._map: mmap.mmap | None = None

    def take(self) -> memoryview:
        """A free slot, or a fresh buffer when none is left."""
        if self._map is None:
            self._map_slots()
        if self._free:
            return self._free.pop()
        self.fresh += 1
        return memoryview(bytearray(self.size))

    def give(self, buf: memoryview) -> None:
        """``buf`` is no longer used: a slot goes back to the pool, anything else is let go."""
        if self._slots.get(id(buf)) is buf:
            self._free.append(buf)

    @property
    def free(self) -> int:
        return len(self._free)

    def _map_slots(self) -> None:
        length = self.size * self.count
        private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS  # not shared: shmem gets no THP
        self._map = mm = mmap.mmap(-1, length + HUGE_PAGE, flags=private)
        start = -_address(mm) % HUGE_PAGE
        advice = getattr(mmap, "MADV_HUGEPAGE", None)  # Linux; elsewhere plain pages
        if advice is not None:
            with contextlib.suppress(OSError):  # transparent huge pages unsupported
                mm.madvise(advice, start, length)
        whole = memoryview(mm)
        self._free = [whole[start + i * self.size :][: self.size] for i in range(self.count)]
        self._free.reverse()  # handed out from the start of the mapping
        self._slots = {id(v): v for v in self._free}


def _address(mm: mmap.mmap) -> int:
    anchor = ctypes.c_char.from_buffer(mm)  # only to learn the address
    try:
        return ctypes.addressof(anchor)
    finally:
        del anchor  # drop its export of the mapping at once

"""Fault in a large fresh buffer from a second thread while READ replies fill it (Linux).

Why: ``read_file`` of a large file spends about half its time on the first touch of its
new result (one page fault per 4 KiB: 65,536 for 256 MiB). ``madvise(MADV_POPULATE_WRITE)``
(Linux 5.14) maps the pages in bulk, about a third faster than faulting them one by one,
and run in a thread (ctypes releases the GIL) it happens while the event loop receives,
ahead of it. The buffer's whole 2 MiB pages are first advised ``MADV_HUGEPAGE`` (where
transparent huge pages are "madvise", as on Debian): one fault, and one zeroing in the
kernel, per 2 MiB instead of per 4 KiB (64 MiB faulted in: 8 ms instead of 15 ms).
Elsewhere, or on older kernels, this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import sys

MIN_PREFAULTED = 32 << 20  # smaller buffers fault in quickly enough
STEP = 8 << 20  # populated per call, so the receiver rarely waits on the same pages
PAGE = 4096
HUGE_PAGE = 2 << 20
MADV_HUGEPAGE = 14  # linux/mman.h
MADV_POPULATE_WRITE = 23  # linux/mman.h, 5.14

_madvise = None
if sys.platform == "linux":
    try:
        _madvise = ctypes.CDLL(None, use_errno=True).madvise
        _madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        _madvise.restype = ctypes.c_int
    except (OSError, AttributeError):
        _madvise = None


def prefault(view: memoryview) -> asyncio.Future[None] | None:
    """Start faulting in writable ``view``'s pages on a worker thread (None: nothing to
    do). Await the result before ``view`` is released; if that await is cut short, the
    thread at worst pre-faults memory that is free again: harmless."""
    if _madvise is None or view.nbytes < MIN_PREFAULTED or view.readonly:
        return None
    anchor = ctypes.c_char.from_buffer(view)  # only to learn the address
    addr = ctypes.addressof(anchor)
    del anchor  # drop its export of ``view`` at once
    start = (addr + PAGE - 1) & ~(PAGE - 1)
    end = (addr + view.nbytes) & ~(PAGE - 1)
    huge = (start + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1)
    if (stop := end & ~(HUGE_PAGE - 1)) > huge:  # before any page is touched
        _madvise(huge, stop - huge, MADV_HUGEPAGE)  # no THP here: plain pages, as before
    return asyncio.get_running_loop().run_in_executor(None, _populate, start, end)


def _populate(start: int, end: int) -> None:
    assert _madvise is not None
    for pos in range(start, end, STEP):
        if _madvise(pos, min(STEP, end - pos), MADV_POPULATE_WRITE) != 0:
            return  # unsupported (EINVAL) or no memory: the receiver faults them itself

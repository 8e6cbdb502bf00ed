"""Tuning the C allocator for a server that allocates megabyte buffers on every call.

Why: a READ's data (``os.pread``) and a large WRITE's record each get a fresh buffer of
about 1 MiB. With glibc's defaults, a single-threaded process hands such a buffer back to
the kernel when it is freed (it sits at the top of the heap, above the trim threshold),
so the next call maps and zeroes fresh pages: about 130 page faults per MiB, a third of
the CPU a blocking model spends per MiB read (measured with ``ferry bench server``;
threads' arenas were not affected, which is why the thread model read cheaper). Raising
the trim threshold keeps freed memory for reuse; a fixed mmap threshold above the largest
record keeps buffers of that size in the heap, where they are reused too.

The price is memory kept after a burst: a process may hold up to ``TRIM`` bytes of freed
heap instead of returning them. Set once, in the first process, before any fork (the
setting is inherited). glibc only (``mallopt``); elsewhere this does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP = 8 << 20  # above the largest record (4 MiB + 64 KiB by default)
TRIM = 16 << 20


def keep_freed_buffers(trim: int = TRIM) -> bool:
    """Apply the thresholds above (``trim``: the freed heap kept, for a process that frees
    more than TRIM at once); False where there is no glibc ``mallopt``."""
    with contextlib.suppress(OSError, AttributeError):
        mallopt = ctypes.CDLL(None).mallopt
        return bool(mallopt(M_MMAP_THRESHOLD, MMAP)) and bool(mallopt(M_TRIM_THRESHOLD, trim))
    return False

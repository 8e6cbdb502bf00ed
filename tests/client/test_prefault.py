"""``prefault``: large writable buffers are faulted in on a worker thread (Linux), small
or read-only ones are left alone, and the buffer's owner can release it afterwards."""

from __future__ import annotations

import asyncio
import io
import os
import sys

import pytest

from ferry.client.prefault import MIN_PREFAULTED, prefault


def resident() -> int:
    """This process's resident memory in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(sys.platform != "linux", reason="MADV_POPULATE_WRITE is Linux's")
def test_a_large_fresh_buffer_is_faulted_in_ahead() -> None:
    async def main() -> None:
        out = io.BytesIO(bytes(MIN_PREFAULTED * 2))  # calloc'd: no page touched yet
        with out.getbuffer() as view:
            before = resident()
            pending = prefault(view)
            assert pending is not None
            await pending
            grown = resident() - before  # mapped without being written by us
            view[-1] = 7
        assert out.getvalue()[-1] == 7  # released: getvalue works, the data is there
        assert grown >= MIN_PREFAULTED * 2 * 0.9, grown

    asyncio.run(main())


def test_small_or_read_only_buffers_are_left_alone() -> None:
    async def main() -> None:
        assert prefault(memoryview(bytearray(MIN_PREFAULTED - 1))) is None
        assert prefault(memoryview(bytes(MIN_PREFAULTED))) is None

    asyncio.run(main())


def _huge_pages_of(addr: int) -> int:
    """AnonHugePages (bytes) of the mapping holding ``addr`` (proc(5) smaps)."""
    inside, found = False, 0
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "AnonHugePages:":
                found += int(line.split()[1]) * 1024
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="transparent huge pages are Linux's")
def test_a_large_fresh_buffer_gets_huge_pages_where_the_kernel_offers_them() -> None:
    """With transparent huge pages "madvise" (Debian's default) or "always", the buffer's
    whole 2 MiB pages are huge pages: 32 faults for 64 MiB instead of 16,384."""
    import ctypes

    with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
        offered = "[never]" not in f.read()

    async def main() -> int:
        out = io.BytesIO(bytes(64 << 20))
        with out.getbuffer() as view:
            anchor = ctypes.c_char.from_buffer(view)
            addr = ctypes.addressof(anchor)
            del anchor
            pending = prefault(view)
            assert pending is not None
            await pending
            return _huge_pages_of(addr + (32 << 20))

    huge = asyncio.run(main())
    assert huge >= (32 << 20) if offered else huge == 0, huge

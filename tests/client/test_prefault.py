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

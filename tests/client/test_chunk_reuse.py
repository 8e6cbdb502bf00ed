"""AsyncFile takes the buffers of read-ahead chunks from a pool (``ChunkBuffers``) and gives
back those a reader consumed, never one that another read still waits for, that ``pread``
lent out as a view (until ``recycle``), or whose READ may still land there."""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
from pathlib import Path

from test_read_all import FakeNfs

from ferry.backends.base import Attr
from ferry.client.buffers import ChunkBuffers
from ferry.client.files import AsyncFile, FileOptions, OpenMode
from ferry.nfs3.const import Ftype3


def open_file(data: bytes, rsize: int = 1000, pool: ChunkBuffers | None = None) -> AsyncFile:
    nfs = FakeNfs(data, rsize=rsize)
    attr = Attr(Ftype3.REG, 0o644, 1, 0, 0, len(data), len(data), (0, 0), 1, 0, 0, 0)
    options = FileOptions(readahead=4 * rsize)
    mode = OpenMode.parse("rb")
    return AsyncFile(nfs, b"fh", "f", attr, mode, options, pool)  # type: ignore[arg-type]


def test_sequential_reads_reuse_buffers_and_stay_exact() -> None:
    data = os.urandom(50_000)

    async def main() -> None:
        pool = ChunkBuffers(1000, count=8)
        f = open_file(data, pool=pool)
        out, buf = bytearray(), memoryview(bytearray(1500))
        while n := await f.readinto(buf):
            out += buf[:n]
        assert out == data
        assert pool.fresh == 0, "50 chunks went through 8 pooled buffers"
        calls = f.nfs.calls  # type: ignore[attr-defined]
        offsets = [off for off, _ in calls if off < len(data)]  # (at eof: a probe per read)
        assert len(offsets) == len(set(offsets)) == 50  # and no chunk was read twice
        await f.close()
        await asyncio.sleep(0)
        assert pool.free == pool.count  # every buffer back

    asyncio.run(main())


def test_concurrent_reads_of_one_chunk_and_lent_views_keep_their_bytes() -> None:
    data = os.urandom(20_000)

    async def main() -> None:
        pool = ChunkBuffers(1000, count=8)
        f = open_file(data, pool=pool)
        a, b = memoryview(bytearray(1000)), memoryview(bytearray(1000))
        lent = await f.pread(2000, memoryview(bytearray(500)))  # a view of chunk 2000
        na, nb = await asyncio.gather(f.pread_into(0, a), f.pread_into(0, b))
        for off in range(1000, 20_000, 1000):  # consume the rest: buffers get reused
            await f.pread_into(off, memoryview(bytearray(1000)))
        assert (na, nb) == (1000, 1000)
        assert a == data[:1000] and b == data[:1000]
        assert lent == data[2000:2500]  # the lent buffer was not reused before recycle()
        free = pool.free
        f.recycle()
        assert pool.free == free + 1

    asyncio.run(main())


def test_a_chunk_still_to_be_read_stays_lent_through_recycle() -> None:
    data = os.urandom(5000)

    async def main() -> None:
        pool = ChunkBuffers(1000, count=8)
        f = open_file(data, pool=pool)
        first = bytes(await f.pread(0, memoryview(bytearray(400))))  # chunk 0, partly
        f.recycle()  # chunk 0 is kept for the rest of it: its buffer stays out
        for off in range(1000, 5000, 1000):
            await f.pread_into(off, memoryview(bytearray(1000)))
        rest = await f.pread(400, memoryview(bytearray(600)))
        assert first + bytes(rest) == data[:1000]
        f.recycle()
        await f.close()
        await asyncio.sleep(0)
        assert pool.free == pool.count

    asyncio.run(main())


def test_discarded_read_ahead_gives_its_buffers_back_once_cancelled() -> None:
    data = os.urandom(100_000)

    async def main() -> None:
        pool = ChunkBuffers(1000, count=16)
        f = open_file(data, pool=pool)
        await f.pread_into(0, memoryview(bytearray(1000)))  # read-ahead starts
        await f.pread_into(1000, memoryview(bytearray(1000)))
        out = pool.count - pool.free
        assert out > 0
        got = memoryview(bytearray(1000))
        await f.pread_into(90_000, got)  # far away: the read-ahead is discarded
        assert got == data[90_000:91_000]
        assert f.stats.readahead_discarded > 0
        await asyncio.sleep(0)  # the cancelled READs finish; their buffers come back
        await f.close()
        await asyncio.sleep(0)
        assert pool.free == pool.count and pool.fresh == 0

    asyncio.run(main())


def test_pool_slots_are_distinct_and_only_its_own_come_back() -> None:
    pool = ChunkBuffers(4096, count=3)
    slots = [pool.take() for _ in range(3)]
    assert pool.free == 0 and pool.fresh == 0
    for i, s in enumerate(slots):
        s[:] = bytes([i]) * 4096
    assert [bytes(s[:1]) for s in slots] == [b"\0", b"\1", b"\2"]  # no overlap
    extra = pool.take()  # the pool is empty: a fresh buffer
    assert pool.fresh == 1 and len(extra) == 4096
    pool.give(extra)
    pool.give(memoryview(bytearray(4096)))
    assert pool.free == 0  # strangers are let go
    pool.give(slots[0])
    assert pool.take() is slots[0]


def test_pool_asks_for_transparent_huge_pages() -> None:
    """The slots' mapping is private, carries MADV_HUGEPAGE (``hg`` in smaps) and starts
    on a 2 MiB boundary, so the kernel may back it with huge pages."""
    pool = ChunkBuffers(1 << 20, count=4)
    slot = pool.take()
    anchor = ctypes.c_char.from_buffer(slot)
    addr = ctypes.addressof(anchor)
    del anchor
    assert addr % (2 << 20) == 0
    smaps = Path("/proc/self/smaps").read_text()
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", smaps):
        lo, hi = (int(x, 16) for x in block.split()[0].split("-"))
        if lo <= addr < hi:
            assert block.split()[1].endswith("p"), block  # private: shared memory gets none
            flags = re.search(r"^VmFlags:(.*)$", block, re.M)
            assert flags is not None and " hg" in flags.group(1), block
            break
    else:
        raise AssertionError("the pool's mapping is not in /proc/self/smaps")

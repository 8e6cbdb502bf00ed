"""AsyncFile reuses the buffers of read-ahead chunks a reader consumed, never one that
another read still waits for or that ``pread`` lent out as a view."""

from __future__ import annotations

import asyncio
import os

from test_read_all import FakeNfs

from ferry.backends.base import Attr
from ferry.client.files import AsyncFile, FileOptions, OpenMode
from ferry.nfs3.const import Ftype3


def open_file(data: bytes, rsize: int = 1000) -> AsyncFile:
    nfs = FakeNfs(data, rsize=rsize)
    attr = Attr(Ftype3.REG, 0o644, 1, 0, 0, len(data), len(data), (0, 0), 1, 0, 0, 0)
    options = FileOptions(readahead=4 * rsize)
    return AsyncFile(nfs, b"fh", "f", attr, OpenMode.parse("rb"), options)  # type: ignore[arg-type]


def test_sequential_reads_reuse_buffers_and_stay_exact() -> None:
    data = os.urandom(50_000)

    async def main() -> None:
        f = open_file(data)
        out, buf = bytearray(), memoryview(bytearray(1500))
        while n := await f.readinto(buf):
            out += buf[:n]
        assert out == data
        assert f._spare, "consumed chunk buffers were kept for reuse"
        calls = f.nfs.calls  # type: ignore[attr-defined]
        offsets = [off for off, _ in calls if off < len(data)]  # (at eof: a probe per read)
        assert len(offsets) == len(set(offsets)) == 50  # and no chunk was read twice

    asyncio.run(main())


def test_concurrent_reads_of_one_chunk_and_lent_views_keep_their_bytes() -> None:
    data = os.urandom(20_000)

    async def main() -> None:
        f = open_file(data)
        a, b = memoryview(bytearray(1000)), memoryview(bytearray(1000))
        lent = await f.pread(2000, memoryview(bytearray(500)))  # a view of chunk 2000
        na, nb = await asyncio.gather(f.pread_into(0, a), f.pread_into(0, b))
        for off in range(1000, 20_000, 1000):  # consume the rest: buffers get reused
            await f.pread_into(off, memoryview(bytearray(1000)))
        assert (na, nb) == (1000, 1000)
        assert a == data[:1000] and b == data[:1000]
        assert lent == data[2000:2500]  # the lent buffer was never reused

    asyncio.run(main())

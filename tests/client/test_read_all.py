"""``read_all`` against a scripted server: short replies, a file that shrinks or grows.

A fake ``NfsProcedures`` serves READs from a bytes object that the test changes between
calls, so the edge cases are exact rather than timing-dependent.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from ferry.client.files import READ_ALL_INFLIGHT, read_all
from ferry.nfs3.types import ReadRes


class FakeNfs:
    """READ over ``self.data``; replies at most ``short`` bytes when set."""

    def __init__(self, data: bytes, rsize: int = 1000, short: int | None = None) -> None:
        self.data, self.rsize, self.short = data, rsize, short
        self.calls: list[tuple[int, int]] = []
        self.inflight = self.peak = 0

    async def read(self, fh: bytes, offset: int, count: int) -> ReadRes:
        self.calls.append((offset, count))
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        await asyncio.sleep(0)  # let the other READs start: the window is exercised
        self.inflight -= 1
        n = min(count, self.short or count)
        chunk = self.data[offset : offset + n]
        return ReadRes(None, len(chunk), offset + len(chunk) >= len(self.data), chunk)

    async def read_into(self, fh: bytes, offset: int, dest: memoryview) -> ReadRes:
        """Like ``NfsProcedures.read_into``: ``read`` with the data put into ``dest``."""
        res = await self.read(fh, offset, min(len(dest), self.rsize))
        n = len(res.data)
        dest[:n] = res.data
        return ReadRes(res.file_attributes, n, res.eof, dest[:n])


def read(nfs: FakeNfs, size: int) -> bytes:
    return asyncio.run(read_all(nfs, b"fh", size))  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 54_321])
def test_whole_file_in_order(size: int) -> None:
    data = os.urandom(size)
    nfs = FakeNfs(data)
    assert read(nfs, size) == data
    assert 1 < nfs.peak <= READ_ALL_INFLIGHT or size <= nfs.rsize


def test_short_replies_are_continued() -> None:
    data = os.urandom(10_000)
    nfs = FakeNfs(data, short=300)
    assert read(nfs, len(data)) == data


def test_file_that_shrank_returns_what_is_there() -> None:
    data = os.urandom(5_500)
    assert read(FakeNfs(data), 9_000) == data


def test_file_that_grew_is_read_to_eof() -> None:
    data = os.urandom(7_777)
    assert read(FakeNfs(data), 3_000) == data


class FailingNfs(FakeNfs):
    """READ fails at ``bad`` (an I/O error from the server); the others are slow to finish."""

    def __init__(self, data: bytes, bad: int) -> None:
        super().__init__(data)
        self.bad, self.finished = bad, 0

    async def read(self, fh: bytes, offset: int, count: int) -> ReadRes:
        if offset == self.bad:
            raise OSError(5, "I/O error")
        await asyncio.sleep(0.01)
        res = await super().read(fh, offset, count)
        self.finished += 1
        return res


def test_a_failed_read_raises_and_no_read_outlives_the_call() -> None:
    """The error surfaces as itself, and the READs still in flight are cancelled rather
    than left writing into the released result buffer."""
    nfs = FailingNfs(os.urandom(50_000), bad=3_000)
    errors: list[object] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: errors.append(ctx))
        with pytest.raises(OSError, match="I/O error"):
            await read_all(nfs, b"fh", 50_000)  # type: ignore[arg-type]
        finished = nfs.finished
        await asyncio.sleep(0.05)  # anything left running would finish by now
        assert nfs.finished == finished

    asyncio.run(main())
    assert errors == []


def test_the_result_is_bytes() -> None:
    assert type(read(FakeNfs(b"abc"), 3)) is bytes
    assert type(read(FakeNfs(b""), 0)) is bytes

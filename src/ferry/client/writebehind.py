"""Write-behind for one file: the WRITEs sent behind the writer, in order, kept until COMMIT.

The one place where the client's faces (``AsyncFile`` for the API and the FUSE mount, the
fsspec files, ``write_file``) send WRITEs and COMMITs. Rules this module owns:

* Order. A server may run the calls it has in any order (NFS-Ganesha and Ferry's async
  server do), so a WRITE is not sent while an earlier WRITE of an overlapping byte range
  is in flight: it waits for it, and the later bytes land last (as the kernel NFS client
  never has overlapping WRITEs in flight). The WRITEs in flight are therefore disjoint.
* Bounds. At most ``limit`` bytes in flight (``send`` waits beyond that); once
  ``commit_every`` bytes, or ``MAX_RECORDS`` WRITEs, wait for a COMMIT, ``send`` COMMITs
  first (what is kept for resending stays bounded).
* Durability (RFC 1813 section 3.3.7). An UNSTABLE WRITE's data is kept until a COMMIT
  answers the same verifier. A different verifier means the server restarted and may have
  lost it: it is written again (then committed again), in the order first written and
  less whatever a later WRITE covers, be that one lost too (it is written again after) or
  durable (the old bytes would land on top of it).
* Errors. A WRITE sent behind the caller that fails is raised by the next ``send``,
  ``drain`` or ``commit``, as OSError naming ``path``.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
from typing import TYPE_CHECKING

from ferry.errors import NfsError
from ferry.nfs3.const import Nfsstat3, StableHow

if TYPE_CHECKING:
    from .nfs import NfsProcedures

MAX_COMMIT_ROUNDS = 3
MAX_RECORDS = 1 << 16  # WRITEs remembered until a COMMIT (tiny random writes add up)
Data = bytes | memoryview


@dataclasses.dataclass(slots=True)
class WriteStats:
    """What the WRITEs of one file did (for tests and tuning)."""

    writes: int = 0  # WRITE ranges sent (a short WRITE is continued within one)
    waited: int = 0  # of those, sent only once an earlier overlapping one had completed
    max_in_flight: int = 0  # the most WRITE ranges in flight at once
    commits: int = 0
    resent: int = 0  # ranges written again after a verifier change


@dataclasses.dataclass(slots=True)
class _Written:
    """A WRITE that completed since the last COMMIT: its data while only UNSTABLE (kept for
    resending), None once stable (then only its range matters, see ``resends``)."""

    seq: int  # order sent
    offset: int
    length: int
    data: Data | None
    verf: bytes | None


async def write_range(nfs: NfsProcedures, fh: bytes, offset: int, data: Data) -> bytes | None:
    """Write ``data`` at ``offset`` (short writes continued); the write verifier if any part
    is only UNSTABLE, None if all of it is already on stable storage."""
    view = memoryview(data).cast("B")
    pos, verf = 0, None
    while pos < len(view):
        res = await nfs.write(fh, offset + pos, view[pos:])
        if res.count == 0:
            raise NfsError(Nfsstat3.IO, f"server wrote 0 bytes at offset {offset + pos}")
        if res.committed == StableHow.UNSTABLE:
            verf = res.verf if verf in (None, res.verf) else b"mixed"  # never matches
        pos += res.count
    return verf


class Spans:
    """Disjoint byte ranges, sorted: ``add`` merges, ``gaps`` tells what is not covered."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def add(self, lo: int, hi: int) -> None:
        i = bisect.bisect_left(self._ends, lo)  # first range ending at or after lo
        j = bisect.bisect_right(self._starts, hi)  # ranges from i to j touch [lo, hi)
        if i < j:
            lo, hi = min(lo, self._starts[i]), max(hi, self._ends[j - 1])
        self._starts[i:j], self._ends[i:j] = [lo], [hi]

    def gaps(self, lo: int, hi: int) -> list[tuple[int, int]]:
        out, i = [], bisect.bisect_right(self._ends, lo)
        while lo < hi and i < len(self._starts) and self._starts[i] < hi:
            if self._starts[i] > lo:
                out.append((lo, self._starts[i]))
            lo, i = self._ends[i], i + 1
        if lo < hi:
            out.append((lo, hi))
        return out


def resends(written: list[_Written], verf: bytes) -> list[tuple[int, Data]]:
    """What to write again after a COMMIT answered ``verf``: each UNSTABLE WRITE made with
    another verifier, less the bytes later WRITEs cover; pieces in the order first sent
    (they are disjoint, so may go out together)."""
    covered, out = Spans(), []
    for w in sorted(written, key=lambda w: w.seq, reverse=True):
        if w.data is not None and w.verf != verf:
            for lo, hi in reversed(covered.gaps(w.offset, w.offset + w.length)):
                out.append((lo, w.data[lo - w.offset : hi - w.offset]))
        covered.add(w.offset, w.offset + w.length)
    out.reverse()
    return out


def _quiet(task: asyncio.Task[object]) -> None:
    """Mark a background task's outcome as seen (we report errors our own way)."""
    if not task.cancelled():
        task.exception()


class WriteBehind:
    """The WRITEs of one file handle (see module doc). One sender at a time: ``send``,
    ``drain`` and ``commit`` are awaited in turn (``AsyncFile`` calls them so)."""

    def __init__(
        self,
        nfs: NfsProcedures,
        fh: bytes,
        path: str,
        limit: int,
        commit_every: int,
        stats: WriteStats | None = None,
    ) -> None:
        self.nfs, self.fh, self.path = nfs, fh, path
        self.limit, self.commit_every = limit, commit_every
        self.stats = stats or WriteStats()
        self.in_flight_bytes = 0
        self.unstable_bytes = 0
        self._seq = 0
        self._starts: list[int] = []  # of the ranges in flight (disjoint, so also sorted
        self._ends: list[int] = []  # by end)
        self._tasks: list[asyncio.Task[None]] = []  # in the same order
        self._written: list[_Written] = []
        self._error: BaseException | None = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    @property
    def written(self) -> list[_Written]:
        """The WRITEs completed since the last COMMIT (for tests)."""
        return self._written

    async def send(self, offset: int, data: Data) -> None:
        """Start one WRITE of ``data`` at ``offset`` behind the caller, once it is in order
        and within bounds (see module doc)."""
        if self.unstable_bytes >= self.commit_every or len(self._written) >= MAX_RECORDS:
            await self.commit()
        await self._dispatch(offset, data)

    async def _dispatch(self, offset: int, data: Data) -> None:
        if not len(data):
            return
        end, waited = offset + len(data), False
        for _ in range(1 << 30):  # bounded: each round waits for a WRITE to complete
            if clash := self._overlapping(offset, end):
                waited = True
                await asyncio.wait(clash)
            elif self._tasks and self.in_flight_bytes + len(data) > self.limit:
                await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
            else:
                break
        self.raise_error()
        self.stats.waited += waited
        self._seq += 1
        coro = self._write_one(self._seq, offset, data)
        task = asyncio.get_running_loop().create_task(coro)
        task.add_done_callback(_quiet)
        i = bisect.bisect_left(self._starts, offset)
        self._starts.insert(i, offset)
        self._ends.insert(i, end)
        self._tasks.insert(i, task)
        self.in_flight_bytes += len(data)
        self.stats.writes += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._tasks))

    def _overlapping(self, lo: int, hi: int) -> list[asyncio.Task[None]]:
        """The WRITEs in flight whose range overlaps [lo, hi)."""
        i = bisect.bisect_right(self._ends, lo)  # the first ending after lo
        j = bisect.bisect_left(self._starts, hi)  # the first starting at or after hi
        return self._tasks[i:j]

    async def _write_one(self, seq: int, offset: int, data: Data) -> None:
        try:
            verf = await write_range(self.nfs, self.fh, offset, data)
            if verf is not None:
                self._written.append(_Written(seq, offset, len(data), data, verf))
                self.unstable_bytes += len(data)
            elif self.unstable_bytes:  # only matters if an earlier one may be resent
                self._written.append(_Written(seq, offset, len(data), None, None))
        except Exception as exc:  # noqa: BLE001 - raised by the next send/drain/commit
            self._error = self._error or exc
        finally:
            self.in_flight_bytes -= len(data)
            i = bisect.bisect_left(self._starts, offset)
            del self._starts[i], self._ends[i], self._tasks[i]

    async def drain(self) -> None:
        """Wait until every WRITE sent has completed (not yet committed)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        self.raise_error()

    async def commit(self) -> None:
        """COMMIT until every UNSTABLE WRITE is covered by a matching verifier, writing again
        what a server restart lost (see module doc)."""
        for _ in range(MAX_COMMIT_ROUNDS):
            await self.drain()
            if not self.unstable_bytes:
                self._written = []
                return
            try:
                verf = (await self.nfs.commit(self.fh)).verf
            except NfsError as exc:
                raise exc.to_oserror(self.path) from exc
            self.stats.commits += 1
            written, self._written, self.unstable_bytes = self._written, [], 0
            if all(w.data is None or w.verf == verf for w in written):
                return
            lost = resends(written, verf)
            if not lost:  # all of it was written over later, durably
                return
            for offset, data in lost:  # the server restarted: what it had may be gone
                self.stats.resent += 1
                await self._dispatch(offset, data)
        raise OSError(5, "write verifier kept changing: server restarting?", self.path)

    def raise_error(self) -> None:
        exc, self._error = self._error, None
        if isinstance(exc, NfsError):
            raise exc.to_oserror(self.path) from exc
        if exc is not None:
            raise exc

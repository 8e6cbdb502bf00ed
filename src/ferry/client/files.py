"""Data transfer for the asyncio client: whole-file helpers and ``AsyncFile``, an open file.

Rules this module owns:

* READs and WRITEs are at most rsize/wsize; a short reply is continued, never trusted to
  mean end of file unless the server says ``eof``.
* Read-ahead: a reader that keeps reading where it stopped gets the next chunks fetched
  before it asks (pipelined READs, a window that doubles up to ``FileOptions.readahead``).
  Reads that arrive out of order within the window (the kernel's FUSE read-ahead sends
  them so) are served from it and keep it going; a read farther away than the window, a
  write or a truncate cancels and discards what was fetched. Chunks are received straight
  into buffers of a pool (``client.buffers``), given back once a copy consumed them or,
  for a chunk discarded, once its READ can no longer land there; ``pread`` hands out a
  view of the chunk itself when a request lies within one (no copy), valid until the
  caller says with ``recycle`` that it is done with such views.
* Write-behind: ``write`` returns once its data is queued (copied, but for the whole
  wsize pieces of ``bytes``, which cannot change: those go out as they are); consecutive
  writes are coalesced into wsize WRITEs, sent behind the caller by ``WriteBehind``
  (``client.writebehind``: in order, at most ``write_behind`` bytes in flight, kept until
  a COMMIT proves them durable, written again after a server restart). ``flush``/``close``
  COMMIT; so does ``write`` once ``commit_every`` bytes are waiting, which bounds the
  memory kept for resending. An error of a WRITE sent behind the caller is raised by the
  next write, flush or close.
* Reads see the writes made before them: queued bytes are sent and the WRITEs in flight
  waited for before a READ goes out. A read to end of file (``read()``) is one pipelined
  transfer straight into the result (``read_all``), not chunk by chunk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
from typing import TYPE_CHECKING

from ferry.errors import NfsError
from ferry.nfs3.const import Nfsstat3
from ferry.vocab import Attr, SetAttr

from .buffers import ChunkBuffers
from .prefault import prefault
from .writebehind import Data, WriteBehind, WriteStats

if TYPE_CHECKING:
    from .nfs import NfsProcedures

READ_ALL_INFLIGHT = 16  # READs kept in flight by read_all: enough to fill the pipe
# How far out of order reads may arrive, in read-ahead windows, and still be served from
# it: the kernel's FUSE read-ahead sends requests up to two of its windows behind the
# furthest one (measured: up to 15 MiB with an 8 MiB window).
OUT_OF_ORDER = 2


@dataclasses.dataclass(frozen=True, slots=True)
class FileOptions:
    """How far ahead an open file reads and how much it writes behind (bytes)."""

    readahead: int = 8 << 20
    write_behind: int = 16 << 20
    commit_every: int = 64 << 20


@dataclasses.dataclass(slots=True)
class FileStats(WriteStats):
    """What one open file did on the wire (for tests and tuning): its WRITEs (see
    ``WriteStats``) and its READs."""

    reads: int = 0  # READ calls
    readahead: int = 0  # chunks fetched before the reader asked for them
    readahead_discarded: int = 0  # of those, dropped by a seek, write or close


@dataclasses.dataclass(frozen=True, slots=True)
class OpenMode:
    """A parsed ``open`` mode (the letters of Python's ``open``)."""

    readable: bool
    writable: bool
    create: bool
    truncate: bool
    exclusive: bool
    append: bool
    text: bool

    @classmethod
    def parse(cls, mode: str) -> OpenMode:
        chars = set(mode)
        kinds = chars & set("rwax")
        if len(kinds) != 1 or not chars <= set("rwaxbt+") or len(chars) != len(mode):
            raise ValueError(f"invalid mode: {mode!r}")
        if {"b", "t"} <= chars:
            raise ValueError("can't have text and binary mode at once")
        (kind,) = kinds
        plus = "+" in chars
        return cls(
            readable=kind == "r" or plus,
            writable=kind != "r" or plus,
            create=kind != "r",
            truncate=kind == "w",
            exclusive=kind == "x",
            append=kind == "a",
            text="b" not in chars,
        )


# -- whole ranges ---------------------------------------------------------------------------


async def read_chunk_into(nfs: NfsProcedures, fh: bytes, offset: int, dest: memoryview) -> int:
    """Fill ``dest`` from ``offset`` (READs of at most rsize, the data received straight
    into it); returns how many bytes, fewer only at end of file."""
    n, want = 0, len(dest)
    for _ in range(want + 1):  # bounded: each round but the last gets at least one byte
        res = await nfs.read_into(fh, offset + n, dest[n:])
        n += res.count
        if res.eof or res.count == 0 or n >= want:
            break
    return n


async def _chunk_into(nfs: NfsProcedures, fh: bytes, offset: int, buf: memoryview) -> Data:
    """A read-ahead chunk: READs received straight into ``buf``; a view of what came."""
    return buf[: await read_chunk_into(nfs, fh, offset, buf)]


async def read_all(
    nfs: NfsProcedures, fh: bytes, size: int, offset: int = 0, to_eof: bool = True
) -> bytes:
    """The file from ``offset`` to its end (``size`` bytes expected; more if it grew), or
    with ``to_eof`` False at most ``size`` bytes: rsize READs, ``READ_ALL_INFLIGHT`` at a
    time, each reply's data received straight into its place in the result
    (``NfsProcedures.read_into``).

    The result is a ``bytes(size)`` (calloc'd: zero pages the kernel fills on first touch)
    inside a BytesIO, written through ``getbuffer()`` and handed out by ``getvalue()``,
    neither of which copies while the BytesIO holds the only reference: so receiving the
    replies is the one pass over fresh memory. Filling a bytearray and converting it to
    bytes takes two, which costs more than the transfer itself for a large file (measured:
    0.35 s against 0.135 s for 256 MiB)."""
    out = io.BytesIO(bytes(size))
    with out.getbuffer() as view:
        populating = prefault(view)  # large results: pages mapped ahead, in a thread
        try:
            got = await _read_window(nfs, fh, view, offset)
        finally:
            if populating is not None:
                await populating
    out.seek(got)
    if got < size:  # the file ends sooner (or shrank while we read)
        out.truncate(got)
    elif to_eof:
        out.write(await _read_tail(nfs, fh, offset + size))
    return out.getvalue()


async def _read_window(nfs: NfsProcedures, fh: bytes, view: memoryview, start: int) -> int:
    """Fill ``view`` from ``start``; the bytes up to the first short chunk (end of file)."""
    rs, size = nfs.rsize, len(view)
    offsets = iter(range(0, size, rs))
    lengths: dict[int, int] = {}

    async def worker() -> None:
        for off in offsets:  # shared iterator: each offset read once, in order
            lengths[off] = await read_chunk_into(nfs, fh, start + off, view[off : off + rs])

    try:
        async with asyncio.TaskGroup() as tg:  # a failure cancels the others: none outlives
            for _ in range(READ_ALL_INFLIGHT):  # ``view``
                tg.create_task(worker())
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    got = 0
    for off in range(0, size, rs):
        got += lengths[off]
        if lengths[off] < min(rs, size - off):
            break
    return got


async def _read_tail(nfs: NfsProcedures, fh: bytes, pos: int) -> bytes:
    """Whatever lies beyond ``pos`` (the file grew while we read), to end of file."""
    tail: list[bytes | memoryview] = []
    for _ in range(1 << 20):  # bounded
        res = await nfs.read(fh, pos, nfs.rsize)
        tail.append(res.data)
        pos += res.count
        if res.eof or res.count == 0:
            return b"".join(tail)
    raise NfsError(Nfsstat3.IO, "file keeps growing while read")


async def write_all(nfs: NfsProcedures, fh: bytes, view: memoryview, path: str = "") -> None:
    """Every wsize WRITE in flight at once, then COMMIT (``WriteBehind`` with no bound:
    ranges lost to a server restart are written and committed again)."""
    ws, size = nfs.wsize, len(view)
    writes = WriteBehind(nfs, fh, path, limit=size, commit_every=size + 1)
    for off in range(0, size, ws):
        await writes.send(off, view[off : off + ws])
    await writes.commit()


# -- an open file ---------------------------------------------------------------------------


def _quiet(task: asyncio.Task[object]) -> None:
    """Mark a background task's outcome as seen (we report errors our own way)."""
    if not task.cancelled():
        task.exception()


class AsyncFile:
    """An open regular file with a position, read-ahead and write-behind (see module doc).

    Not safe for concurrent use by several tasks at once (like a Python file object).
    """

    def __init__(
        self,
        nfs: NfsProcedures,
        fh: bytes,
        path: str,
        attr: Attr,
        mode: OpenMode,
        options: FileOptions | None = None,
        buffers: ChunkBuffers | None = None,
    ) -> None:
        self.nfs, self.fh, self.path, self.mode = nfs, fh, path, mode
        self.options = options or FileOptions()
        self._pool = buffers or ChunkBuffers(nfs.rsize, self.options.readahead // nfs.rsize + 2)
        self.stats = FileStats()
        self.size = attr.size
        self.pos = attr.size if mode.append else 0
        self.closed = False
        self._chunks: dict[int, asyncio.Task[Data]] = {}  # rsize-aligned offset -> READ
        self._bufs: dict[int, memoryview] = {}  # chunk offset -> the buffer it is read into
        self._lent: list[tuple[asyncio.Task[Data], memoryview]] = []  # chunks pread lent out
        self._waiting: dict[int, int] = {}  # chunk offset -> reads awaiting it
        self._seq_end = 0  # where a sequential reader reads next
        self._ahead = 0  # current read-ahead window (bytes)
        self._dirty = bytearray()  # written, not yet sent: coalesced into wsize WRITEs
        self._dirty_off = 0
        opts = self.options
        self._writes = WriteBehind(nfs, fh, path, opts.write_behind, opts.commit_every, self.stats)

    # -- reading ----------------------------------------------------------------------

    async def readinto(self, buf: memoryview) -> int:
        """Read at the position into ``buf``; 0 means end of file."""
        self._check_open(self.mode.readable, "reading")
        n = await self.pread_into(self.pos, buf)
        self.pos += n
        return n

    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes at the position (to end of file if ``size`` is negative)."""
        data = await self.read_at(self.pos, size)
        self.pos += len(data)
        return data

    async def read_at(self, offset: int, size: int = -1) -> bytes:
        """Up to ``size`` bytes at ``offset`` (to end of file if negative; short only at
        end of file). A read to end of file, or of a read-ahead window or more, is one
        pipelined transfer straight into the result (``read_all``; chunk by chunk through
        the read-ahead, a whole file costs a copy more and a pool buffer per chunk)."""
        self._check_open(self.mode.readable, "reading")
        if 0 <= size < self.options.readahead:
            out = io.BytesIO(bytes(size))  # filled in place, handed out without a copy
            with out.getbuffer() as view:
                n = await self.pread_into(offset, view)
            out.truncate(n)
            return out.getvalue()
        await self._settle()  # our own queued writes must be visible to READ
        self._discard_readahead()
        try:
            if to_eof := size < 0:
                size = max(0, (await self.nfs.getattr(self.fh)).size - offset)
            data = await read_all(self.nfs, self.fh, size, offset, to_eof)
        except NfsError as exc:
            raise exc.to_oserror(self.path) from exc
        self._seq_end = offset + len(data)
        return data

    async def pread_into(self, offset: int, buf: memoryview) -> int:
        """Fill ``buf`` from ``offset`` (short only at end of file), using and steering the
        read-ahead (see ``_steer``)."""
        await self._settle()  # our own queued writes must be visible to READ
        hit = self._steer(offset)
        rs, want = self.nfs.rsize, len(buf)
        last = min(offset + want, max(self.size, offset + 1))  # beyond eof: one READ tells
        for off in range(offset // rs * rs, last, rs):
            self._start_chunk(off)
        n = 0
        try:
            n = await self._copy_chunks(offset, buf)
        except NfsError as exc:
            raise exc.to_oserror(self.path) from exc
        finally:
            self._advance(offset, n, hit)
        return n

    async def pread(self, offset: int, buf: memoryview) -> Data:
        """The bytes ``pread_into(offset, buf)`` would give: a view of the chunk they were
        read into when they lie within one (``buf`` left alone, no copy), else a view of
        ``buf`` filled with them. The view stays valid until ``recycle()``."""
        rs, size = self.nfs.rsize, len(buf)
        base = offset // rs * rs
        if size == 0 or offset + size > base + rs:
            return buf[: await self.pread_into(offset, buf)]
        await self._settle()
        hit = self._steer(offset)
        piece = memoryview(b"")
        try:
            task = self._start_chunk(base)
            data = await self._chunk(base)
            if offset + size >= base + rs or len(data) < rs:
                self._chunks.pop(base, None)  # consumed (or eof): no longer needed
            if (lent := self._bufs.pop(base, None)) is not None:
                self._lent.append((task, lent))  # kept until recycle()
            piece = memoryview(data)[offset - base :][:size]
        except NfsError as exc:
            raise exc.to_oserror(self.path) from exc
        finally:
            self._advance(offset, len(piece), hit)
        return piece

    def _steer(self, offset: int) -> bool:
        """Before a read at ``offset``: whether it continues the reading (where the last one
        ended, or in a chunk fetched or on its way). A read elsewhere within the window of
        where reading is (out of order) keeps the read-ahead; farther, it is discarded."""
        rs = self.nfs.rsize
        if offset == self._seq_end or offset // rs * rs in self._chunks:
            return True
        if not self._chunks or abs(offset - self._seq_end) >= self._slack():
            self._discard_readahead()
            self._seq_end = offset  # reading starts afresh here
        return False

    def _advance(self, offset: int, n: int, hit: bool) -> None:
        """After a read of ``n`` bytes at ``offset``: move where reading is and, for a read
        that continued it, keep the next chunks coming; drop chunks left behind the window."""
        end = offset + n
        self._seq_end = max(self._seq_end, end)
        behind = self._seq_end - self._slack() - self.nfs.rsize
        for off in [off for off in self._chunks if off < behind]:
            self._drop(off)
            self.stats.readahead_discarded += 1
        if hit:
            self._prefetch(self._seq_end)

    def _slack(self) -> int:
        """How far from where reading is a read still counts as near (out of order)."""
        return OUT_OF_ORDER * self.options.readahead

    async def _copy_chunks(self, offset: int, buf: memoryview) -> int:
        rs, n = self.nfs.rsize, 0
        while n < len(buf):
            base = (offset + n) // rs * rs
            data = await self._chunk(base)
            consumed = base + rs <= offset + len(buf) or len(data) < rs
            if consumed:
                self._chunks.pop(base, None)  # consumed (or eof): no longer needed
            piece = memoryview(data)[offset + n - base :][: len(buf) - n]
            buf[n : n + len(piece)] = piece
            if consumed:
                self._reuse(base)
            n += len(piece)
            if len(data) < rs:
                break  # end of file
        return n

    def _start_chunk(self, off: int) -> asyncio.Task[Data]:
        task = self._chunks.get(off)
        if task is None:
            buf = self._bufs[off] = self._pool.take()
            coro = _chunk_into(self.nfs, self.fh, off, buf)
            task = self._chunks[off] = asyncio.get_running_loop().create_task(coro)
            task.add_done_callback(_quiet)
            self.stats.reads += 1
        return task

    async def _chunk(self, off: int) -> Data:
        """The chunk at ``off`` (started if need be), counting who waits for it."""
        task = self._start_chunk(off)
        self._waiting[off] = self._waiting.get(off, 0) + 1
        try:
            return await task
        finally:
            if (left := self._waiting.pop(off) - 1) > 0:
                self._waiting[off] = left

    def _reuse(self, off: int) -> None:
        """Give the buffer of the chunk at ``off``, just consumed by a copy, back for the
        next READ; not while another read still waits for that chunk: it would copy from
        it later."""
        if (buf := self._unbind(off)) is not None:
            self._pool.give(buf)

    def _unbind(self, off: int) -> memoryview | None:
        """Take the buffer off the chunk at ``off``: it, if the pool may have it back (no
        read still waits to copy from it), else None (let go)."""
        buf = self._bufs.pop(off, None)
        return None if buf is None or self._waiting.get(off) else buf

    def recycle(self) -> None:
        """The caller is done with every view ``pread`` lent out so far: their buffers go
        back to the pool, but for chunks still kept for reads to come."""
        live = {id(task) for task in self._chunks.values()}
        kept = [(task, buf) for task, buf in self._lent if id(task) in live]
        for task, buf in self._lent:
            if id(task) not in live:
                self._pool.give(buf)
        self._lent = kept

    def _drop(self, off: int) -> None:
        """Cancel the chunk at ``off``. Its buffer goes back to the pool once the READ can
        no longer land there (the task is done: a cancelled call is never written to),
        unless a read still waits for it (it would copy from it)."""
        task = self._chunks.pop(off)
        task.cancel()
        if (buf := self._unbind(off)) is not None:
            give = self._pool.give
            task.add_done_callback(lambda _: give(buf))

    def _prefetch(self, end: int) -> None:
        """Keep the next chunks (the window doubles per sequential read) in flight."""
        rs, opts = self.nfs.rsize, self.options
        self._ahead = min(max(2 * self._ahead, 2 * rs), opts.readahead)
        limit = min(end + self._ahead, -(-self.size // rs) * rs)
        for off in range(end // rs * rs, limit, rs):
            if off not in self._chunks:
                self._start_chunk(off)
                self.stats.readahead += 1

    def _discard_readahead(self) -> None:
        self.stats.readahead_discarded += len(self._chunks)
        for off in list(self._chunks):
            self._drop(off)
        self._ahead = 0

    # -- writing ----------------------------------------------------------------------

    async def write(self, data: Data) -> int:
        """Queue ``data`` at the position (the end, in append mode); returns its length."""
        self._check_open(self.mode.writable, "writing")
        if self.mode.append:
            self.pos = self.size
        n = await self.pwrite(self.pos, data)
        self.pos += n
        return n

    async def pwrite(self, offset: int, data: Data) -> int:
        self._writes.raise_error()
        if self._chunks:
            self._discard_readahead()
        view = memoryview(data).cast("B")
        if self._dirty and offset != self._dirty_off + len(self._dirty):
            await self._push(everything=True)
        n = len(view)
        self.size = max(self.size, offset + n)
        if not self._dirty:
            self._dirty_off = offset
        fill = -len(self._dirty) % self.nfs.wsize  # to make the queue's last piece whole
        if isinstance(data, bytes) and n - fill >= self.nfs.wsize:
            # immutable: its whole wsize pieces go out uncopied, after the queue
            if fill:
                self._dirty += view[:fill]
                await self._push(everything=False)  # leaves the queue empty
            view = await self._send_whole(offset + fill, view[fill:])
        self._dirty += view
        await self._push(everything=False)
        return n

    async def _send_whole(self, offset: int, view: memoryview) -> memoryview:
        """Send the wsize pieces at the start of ``view`` as they are (kept until COMMIT
        without a copy: ``view`` must be of immutable bytes); returns the rest."""
        ws = self.nfs.wsize
        whole = len(view) // ws * ws
        self._dirty_off = offset + whole
        await self._send_pieces(offset, view[:whole])
        return view[whole:]

    async def _push(self, everything: bool) -> None:
        """Send the queued bytes as wsize WRITEs (the partial tail too if ``everything``)."""
        ws, base = self.nfs.wsize, self._dirty_off
        full = len(self._dirty) if everything else len(self._dirty) // ws * ws
        if not full:
            return
        # Taken before any await (a commit on the way must not see them), without a copy:
        # the queue's buffer becomes the pieces' (never written again: it is no longer the
        # queue), a new queue gets the partial tail.
        view = memoryview(self._dirty)
        self._dirty = bytearray(view[full:])
        self._dirty_off += full
        await self._send_pieces(base, view[:full])

    async def _send_pieces(self, offset: int, view: memoryview) -> None:
        """Send ``view``, written at ``offset``, as WRITEs of at most wsize."""
        ws = self.nfs.wsize
        for pos in range(0, len(view), ws):
            await self._writes.send(offset + pos, view[pos : pos + ws])

    async def _settle(self, push: bool = True) -> None:
        """Send everything queued and wait until the server has it (not yet committed)."""
        if self._dirty and push:
            await self._push(everything=True)
        await self._writes.drain()

    # -- position, size, lifetime -------------------------------------------------------

    def tell(self) -> int:
        return self.pos

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open(True, "seeking")
        if whence == os.SEEK_END:
            await self._settle()
            offset += (await self.nfs.getattr(self.fh)).size
        elif whence == os.SEEK_CUR:
            offset += self.pos
        elif whence != os.SEEK_SET:
            raise ValueError(f"invalid whence ({whence})")
        if offset < 0:
            raise OSError(22, "negative seek position", self.path)
        self.pos = offset
        return offset

    async def truncate(self, size: int | None = None) -> int:
        """Set the size (SETATTR) after committing what we wrote, so that a later resend
        can never grow the file back."""
        self._check_open(self.mode.writable, "truncating")
        size = self.pos if size is None else size
        await self.flush()
        self._discard_readahead()
        try:
            await self.nfs.setattr(self.fh, SetAttr(size=size))
        except NfsError as exc:
            raise exc.to_oserror(self.path) from exc
        self.size = size
        return size

    async def flush(self) -> None:
        """Make everything written durable: send, wait, COMMIT (resending on a restart)."""
        if not self.closed:
            await self._settle()
            await self._writes.commit()

    async def close(self) -> None:
        if self.closed:
            return
        try:
            await self.flush()
        finally:
            self._discard_readahead()
            self.closed = True

    def _check_open(self, allowed: bool, what: str) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if not allowed:
            raise OSError(9, f"file not open for {what}", self.path)  # EBADF

    async def __aenter__(self) -> AsyncFile:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

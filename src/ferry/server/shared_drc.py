"""The duplicate request cache shared by the worker processes of one server run.

Why: with prefork, process-per-connection or ``async --workers N``, a client that resends
a call on a new TCP connection may reach another process than the one that ran it; a
cache per process would run the call again (a retried REMOVE would answer NOENT).

How: a table of fixed-size slots in an anonymous shared memory mapping (``MAP_SHARED``),
made by the first process before it forks, so every worker, restarted ones included,
maps the same pages; nothing to clean up, and a new server run starts empty (as it gets
a new write verifier). One lock guards the table: ``flock`` on ``drc.lock`` in the state
directory, opened by each process after the fork (an inherited descriptor would share
the parent's lock), plus a thread lock for the threads of one process. The kernel drops
an ``flock`` of a process that dies, so a crashed worker never wedges the others.

Layout: set-associative, like a CPU cache. A BLAKE2b digest of the call's key picks a
set of ``WAYS`` slots. A set begins with the digests of its slots side by side (all zero:
empty), so a lookup is one ``mmap.find``, then the slots' stamps (when each call began or
its reply was kept) and use ticks side by side, so choosing a victim is two ``unpack``
calls and a ``min``: a new entry takes an empty slot, else an expired one, else the set's
least recently used (if that one is still running: an orphaned one, a finished one, the
least recently used running one, in that order). So at least the last ``WAYS`` calls of
each set are kept, and about ``max_entries`` in all. A slot is a 16-byte header (state,
pid, length) and up to ``REPLY_MAX`` bytes of reply: the
replies of the non-idempotent procedures are below 400 bytes (a RENAME's two
``wcc_data`` are the largest); a larger one is not kept, and logged. Memory is fixed:
about ``SLOT`` bytes times ``min(max_entries, max_bytes // SLOT)``.

IN_PROGRESS across processes: a slot records the pid running the call. A copy arriving
meanwhile, at any worker, is dropped (the original's reply will answer the client's next
retransmission). If that pid has died (a worker crashed mid-call) or ``max_age`` has
passed, the slot counts as free and the copy runs. A recycled pid can keep a dead
worker's slot busy until ``max_age``: the copy is then dropped rather than run twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import mmap
import os
import struct
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

from ferry.rpc.drc import (
    DEFAULT_AGE,
    DEFAULT_BYTES,
    DEFAULT_ENTRIES,
    Key,
    Lookup,
    ReplyCache,
    Stats,
)

log = logging.getLogger("ferry.server")

SLOT = 1024
WAYS = 8
DIGEST = 16
_HEAD = struct.Struct("<BxxxIQ")  # state, pid, reply length
_F64 = struct.Struct("<d")
_U64 = struct.Struct("<Q")
REPLY_MAX = SLOT - _HEAD.size
_TABLE = struct.Struct("<6Q")  # tick, then the Stats counters in field order
_SETS_AT = 64
_NONE = bytes(DIGEST)
EMPTY, RUNNING, DONE = 0, 1, 2
HITS, MISSES, IN_PROGRESS, EVICTIONS, EXPIRED = range(5)  # Stats fields, in order

_live: weakref.WeakSet[SharedReplyCache] = weakref.WeakSet()


class SharedReplyCache(ReplyCache):
    """``ReplyCache`` in memory shared by the processes forked after it was made."""

    def __init__(
        self,
        procedures: Collection[tuple[int, int, int]],
        lock_path: Path,
        max_entries: int = DEFAULT_ENTRIES,
        max_bytes: int = DEFAULT_BYTES,
        max_age: float = DEFAULT_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(procedures)
        slots = max(1, min(max_entries, max_bytes // SLOT))
        self.ways = min(WAYS, slots)
        self.sets = slots // self.ways
        self._stamps_at = self.ways * DIGEST  # offsets in a set: digests, stamps, ticks, slots
        self._used_at = self._stamps_at + 8 * self.ways
        self._slots_at = self._used_at + 8 * self.ways
        self._set_bytes = self._slots_at + self.ways * SLOT
        self._stamps = struct.Struct(f"<{self.ways}d")
        self._useds = struct.Struct(f"<{self.ways}Q")
        self._digests: dict[Key, tuple[bytes, int]] = {}  # begun NEW here: (digest, base)
        self.max_age = max_age
        self.clock = clock  # CLOCK_MONOTONIC is system-wide: one clock for every process
        self.lock_path = lock_path
        size = _SETS_AT + self.sets * self._set_bytes
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        self._open_lock()
        _live.add(self)

    def _open_lock(self) -> None:
        """This process's own lock: a descriptor of its own and a thread lock."""
        self._fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._threads = threading.Lock()
        self._pid = os.getpid()

    def _after_fork(self) -> None:
        os.close(self._fd)  # the parent's open file description, and lock, stay its own
        self._open_lock()

    def close(self) -> None:
        """Release this process's descriptor (the memory goes with the last process)."""
        _live.discard(self)
        with contextlib.suppress(OSError):
            os.close(self._fd)

    def __len__(self) -> int:
        self._lock()
        try:
            index = b"".join(self._map[b : b + self.ways * DIGEST] for b in self._bases())
        finally:
            self._unlock()
        return sum(index[i : i + DIGEST] != _NONE for i in range(0, len(index), DIGEST))

    @property
    def stats(self) -> Stats:
        self._lock()
        try:
            return Stats(*_TABLE.unpack_from(self._map, 0)[1:])
        finally:
            self._unlock()

    def begin(self, key: Key) -> tuple[Lookup, bytes | None]:
        digest = _digest(key)
        base = self._base(digest)
        digests = self._digests
        if len(digests) >= 4096:  # calls neither finished nor abandoned: bounded anyway
            digests.clear()
        now = self.clock()
        self._lock()
        try:
            way = self._find(base, digest)
            if way < 0:
                way = self._victim(base, now)
            else:
                found = self._lookup(base, way, now)
                if found is not None:
                    return found
            self._count(MISSES)
            self._write(base, way, digest, RUNNING, now, b"")
            digests[key] = digest, base  # for finish or abandon: BLAKE2b of repr once
            return Lookup.NEW, None
        finally:
            self._unlock()

    def finish(self, key: Key, reply: bytes) -> None:
        digest, base = self._begun(key)
        self._lock()
        try:
            way = self._find(base, digest)
            if way < 0:
                way = self._victim(base, self.clock())
            if len(reply) > REPLY_MAX:
                log.warning("drc: a %d-byte reply is too large to keep", len(reply))
                self._write(base, way, _NONE, EMPTY, 0.0, b"")
            else:
                self._write(base, way, digest, DONE, self.clock(), reply)
        finally:
            self._unlock()

    def abandon(self, key: Key) -> None:
        digest, base = self._begun(key)
        self._lock()
        try:
            way = self._find(base, digest)
            if way >= 0:
                self._write(base, way, _NONE, EMPTY, 0.0, b"")
        finally:
            self._unlock()

    # -- the table, always under the lock --------------------------------------------------

    def _lock(self) -> None:
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise

    def _unlock(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _begun(self, key: Key) -> tuple[bytes, int]:
        """(digest, base) of a call: kept by ``begin`` if it began here, else computed."""
        found = self._digests.pop(key, None)
        if found is not None:
            return found
        digest = _digest(key)
        return digest, self._base(digest)

    def _base(self, digest: bytes) -> int:
        return _SETS_AT + int.from_bytes(digest[:8], "little") % self.sets * self._set_bytes

    def _bases(self) -> Iterator[int]:
        return (_SETS_AT + s * self._set_bytes for s in range(self.sets))

    def _slot(self, base: int, way: int) -> int:
        return base + self._slots_at + way * SLOT

    def _find(self, base: int, digest: bytes) -> int:
        """The way holding ``digest`` in the set at ``base``, or -1."""
        end = base + self._stamps_at
        at = self._map.find(digest, base, end)
        while at >= 0 and (at - base) % DIGEST:  # straddling two digests: keep looking
            at = self._map.find(digest, at + 1, end)
        return (at - base) // DIGEST if at >= 0 else -1

    def _lookup(self, base: int, way: int, now: float) -> tuple[Lookup, bytes | None] | None:
        """A call found in the table: replay it, drop the copy, or None to run it anew."""
        if now - _F64.unpack_from(self._map, base + self._stamps_at + 8 * way)[0] > self.max_age:
            self._count(EXPIRED)
            return None
        at = self._slot(base, way)
        state, pid, length = _HEAD.unpack_from(self._map, at)
        if state == RUNNING and not _alive(pid):
            return None  # its worker died mid-call: the copy runs
        _U64.pack_into(self._map, base + self._used_at + 8 * way, self._tick())
        if state == RUNNING:
            self._count(IN_PROGRESS)
            return Lookup.IN_PROGRESS, None
        self._count(HITS)
        return Lookup.HIT, self._map[at + _HEAD.size : at + _HEAD.size + length]

    def _victim(self, base: int, now: float) -> int:
        """The way a new entry takes: empty, then expired, then the least recently used
        (should that one still be running: ``_ranked``)."""
        way = self._find(base, _NONE)
        if way >= 0:
            return way
        stamps = self._stamps.unpack_from(self._map, base + self._stamps_at)
        oldest = min(stamps)
        if now - oldest > self.max_age:
            self._count(EXPIRED)
            return stamps.index(oldest)
        used = self._useds.unpack_from(self._map, base + self._used_at)
        way = used.index(min(used))
        if _HEAD.unpack_from(self._map, self._slot(base, way))[0] == RUNNING:
            return self._ranked(base, used)
        self._count(EVICTIONS)
        return way

    def _ranked(self, base: int, used: tuple[int, ...]) -> int:
        """Every way ranked: orphaned (its worker died), then finished, then running, each
        least recently used first; the rare case of a set whose LRU call still runs."""
        best, best_rank = 0, (3, 0)
        for way in range(self.ways):
            state, pid, _ = _HEAD.unpack_from(self._map, self._slot(base, way))
            orphan = state == RUNNING and not _alive(pid)
            rank = (0 if orphan else 1 if state == DONE else 2, used[way])
            if rank < best_rank:
                best, best_rank = way, rank
        self._count(EXPIRED if best_rank[0] == 0 else EVICTIONS)
        return best

    def _write(
        self, base: int, way: int, digest: bytes, state: int, stamp: float, reply: bytes
    ) -> None:
        at = self._slot(base, way)
        self._map[at + _HEAD.size : at + _HEAD.size + len(reply)] = reply
        _HEAD.pack_into(self._map, at, state, self._pid, len(reply))
        _F64.pack_into(self._map, base + self._stamps_at + 8 * way, stamp)
        _U64.pack_into(self._map, base + self._used_at + 8 * way, self._tick())
        self._map[base + way * DIGEST : base + (way + 1) * DIGEST] = digest

    def _tick(self) -> int:
        tick: int = _U64.unpack_from(self._map, 0)[0] + 1
        _U64.pack_into(self._map, 0, tick)
        return tick

    def _count(self, field: int) -> None:
        at = 8 + 8 * field
        _U64.pack_into(self._map, at, _U64.unpack_from(self._map, at)[0] + 1)


def _digest(key: Key) -> bytes:
    digest = hashlib.blake2b(repr(key).encode(), digest_size=DIGEST).digest()
    return digest if digest != _NONE else b"\1" + digest[1:]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reset_after_fork() -> None:
    for cache in list(_live):
        cache._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)

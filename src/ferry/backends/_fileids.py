"""The persistent file id -> location map behind ``LocalBackend``.

NFS clients name files by handle; ``LocalBackend`` puts the inode number in the handle and
must find the file again from that number alone, after renames and server restarts. This
map remembers, for each inode seen, the directory inode holding it and its name there.
Storing parent pointers rather than whole paths makes a directory rename one row update
instead of a rewrite of every descendant's path.

Rows live in a bounded in-memory cache in front of SQLite (WAL, synchronous=NORMAL);
writes are batched. A directory's listing is saved as one row (its inode numbers and names
as two blobs), not a row per entry: a first listing of 50,000 files costs one row instead
of 50,000 (70-150 ms of SQLite on the reply path). Single rows, which come from LOOKUP,
CREATE, RENAME and the like, are asked first; the listings are read into memory at the
first lookup the rows cannot answer. Losing the newest rows in a crash is harmless: the
backend verifies every location it gets from here and rescans the export when one is wrong
or missing (a listing older than a file's move behind the server's back is such a hint).

The map also keeps generation counters for file systems that record no birth time: the
backend bumps an inode's counter when it removes the inode's last link, so a file that
later reuses the number gets another generation (and old handles go STALE). Unlike
locations these matter for correctness, so a bump is written at once.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from itertools import repeat
from operator import itemgetter
from typing import cast

log = logging.getLogger(__name__)

_MAX_DEPTH = 2048  # deeper than PATH_MAX allows: a longer chain is a loop
_U64 = 1 << 64
_I64 = 1 << 63

Location = tuple[int, bytes]  # (parent inode, name)


def _s64(ino: int) -> int:
    """SQLite integers are signed: store inode numbers >= 2**63 as negatives."""
    return ino - _U64 if ino >= _I64 else ino


def _u64(value: int) -> int:
    return value + _U64 if value < 0 else value


_first, _second = itemgetter(0), itemgetter(1)


def _rows(
    pending: dict[int, Location | None],
) -> tuple[Iterable[tuple[int, int, bytes]], list[tuple[int]]]:
    """The ``fileids`` rows to write and the inodes to delete. A first listing of a large
    directory makes tens of thousands of rows, all new, all inodes below 2**63: those go to
    SQLite through C iterators (a fifth less CPU than a Python loop over them)."""
    values = list(pending.values())
    if values and None not in values:
        locs = cast("list[Location]", values)
        if max(pending) < _I64 and max(map(_first, locs)) < _I64:
            return zip(pending.keys(), map(_first, locs), map(_second, locs), strict=True), []
    items = pending.items()
    puts = [(_s64(i), _s64(loc[0]), loc[1]) for i, loc in items if loc is not None]
    return puts, [(_s64(i),) for i, loc in items if loc is None]


class FileIdMap:
    """Inode -> (parent inode, name), thread-safe, persisted in ``db_path``.

    ``root`` and ``identity`` describe the export; rows written for another export (a
    different identity) are discarded on open.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        root: int,
        identity: str,
        cache_size: int = 1 << 20,
        flush_every: int = 4096,
        flush_seconds: float = 1.0,
    ) -> None:
        self._lock = threading.RLock()
        self._root = root
        self._cache: dict[int, Location] = {}
        self._pending: dict[int, Location | None] = {}  # None: delete
        self._gens: dict[int, int] = {}  # cache of the generations table, 0 for no row
        self._pending_gens: dict[int, int] = {}
        self._pending_listings: dict[int, list[tuple[bytes, int]]] = {}
        self._listed: dict[int, Location] | None = None
        """The saved listings' locations, read at the first lookup the rows cannot answer
        (None: not read since start-up or the last spill)."""
        self._cache_size = cache_size
        self._flush_every = flush_every
        self._flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        try:
            self._db = self._connect(db_path, identity)
        except sqlite3.DatabaseError as exc:  # corrupt: it is only a cache, start afresh
            log.warning("file id database %s unusable (%s); starting afresh", db_path, exc)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{os.fspath(db_path)}{suffix}", f"{os.fspath(db_path)}{suffix}.bad")
            self._db = self._connect(db_path, identity)

    @staticmethod
    def _connect(db_path: str | os.PathLike[str], identity: str) -> sqlite3.Connection:
        db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        try:
            FileIdMap._prepare(db, identity)
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _prepare(db: sqlite3.Connection, identity: str) -> None:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        db.execute(
            "CREATE TABLE IF NOT EXISTS fileids"
            " (ino INTEGER PRIMARY KEY, parent INTEGER NOT NULL, name BLOB NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS generations (ino INTEGER PRIMARY KEY, gen INTEGER NOT NULL)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS listings"
            " (parent INTEGER PRIMARY KEY, inos BLOB NOT NULL, names BLOB NOT NULL)"
        )
        row = db.execute("SELECT value FROM meta WHERE key='export'").fetchone()
        if row is None or row[0] != identity:
            with db:
                db.execute("BEGIN")
                db.execute("DELETE FROM fileids")
                db.execute("DELETE FROM generations")
                db.execute("DELETE FROM listings")
                db.execute("INSERT OR REPLACE INTO meta VALUES ('export', ?)", (identity,))

    # -- reading ----------------------------------------------------------------------

    def get(self, ino: int) -> Location | None:
        """Where ``ino`` was last seen, or None."""
        with self._lock:
            loc = self._cache.get(ino)
            if loc is not None:
                return loc
            if ino in self._pending:
                return self._pending[ino]
            row = self._db.execute(
                "SELECT parent, name FROM fileids WHERE ino=?", (_s64(ino),)
            ).fetchone()
            if row is not None:
                loc = (_u64(row[0]), bytes(row[1]))
            else:
                found = self._listings().get(ino)
                if found is None:
                    return None
                loc = found
            self._remember(ino, loc)
            return loc

    def _listings(self) -> dict[int, Location]:
        """The saved listings as inode -> location (read once; the caller holds the lock)."""
        if self._listed is None:
            self._listed = {}
            for parent, inos, names in self._db.execute("SELECT parent, inos, names FROM listings"):
                ids = array.array("Q")
                ids.frombytes(inos)
                parts = bytes(names).split(b"\0") if names else []
                if len(parts) == len(ids):  # else damaged: it is only a hint
                    self._listed.update(zip(ids, zip(repeat(_u64(parent)), parts), strict=True))
        return self._listed

    def path(self, ino: int) -> bytes | None:
        """The path of ``ino`` relative to the root (``b""`` for it), or None if unknown.

        Unverified: the caller checks that the path still leads to ``ino``.
        """
        if ino == self._root:  # LOOKUP in the mount point: no lock, no walk
            return b""
        parts: list[bytes] = []
        cur = ino
        with self._lock:
            while cur != self._root:
                loc = self.get(cur)
                if loc is None or len(parts) >= _MAX_DEPTH:
                    return None
                cur, name = loc
                parts.append(name)
        parts.reverse()
        return b"/".join(parts)

    def generation(self, ino: int) -> int:
        """The removal counter of ``ino``: 0 until the backend first removed it (hot when the
        file system has no birth times, hence the lock-free cache hit)."""
        gen = self._gens.get(ino)
        if gen is not None:
            return gen
        with self._lock:
            if ino in self._pending_gens:
                return self._pending_gens[ino]
            row = self._db.execute(
                "SELECT gen FROM generations WHERE ino=?", (_s64(ino),)
            ).fetchone()
            gen = 0 if row is None else int(row[0])
            if len(self._gens) >= self._cache_size:
                self._gens.clear()
            self._gens[ino] = gen
            return gen

    # -- writing ----------------------------------------------------------------------

    def bump(self, ino: int) -> None:
        """Give the next file to reuse inode ``ino`` a new generation (saved at once)."""
        with self._lock:
            gen = (self.generation(ino) + 1) & 0xFFFFFFFF
            self._gens[ino] = self._pending_gens[ino] = gen
            self.flush()

    def record(self, ino: int, parent: int, name: bytes) -> None:
        """Remember that ``ino`` is called ``name`` in directory ``parent``. Nothing to
        do, the lock not taken, when the map says so already (every LOOKUP of a known
        name: one dictionary read is atomic, and a rename racing with it decides the
        row either way, as it would under the lock)."""
        loc = (parent, name)
        if ino == self._root or self._cache.get(ino) == loc:
            return
        with self._lock:
            if self._cache.get(ino) != loc:
                self._remember(ino, loc)
                self._pending[ino] = loc
                self._maybe_flush()

    def record_many(self, parent: int, entries: list[tuple[bytes, int]]) -> None:
        """``record`` for many (name, ino) of one directory, holding the lock once; in C
        loops (dict, zip, set difference of item views): a directory's first listing
        brings tens of thousands, all new."""
        locs = dict(
            zip(map(_second, entries), zip(repeat(parent), map(_first, entries)), strict=True)
        )
        locs.pop(self._root, None)
        with self._lock:
            cache = self._cache
            changed = locs if cache.keys().isdisjoint(locs) else dict(locs.items() - cache.items())
            cache.update(changed)
            self._pending.update(changed)
            if len(cache) > self._cache_size:
                self._spill()
            self._maybe_flush()

    def record_listing(self, parent: int, entries: list[tuple[bytes, int]]) -> None:
        """``record_many`` for a whole listing of directory ``parent``, saved as one row."""
        entries = [(name, ino) for name, ino in entries if ino != self._root]
        locs = dict(
            zip(map(_second, entries), zip(repeat(parent), map(_first, entries)), strict=True)
        )
        with self._lock:
            cache, pending = self._cache, self._pending
            cache.update(locs)
            for ino in pending.keys() & locs.keys():  # an older single row must not win
                pending[ino] = locs[ino]
            self._pending_listings[parent] = entries
            if len(cache) > self._cache_size:
                self._spill()
            self._maybe_flush()

    def forget(self, ino: int, only_if: Location | None = None) -> None:
        """Drop the row for ``ino`` (if ``only_if`` is given, only if it says that)."""
        with self._lock:
            if only_if is not None and self.get(ino) != only_if:
                return
            self._cache.pop(ino, None)
            self._pending[ino] = None
            self._maybe_flush()

    def _remember(self, ino: int, loc: Location) -> None:
        self._cache[ino] = loc
        if len(self._cache) > self._cache_size:
            self._spill()

    def _spill(self) -> None:
        """Bound memory: everything is on disk after a flush, so the cache can go."""
        self.flush()
        self._cache.clear()
        self._listed = None

    def _maybe_flush(self) -> None:
        if (
            len(self._pending) >= self._flush_every
            or time.monotonic() - self._last_flush >= self._flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Write pending changes in one transaction."""
        with self._lock:
            self._last_flush = time.monotonic()
            if not self._pending and not self._pending_gens and not self._pending_listings:
                return
            puts, drops = _rows(self._pending)
            gens = [(_s64(i), gen) for i, gen in self._pending_gens.items()]
            listings = [
                (_s64(parent), array.array("Q", map(_second, e)).tobytes(),
                 b"\0".join(map(_first, e)))
                for parent, e in self._pending_listings.items()
            ]  # fmt: skip
            try:
                with self._db:
                    self._db.execute("BEGIN")
                    self._db.executemany("INSERT OR REPLACE INTO fileids VALUES (?, ?, ?)", puts)
                    self._db.executemany("DELETE FROM fileids WHERE ino=?", drops)
                    self._db.executemany("INSERT OR REPLACE INTO generations VALUES (?, ?)", gens)
                    self._db.executemany(
                        "INSERT OR REPLACE INTO listings VALUES (?, ?, ?)", listings
                    )
            except sqlite3.Error as exc:
                # Never fail a file operation over this cache: a rescan can rebuild it.
                # Generations stay pending (they are few): the next flush retries them.
                log.warning("cannot save %d file ids: %s", len(self._pending), exc)
                self._pending_listings.clear()
                if len(self._pending) > 16 * self._flush_every:
                    self._pending.clear()
                return
            self._pending.clear()
            self._pending_gens.clear()
            self._pending_listings.clear()

    def close(self) -> None:
        with self._lock:
            try:
                self.flush()
            finally:
                self._db.close()

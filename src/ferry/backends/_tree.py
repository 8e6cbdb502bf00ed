"""The exported directory tree as ``LocalBackend`` sees it: a root descriptor, and the way
from an inode number back to a path beneath it.

Paths handed out by ``FileIdMap`` are hints: each is checked (device and inode) before use,
and a wrong or missing one triggers a bounded breadth-first rescan of the export that also
refreshes the map. An inode that cannot be found is STALE, and stays so for a few seconds
without another scan, so a client replaying a dead handle cannot make the server rescan
in a loop.

Attributes come from an ``AttrReader`` (statx on Linux), which also yields the generation
that tells apart successive files on one inode number: the birth time where the file
system records one, otherwise the map's removal counter (see ``counts_removals``).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections import deque

from ferry.backends._beneath import open_dir_beneath
from ferry.backends._fileids import FileIdMap
from ferry.backends._statx import attr_reader
from ferry.backends.base import Attr, FileId
from ferry.errors import ConfigError, NfsError
from ferry.vocab import Nfsstat3

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV})
"""errnos meaning "this path no longer leads anywhere"."""
_MISS_TTL = 5.0  # seconds an unfindable file id answers STALE without another scan
_MAX_MISSES = 10_000


def stale(fid: FileId) -> NfsError:
    return NfsError(Nfsstat3.STALE, f"file id {fid} no longer names a file")


class ExportTree:
    """The directory ``root_path``, file id state persisted under ``state_dir``."""

    def __init__(
        self, root_path: str | os.PathLike[str] | bytes, state_dir: str | os.PathLike[str],
        scan_limit: int, use_btime: bool = True,
    ) -> None:  # fmt: skip
        path = os.path.realpath(os.fsencode(root_path))
        try:
            self.root_fd = os.open(path, DIR_FLAGS)
        except OSError as exc:
            raise ConfigError(f"root_path {root_path!s}: {exc.strerror}") from exc
        try:
            st = os.fstat(self.root_fd)
            self.dev, self.root_ino = st.st_dev, st.st_ino
            os.makedirs(state_dir, exist_ok=True)
            identity = f"{os.fsdecode(path)}:{self.root_ino}"
            db = os.path.join(state_dir, "fileids.sqlite3")
            self.map = FileIdMap(db, self.root_ino, identity)
            self.reader = attr_reader(self.map.generation, use_btime)
            # No birth times here: removing an inode's last link must bump its counter.
            # Decided once, from the root: the export is one file system (other devices
            # are refused), and a bump per removal would cost a SQLite commit each.
            self.counts_removals = not self.reader.has_btime(self.root_fd)
        except BaseException:
            os.close(self.root_fd)
            raise
        self._scan_limit = scan_limit
        self._scan_lock = threading.Lock()
        self._misses: dict[FileId, float] = {}

    def close(self) -> None:
        try:
            self.map.close()
        finally:
            os.close(self.root_fd)

    def lstat(self, rel: bytes) -> os.stat_result:
        if not rel:
            return os.fstat(self.root_fd)
        parent, sep, name = rel.rpartition(b"/")
        if not sep:
            return os.stat(rel, dir_fd=self.root_fd, follow_symlinks=False)
        fd = open_dir_beneath(self.root_fd, parent)  # never through a swapped-in symlink
        try:
            return os.stat(name, dir_fd=fd, follow_symlinks=False)
        finally:
            os.close(fd)

    def is_(self, st: os.stat_result, fid: FileId) -> bool:
        return st.st_ino == fid and st.st_dev == self.dev

    def locate(self, fid: FileId) -> tuple[bytes, os.stat_result]:
        """The verified path (relative to the root) and ``lstat`` of ``fid``."""
        return self.verified(self.map.path(fid), fid) or self.rescan(fid)

    def attr(self, fid: FileId) -> Attr:
        """Verified attributes of ``fid`` (hot: one statx when the map knows the path)."""
        if fid == self.root_ino:  # the mount point, asked about most: its own descriptor
            a = self.reader.of_fd(self.root_fd)
            if a.fileid == fid and a.fsid == self.dev:
                return a
        found = self._attr_at(self.map.path(fid), fid)
        if found is None:
            found = self._attr_at(self.rescan(fid)[0], fid)
        if found is None:
            raise stale(fid)  # moved again since the rescan found it
        return found

    def _attr_at(self, rel: bytes | None, fid: FileId) -> Attr | None:
        """Attributes of ``rel`` if it still leads to ``fid``."""
        if rel is None:
            return None
        try:
            a = self._read_attr(rel)
        except OSError as exc:
            if exc.errno in GONE:
                return None
            raise
        return a if a.fileid == fid and a.fsid == self.dev else None

    def _read_attr(self, rel: bytes) -> Attr:
        if not rel:
            return self.reader.of_fd(self.root_fd)
        parent, sep, name = rel.rpartition(b"/")
        if not sep:
            return self.reader.at(self.root_fd, rel)
        fd = open_dir_beneath(self.root_fd, parent)
        try:
            return self.reader.at(fd, name)
        finally:
            os.close(fd)

    def verified(self, rel: bytes | None, fid: FileId) -> tuple[bytes, os.stat_result] | None:
        """``(rel, lstat)`` if ``rel`` still leads to ``fid``."""
        if rel is None:
            return None
        try:
            st = self.lstat(rel)
        except OSError as exc:
            if exc.errno in GONE:
                return None
            raise
        return (rel, st) if self.is_(st, fid) else None

    def rescan(self, fid: FileId) -> tuple[bytes, os.stat_result]:
        """Search the export for ``fid`` (it moved behind our back, or state was lost)."""
        if self._misses.get(fid, 0.0) > time.monotonic():
            raise stale(fid)
        with self._scan_lock:
            # Another thread may have found it while this one waited.
            found = self.verified(self.map.path(fid), fid)
            if found is None:
                found = self.verified(self.scan(fid), fid)
        if found is not None:
            return found
        if len(self._misses) > _MAX_MISSES:
            self._misses.clear()
        self._misses[fid] = time.monotonic() + _MISS_TTL
        raise stale(fid)

    def scan(self, fid: FileId) -> bytes | None:
        """Breadth-first search for ``fid``, recording every name seen on the way.

        The directory it was last seen in goes first: most moves are renames in place.
        """
        queue: deque[tuple[FileId, bytes]] = deque([(self.root_ino, b"")])
        last = self.map.get(fid)
        if last is not None:
            hint = self.verified(self.map.path(last[0]), last[0])
            if hint is not None and hint[0]:
                queue.appendleft((last[0], hint[0]))
        visited: set[FileId] = set()  # bind mounts can make the tree a graph
        seen = 0
        while queue and seen < self._scan_limit:
            dino, drel = queue.popleft()
            if dino in visited:
                continue
            visited.add(dino)
            try:
                entries = self.list_dir(dino, drel)
            except OSError:
                continue  # vanished or unreadable: skip that subtree
            self.map.record_many(dino, [(name, ino) for name, ino, _ in entries])
            seen += len(entries)
            for name, ino, is_dir in entries:
                rel = drel + b"/" + name if drel else name
                if ino == fid:
                    return rel
                if is_dir:
                    queue.append((ino, rel))
        return None

    def list_dir(self, dino: FileId, drel: bytes) -> list[tuple[bytes, FileId, bool]]:
        fd = self.walk_open(drel, DIR_FLAGS)
        try:
            if not self.is_(os.fstat(fd), dino):
                return []  # changed under us, or another file system mounted here
            with os.scandir(fd) as it:
                fse = os.fsencode
                return [(fse(e.name), e.inode(), e.is_dir(follow_symlinks=False)) for e in it]
        finally:
            os.close(fd)

    def walk_open(self, rel: bytes, flags: int) -> int:
        """Open ``rel`` beneath the root one component at a time, following no symlink."""
        if not rel:
            return os.open(b".", flags, dir_fd=self.root_fd)
        *dirs, last = rel.split(b"/")
        cur = self.root_fd
        try:
            for comp in dirs:
                nxt = os.open(comp, DIR_FLAGS, dir_fd=cur)
                if cur != self.root_fd:
                    os.close(cur)
                cur = nxt
            return os.open(last, flags | os.O_NOFOLLOW, dir_fd=cur)
        finally:
            if cur != self.root_fd:
                os.close(cur)

    def open_fid(self, fid: FileId, flags: int, want_dir: bool) -> int:
        """Open ``fid`` itself (NOTDIR/ISDIR/INVAL if it has the wrong type)."""
        rel, st = self.locate(fid)
        if want_dir and not stat.S_ISDIR(st.st_mode):
            raise NfsError(Nfsstat3.NOTDIR)
        if not want_dir and not stat.S_ISREG(st.st_mode):
            is_dir = stat.S_ISDIR(st.st_mode)
            raise NfsError(Nfsstat3.ISDIR if is_dir else Nfsstat3.INVAL, "not a regular file")
        try:
            fd = self.walk_open(rel, flags)
        except OSError as exc:
            if exc.errno in GONE:
                raise stale(fid) from exc
            raise
        if not self.is_(os.fstat(fd), fid):
            os.close(fd)
            raise stale(fid)
        return fd

"""An in-memory backend: the reference implementation of the contract, for tests and demos.

Everything lives in one dict of inodes guarded by one lock, so every operation is atomic
with respect to the others. Nothing survives a restart.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator

from ferry.backends.base import (
    SERVER_TIME,
    Attr,
    Backend,
    DirEntry,
    FileId,
    FsStat,
    SetAttr,
    not_found,
)
from ferry.errors import NfsError
from ferry.vocab import Ftype3, Nfsstat3, StableHow

BLOCK = 4096
_SPECIAL = (Ftype3.FIFO, Ftype3.SOCK, Ftype3.CHR, Ftype3.BLK)


def _rounded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


@dataclasses.dataclass(slots=True, eq=False)
class _Inode:
    type: Ftype3
    mode: int
    uid: int
    gid: int
    nlink: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    data: bytearray = dataclasses.field(default_factory=bytearray)  # REG
    entries: dict[bytes, FileId] = dataclasses.field(default_factory=dict)  # DIR
    parent: FileId = 0  # DIR: the directory holding it (root: itself)
    target: bytes = b""  # LNK
    rdev: tuple[int, int] = (0, 0)  # CHR, BLK

    def touch(self, now: int) -> None:
        """Record a content change (data or entries): mtime and ctime."""
        self.ctime_ns = self.mtime_ns = now


class MemoryBackend(Backend):
    """A POSIX-like tree in RAM with a fixed capacity (``capacity`` bytes, ``max_files``)."""

    prompt_metadata = True
    nowait_reads = True  # its data is in memory: ``read`` never waits
    prompt_writes = True  # and ``write`` only copies into it

    def __init__(self, capacity: int = 1 << 30, max_files: int = 1 << 20) -> None:
        self._lock = threading.RLock()
        self._nodes: dict[FileId, _Inode] = {}
        self._next = 1
        self._capacity = capacity
        self._max_files = max_files
        self._used = 0
        # File ids restart at 1 with every instance while handle keys persist: a random
        # generation per instance keeps a previous run's handles STALE, not aliased.
        self._generation = int.from_bytes(os.urandom(4), "big")
        self._root = self._new(Ftype3.DIR, SetAttr(), 0o755, time.time_ns())
        self._nodes[self._root].parent = self._root

    # -- internals ----------------------------------------------------------------------

    def _new(self, ftype: Ftype3, attrs: SetAttr, default_mode: int, now: int) -> FileId:
        if len(self._nodes) >= self._max_files:
            raise NfsError(Nfsstat3.NOSPC, "too many files")
        mode = default_mode if attrs.mode is None else attrs.mode & 0o7777
        node = _Inode(ftype, mode, attrs.uid or 0, attrs.gid or 0, 1, now, now, now)
        if ftype is Ftype3.DIR:
            node.nlink = 2
        fid = self._next
        self._next += 1
        self._nodes[fid] = node
        return fid

    def _node(self, fid: FileId) -> _Inode:
        node = self._nodes.get(fid)
        if node is None:
            raise NfsError(Nfsstat3.STALE, f"no file with id {fid}")
        return node

    def _dir(self, fid: FileId) -> _Inode:
        node = self._node(fid)
        if node.type is not Ftype3.DIR:
            raise NfsError(Nfsstat3.NOTDIR)
        return node

    def _child(self, d: _Inode, name: bytes) -> FileId:
        fid = d.entries.get(name)
        if fid is None:
            raise not_found(name)
        return fid

    def _vacant(self, d: _Inode, name: bytes) -> None:
        if name in (b".", b"..") or name in d.entries:
            raise NfsError(Nfsstat3.EXIST, f"file exists: {name!r}")

    def _resize(self, node: _Inode, size: int) -> None:
        """Grow (zero-filled) or shrink file data, charging the capacity."""
        grow = _rounded(size) - _rounded(len(node.data))
        if grow > 0 and self._used + grow > self._capacity:
            raise NfsError(Nfsstat3.NOSPC)
        self._used += grow
        if size < len(node.data):
            del node.data[size:]
        else:
            node.data.extend(bytes(size - len(node.data)))

    def _unlink(self, fid: FileId, node: _Inode, now: int) -> None:
        """Drop one name of ``node``; free it when it was the last."""
        node.nlink -= 1
        node.ctime_ns = now
        if node.nlink <= 0 or node.type is Ftype3.DIR:
            self._used -= _rounded(len(node.data))
            del self._nodes[fid]

    def _add(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, mode: int
    ) -> tuple[FileId, _Inode]:
        """Create a new inode and link it as ``name`` in ``dir_fid``."""
        now = time.time_ns()
        d = self._dir(dir_fid)
        self._vacant(d, name)
        fid = self._new(ftype, attrs, mode, now)
        d.entries[name] = fid
        d.touch(now)
        node = self._nodes[fid]
        if ftype is Ftype3.DIR:
            node.parent = dir_fid
            d.nlink += 1
        return fid, node

    def _attr(self, fid: FileId, n: _Inode) -> Attr:
        if n.type is Ftype3.REG:
            size = len(n.data)
        elif n.type is Ftype3.LNK:
            size = len(n.target)
        elif n.type is Ftype3.DIR:
            size = BLOCK
        else:
            size = 0
        return Attr(
            n.type, n.mode, n.nlink, n.uid, n.gid, size, _rounded(size), n.rdev, fid,
            n.atime_ns, n.mtime_ns, n.ctime_ns, generation=self._generation,
        )  # fmt: skip

    # -- resolving ----------------------------------------------------------------------

    def root(self) -> FileId:
        return self._root

    def getattr(self, fid: FileId) -> Attr:
        with self._lock:
            return self._attr(fid, self._node(fid))

    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        with self._lock:
            d = self._dir(dir_fid)
            if name == b"..":
                return d.parent
            if name == b".":
                return dir_fid
            return self._child(d, name)

    def readdir(self, dir_fid: FileId) -> list[DirEntry]:
        with self._lock:
            return [DirEntry(name, fid) for name, fid in self._dir(dir_fid).entries.items()]

    def readdir_plus(self, dir_fid: FileId) -> Iterator[DirEntry]:
        with self._lock:
            nodes = self._nodes
            entries = self._dir(dir_fid).entries.items()
            out = [DirEntry(name, fid, self._attr(fid, nodes[fid])) for name, fid in entries]
        return iter(out)

    def readlink(self, fid: FileId) -> bytes:
        with self._lock:
            node = self._node(fid)
            if node.type is not Ftype3.LNK:
                raise NfsError(Nfsstat3.INVAL, "not a symbolic link")
            return node.target

    # -- data ----------------------------------------------------------------------------

    def _regular(self, fid: FileId) -> _Inode:
        node = self._node(fid)
        if node.type is Ftype3.DIR:
            raise NfsError(Nfsstat3.ISDIR)
        if node.type is not Ftype3.REG:
            raise NfsError(Nfsstat3.INVAL, "not a regular file")
        return node

    def read_nowait(self, fid: FileId, offset: int, count: int) -> tuple[bytes, bool]:
        return self.read(fid, offset, count)

    def read(self, fid: FileId, offset: int, count: int) -> tuple[bytes, bool]:
        with self._lock:
            node = self._regular(fid)
            data = bytes(node.data[offset : offset + count])
            node.atime_ns = time.time_ns()
            return data, offset + len(data) >= len(node.data)

    def write(self, fid: FileId, offset: int, data: memoryview, stable: StableHow) -> StableHow:
        with self._lock:
            node = self._regular(fid)
            end = offset + len(data)
            if end > len(node.data):
                self._resize(node, end)
            node.data[offset:end] = data
            node.touch(time.time_ns())
        return StableHow.FILE_SYNC  # RAM is as stable as this backend gets

    def commit(self, fid: FileId, offset: int, count: int) -> None:
        with self._lock:
            self._node(fid)

    # -- namespace -----------------------------------------------------------------------

    def create(self, dir_fid: FileId, name: bytes, attrs: SetAttr, exclusive: bool) -> FileId:
        with self._lock:
            existing = self._dir(dir_fid).entries.get(name)
            if existing is not None:
                node = self._nodes[existing]
                if exclusive or node.type is not Ftype3.REG:
                    raise NfsError(Nfsstat3.EXIST, f"file exists: {name!r}")
                if attrs.size == 0 and node.data:
                    self._resize(node, 0)
                    node.touch(time.time_ns())
                return existing
            fid, node = self._add(dir_fid, name, Ftype3.REG, attrs, 0o644)
            if attrs.size:
                self._resize(node, attrs.size)
            return fid

    def mkdir(self, dir_fid: FileId, name: bytes, attrs: SetAttr) -> FileId:
        with self._lock:
            return self._add(dir_fid, name, Ftype3.DIR, attrs, 0o755)[0]

    def symlink(self, dir_fid: FileId, name: bytes, target: bytes, attrs: SetAttr) -> FileId:
        with self._lock:
            fid, node = self._add(dir_fid, name, Ftype3.LNK, attrs, 0o777)
            node.target = bytes(target)
            return fid

    def mknod(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, rdev: tuple[int, int]
    ) -> FileId:
        if ftype not in _SPECIAL:
            raise NfsError(Nfsstat3.BADTYPE, f"mknod cannot make {ftype.name}")
        with self._lock:
            fid, node = self._add(dir_fid, name, ftype, attrs, 0o644)
            if ftype in (Ftype3.CHR, Ftype3.BLK):
                node.rdev = rdev
            return fid

    def remove(self, dir_fid: FileId, name: bytes) -> None:
        with self._lock:
            d = self._dir(dir_fid)
            if name in (b".", b".."):
                raise NfsError(Nfsstat3.INVAL, "cannot remove . or ..")
            fid = self._child(d, name)
            node = self._nodes[fid]
            if node.type is Ftype3.DIR:
                raise NfsError(Nfsstat3.ISDIR)
            now = time.time_ns()
            del d.entries[name]
            d.touch(now)
            self._unlink(fid, node, now)

    def rmdir(self, dir_fid: FileId, name: bytes) -> None:
        with self._lock:
            d = self._dir(dir_fid)
            if name in (b".", b".."):
                raise NfsError(Nfsstat3.INVAL, "cannot remove . or ..")
            fid = self._child(d, name)
            node = self._nodes[fid]
            if node.type is not Ftype3.DIR:
                raise NfsError(Nfsstat3.NOTDIR)
            if node.entries:
                raise NfsError(Nfsstat3.NOTEMPTY)
            now = time.time_ns()
            del d.entries[name]
            d.nlink -= 1
            d.touch(now)
            self._unlink(fid, node, now)

    def rename(self, from_dir: FileId, from_name: bytes, to_dir: FileId, to_name: bytes) -> None:
        with self._lock:
            src_d, dst_d = self._dir(from_dir), self._dir(to_dir)
            if b"." in (from_name, to_name) or b".." in (from_name, to_name):
                raise NfsError(Nfsstat3.INVAL, "cannot rename . or ..")
            fid = self._child(src_d, from_name)
            node = self._nodes[fid]
            victim = dst_d.entries.get(to_name)
            if victim == fid:
                return  # same file (or another link to it): POSIX says do nothing
            if node.type is Ftype3.DIR:
                self._check_dir_move(fid, to_dir)
            now = time.time_ns()
            if victim is not None:
                self._replace(node, victim, dst_d, now)
            del src_d.entries[from_name]
            dst_d.entries[to_name] = fid
            if node.type is Ftype3.DIR and from_dir != to_dir:
                node.parent = to_dir
                src_d.nlink -= 1
                dst_d.nlink += 1
            node.ctime_ns = now
            src_d.touch(now)
            dst_d.touch(now)

    def _check_dir_move(self, fid: FileId, to_dir: FileId) -> None:
        """INVAL if ``to_dir`` is ``fid`` or lies inside it (the move would orphan a loop)."""
        cur = to_dir
        while True:
            if cur == fid:
                raise NfsError(Nfsstat3.INVAL, "cannot move a directory into itself")
            parent = self._nodes[cur].parent
            if parent == cur:
                return
            cur = parent

    def _replace(self, node: _Inode, victim: FileId, dst_d: _Inode, now: int) -> None:
        """Check that ``node`` may replace ``victim``, then unlink the victim."""
        vnode = self._nodes[victim]
        if node.type is Ftype3.DIR:
            if vnode.type is not Ftype3.DIR:
                raise NfsError(Nfsstat3.NOTDIR)
            if vnode.entries:
                raise NfsError(Nfsstat3.NOTEMPTY)
            dst_d.nlink -= 1
        elif vnode.type is Ftype3.DIR:
            raise NfsError(Nfsstat3.ISDIR)
        self._unlink(victim, vnode, now)

    def link(self, fid: FileId, dir_fid: FileId, name: bytes) -> None:
        with self._lock:
            node = self._node(fid)
            d = self._dir(dir_fid)
            if node.type is Ftype3.DIR:
                raise NfsError(Nfsstat3.PERM, "cannot hard-link a directory")
            self._vacant(d, name)
            now = time.time_ns()
            d.entries[name] = fid
            d.touch(now)
            node.nlink += 1
            node.ctime_ns = now

    def setattr(self, fid: FileId, attrs: SetAttr) -> None:
        with self._lock:
            node = self._node(fid)
            now = time.time_ns()
            if attrs.size is not None:
                self._regular(fid)
                self._resize(node, attrs.size)
                node.mtime_ns = now
            if attrs.mode is not None:
                node.mode = attrs.mode & 0o7777
            if attrs.uid is not None:
                node.uid = attrs.uid
            if attrs.gid is not None:
                node.gid = attrs.gid
            if attrs.atime_ns is not None:
                node.atime_ns = now if attrs.atime_ns == SERVER_TIME else attrs.atime_ns
            if attrs.mtime_ns is not None:
                node.mtime_ns = now if attrs.mtime_ns == SERVER_TIME else attrs.mtime_ns
            node.ctime_ns = now

    # -- file system -------------------------------------------------------------------

    def fsstat(self, fid: FileId) -> FsStat:
        with self._lock:
            self._node(fid)
            free = max(0, self._capacity - self._used)
            files = max(0, self._max_files - len(self._nodes))
            return FsStat(self._capacity, free, free, self._max_files, files, files)

"""Serve a directory of the local POSIX file system.

File ids are inode numbers. ``FileIdMap`` remembers where each inode was last seen so a
handle still works after a rename or a restart; every location it returns is checked
against the inode, and a wrong or missing one triggers a bounded breadth-first rescan.

Confinement: nothing is ever opened through a symbolic link. Files and directories are
opened by walking from a descriptor of the export root one component at a time with
``O_NOFOLLOW``, and namespace changes are made relative to such a directory descriptor,
so a symlink swapped into a parent path cannot redirect a change outside the export.
Attribute reads (``getattr``, ``lookup``) open the parent directory in one ``openat2``
call that refuses symlinks and other devices on the way (``_beneath``), then ``statx`` the
name, and only accept a result whose device and inode are the expected ones.

Inode numbers are reused as soon as a file is gone, so attributes carry a generation (the
file's birth time, or a counter bumped when this server removes an inode's last link, see
``_statx``) that the NFS service puts in handles: an old handle then goes STALE instead of
naming the new file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeGuard

from ferry.backends._beneath import open_dir_beneath
from ferry.backends._fdcache import FdCache, Lease
from ferry.backends._tree import DIR_FLAGS, GONE, ExportTree, stale
from ferry.backends.base import (
    SERVER_TIME,
    Attr,
    AttrRow,
    Backend,
    DirEntry,
    FileId,
    FsStat,
    SetAttr,
)
from ferry.errors import NfsError, WouldBlock
from ferry.segment import FileSegment, page_cache
from ferry.vocab import MKNOD_TYPES, S_IFMT_OF, Ftype3, Nfsstat3, StableHow

_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DOTS = (b".", b"..")
SENDFILE_MIN = 32 * 1024
"""READs shorter than this are copied rather than left in the file (``read_segment``)."""
_WOULD_WAIT = (errno.EAGAIN, errno.EOPNOTSUPP)
"""``preadv(RWF_NOWAIT)`` errors that mean "not without waiting" (``read_nowait``)."""


def _pread_nowait(fd: int, count: int, offset: int) -> memoryview:
    """``count`` bytes (all there: the caller cut it at the end of file) from the page
    cache with ``preadv(RWF_NOWAIT)``; ``WouldBlock`` when any page is not cached (EAGAIN,
    or a short read: the rest is not, or the file shrank) or the file system cannot read
    without waiting (EOPNOTSUPP)."""
    buf = bytearray(count)
    try:
        n = os.preadv(fd, [buf], offset, os.RWF_NOWAIT) if count else 0
    except OSError as exc:
        if exc.errno in _WOULD_WAIT:
            raise WouldBlock from exc
        raise
    if n < count:
        raise WouldBlock
    return memoryview(buf)


def _check_name(name: bytes, dots: Nfsstat3 = Nfsstat3.INVAL) -> None:
    """Refuse names that are not a single component (defence in depth: the service checks)."""
    if not name or b"/" in name or b"\0" in name:
        raise NfsError(Nfsstat3.INVAL, f"bad file name {name!r}")
    if name in _DOTS:
        raise NfsError(dots, f"{name!r} is not allowed here")


def _owner(attrs: SetAttr) -> tuple[int, int] | None:
    if attrs.uid is None and attrs.gid is None:
        return None
    return (-1 if attrs.uid is None else attrs.uid, -1 if attrs.gid is None else attrs.gid)


class LocalBackend(Backend):
    """The directory ``root_path``; file id state is kept in ``state_dir``.

    ``use_btime=False`` ignores birth times, so generations come from the removal counter
    alone (for file systems whose birth times cannot be trusted, and for tests).
    ``sync_metadata=False`` skips the fsync of directories after namespace changes (like
    knfsd's ``async`` export option): faster, but a crash may undo acknowledged changes.

    Several server processes may serve one directory (``multiprocess_safe``): data goes
    straight to the kernel's page cache, where a ``commit`` (fsync) in any process makes
    it stable; the file id map is SQLite in WAL mode, opened by each process.
    """

    multiprocess_safe = True
    nowait_reads = hasattr(os, "RWF_NOWAIT")  # Linux 4.14+: preadv answers from the cache
    prompt_metadata = True  # statx and openat, from the kernel's caches once warm
    prompt_writes = True  # pwrite copies into the page cache; writeback comes later

    def __init__(
        self,
        root_path: str | os.PathLike[str] | bytes,
        state_dir: str | os.PathLike[str],
        *,
        fd_cache_size: int = 64,
        scan_limit: int = 1_000_000,
        use_btime: bool = True,
        sync_metadata: bool = True,
    ) -> None:
        self._tree = ExportTree(root_path, state_dir, scan_limit, use_btime)
        self._sync_metadata = sync_metadata
        self.name_max = min(255, os.fstatvfs(self._tree.root_fd).f_namemax)
        self._fds = FdCache(fd_cache_size)
        self._is_root = os.geteuid() == 0
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fds.clear()
        self._tree.close()

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------

    def _commit(self, *fds: int) -> None:
        """Make a namespace change durable before it is acknowledged, as RFC 1813 asks of
        CREATE, MKDIR, REMOVE, RENAME... and knfsd does for ``sync`` exports (the default):
        fsync the directories (and new files) involved."""
        if self._sync_metadata:
            for fd in dict.fromkeys(fds):
                os.fsync(fd)

    @contextlib.contextmanager
    def _opendir(self, fid: FileId) -> Iterator[int]:
        fd = self._tree.open_fid(fid, DIR_FLAGS, want_dir=True)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _entry(self, fid: FileId) -> Iterator[tuple[int, bytes, os.stat_result]]:
        """A descriptor of the directory holding ``fid``, its name there and its lstat.

        For the root the descriptor is the root itself and the name is empty.
        """
        rel, st = self._tree.locate(fid)
        if not rel:
            yield self._tree.root_fd, b"", st
            return
        parent, _, name = rel.rpartition(b"/")
        try:
            pfd = self._tree.walk_open(parent, DIR_FLAGS)
        except OSError as exc:
            if exc.errno in GONE:
                raise stale(fid) from exc
            raise
        try:
            try:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise stale(fid) from exc
            if not self._tree.is_(st, fid):
                raise stale(fid)
            yield pfd, name, st
        finally:
            os.close(pfd)

    def _dropped(self, st: os.stat_result, dir_fid: FileId, name: bytes) -> None:
        """Bookkeeping after the name ``name`` of the file ``st`` went away."""
        if st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode):
            self._tree.map.forget(st.st_ino)
            self._fds.invalidate(st.st_ino)
            if self._tree.counts_removals:
                self._tree.map.bump(st.st_ino)
        else:
            self._tree.map.forget(st.st_ino, only_if=(dir_fid, name))

    # -- resolving ----------------------------------------------------------------------

    def root(self) -> FileId:
        return self._tree.root_ino

    def getattr(self, fid: FileId) -> Attr:
        if fid == self._tree.root_ino:  # a directory: never in the descriptor cache
            return self._tree.attr(fid)
        lease = self._fds.acquire(fid, writable=False)
        if lease is not None:
            try:
                attr = self._tree.reader.of_fd(lease.fd)
            finally:
                self._fds.release(lease)
            if attr.nlink > 0:
                return attr
            self._fds.invalidate(fid)
        return self._tree.attr(fid)

    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        rel, st = self._tree.locate(dir_fid)
        if not stat.S_ISDIR(st.st_mode):
            raise NfsError(Nfsstat3.NOTDIR)
        if name == b".":
            return dir_fid
        if name == b"..":
            return self._tree.lstat(rel.rpartition(b"/")[0]).st_ino if rel else dir_fid
        _check_name(name)
        st = self._tree.lstat(rel + b"/" + name if rel else name)
        if st.st_dev != self._tree.dev:
            raise NfsError(Nfsstat3.ACCES, f"{name!r} is on another file system")
        self._tree.map.record(st.st_ino, dir_fid, name)
        return st.st_ino

    def lookup_attr(self, dir_fid: FileId, name: bytes) -> Attr:
        """One ``statx`` of the name in the directory (``lookup`` + ``getattr`` make three
        system calls, and more below the root): the directory is reached from its path
        in the map and verified (device and inode) as ``getattr`` verifies files; anything
        unusual (a dot name, an unknown or moved directory) takes the general way."""
        tree = self._tree
        rel = None if name in _DOTS else tree.map.path(dir_fid)
        if rel is None:
            return self.getattr(self.lookup(dir_fid, name))
        _check_name(name)
        if not rel:  # the root itself: the map has the empty path for it alone
            attr = tree.reader.at(tree.root_fd, name)
        else:
            try:
                fd = open_dir_beneath(tree.root_fd, rel)
            except OSError as exc:
                if exc.errno in GONE:
                    return self.getattr(self.lookup(dir_fid, name))
                raise
            try:
                if not tree.is_(os.fstat(fd), dir_fid):
                    return self.getattr(self.lookup(dir_fid, name))
                attr = tree.reader.at(fd, name)
            finally:
                os.close(fd)
        if attr.fsid != tree.dev:
            raise NfsError(Nfsstat3.ACCES, f"{name!r} is on another file system")
        tree.map.record(attr.fileid, dir_fid, name)
        return attr

    def readdir(self, dir_fid: FileId) -> list[DirEntry]:
        with self._opendir(dir_fid) as fd, os.scandir(fd) as it:
            enc = sys.getfilesystemencoding()  # os.fsencode, inlined: 50,000 names a listing
            pairs = [(e.name.encode(enc, "surrogateescape"), e.inode()) for e in it]
        self._tree.map.record_listing(dir_fid, pairs)
        return [DirEntry(name, ino) for name, ino in pairs]

    def readdir_plus(self, dir_fid: FileId) -> Iterator[DirEntry]:
        out: list[DirEntry] = []
        dev, attr_at = self._tree.dev, self._tree.reader.at
        with self._opendir(dir_fid) as fd:
            for name in map(os.fsencode, os.listdir(fd)):
                try:
                    attr = attr_at(fd, name)
                except FileNotFoundError:
                    continue  # removed while listing
                if attr.fsid == dev:  # skip mount points: lookup refuses them too
                    out.append(DirEntry(name, attr.fileid, attr))
        self._tree.map.record_listing(dir_fid, [(d.name, d.fileid) for d in out])
        return iter(out)

    def attrs_in(self, dir_fid: FileId, entries: Sequence[DirEntry]) -> list[Attr | None]:
        """One directory descriptor, one statx per entry: no path walks per entry. None for
        an entry gone, replaced since listed (another file id), or a mount point."""
        with self._opendir(dir_fid) as fd:
            return self._tree.reader.entries_at(fd, entries, self._tree.dev)

    def attr_rows_in(
        self, dir_fid: FileId, entries: Sequence[DirEntry], fsid: int
    ) -> tuple[list[AttrRow | None], list[int | None]]:
        """``attrs_in`` straight from each statx into an ``AttrRow`` (no ``Attr`` made)."""
        with self._opendir(dir_fid) as fd:
            return self._tree.reader.rows_at(fd, entries, self._tree.dev, fsid)

    def readlink(self, fid: FileId) -> bytes:
        with self._entry(fid) as (pfd, name, st):
            if not stat.S_ISLNK(st.st_mode):
                raise NfsError(Nfsstat3.INVAL, "not a symbolic link")
            return os.readlink(name, dir_fd=pfd)

    # -- data ----------------------------------------------------------------------------

    def _lease(self, fid: FileId, writable: bool) -> Lease:
        """A cached descriptor of regular file ``fid``, read-write when possible."""
        lease = self._fds.acquire(fid, writable)
        if lease is not None:
            return lease
        try:
            fd = self._tree.open_fid(fid, os.O_RDWR | _FILE_FLAGS, want_dir=False)
        except OSError as exc:
            if writable or exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise
            fd = self._tree.open_fid(fid, os.O_RDONLY | _FILE_FLAGS, want_dir=False)
            return self._fds.insert(fid, fd, writable=False)
        return self._fds.insert(fid, fd, writable=True)

    def read(self, fid: FileId, offset: int, count: int) -> tuple[bytes, bool]:
        lease = self._lease(fid, writable=False)
        try:
            data = os.pread(lease.fd, count, offset)
            st = self._fstat_linked(lease.fd, fid)
        finally:
            self._fds.release(lease)
        return data, offset + len(data) >= st.st_size

    def read_nowait(self, fid: FileId, offset: int, count: int) -> tuple[memoryview, bool]:
        """``preadv`` with ``RWF_NOWAIT``: the page cache's bytes, or ``WouldBlock`` when
        any page of the range is not cached (EAGAIN, or a short read before the end of
        file) or the file system cannot read without waiting (EOPNOTSUPP)."""
        lease = self._lease(fid, writable=False)
        try:
            st = self._fstat_linked(lease.fd, fid)
            count = max(0, min(count, st.st_size - offset))
            data = _pread_nowait(lease.fd, count, offset)
        finally:
            self._fds.release(lease)
        return data, offset + count >= st.st_size

    def read_segment(
        self, fid: FileId, offset: int, count: int
    ) -> tuple[bytes | memoryview | FileSegment, bool]:
        """The size first, so the segment promises only bytes the file has; small reads
        are copied (a duplicate descriptor and a second send would cost more)."""
        return self._segment(fid, offset, count, nowait=False)

    def read_segment_nowait(
        self, fid: FileId, offset: int, count: int
    ) -> tuple[bytes | memoryview | FileSegment, bool]:
        """``read_segment`` on the event loop: a segment only if the page cache holds all
        of it (``sendfile`` from the loop must not wait for the disk), a small read with
        ``RWF_NOWAIT``; ``WouldBlock`` otherwise."""
        return self._segment(fid, offset, count, nowait=True)

    def _segment(
        self, fid: FileId, offset: int, count: int, nowait: bool
    ) -> tuple[bytes | memoryview | FileSegment, bool]:
        lease = self._lease(fid, writable=False)
        try:
            st = self._fstat_linked(lease.fd, fid)
            count = max(0, min(count, st.st_size - offset))
            if count < SENDFILE_MIN:
                data = (
                    _pread_nowait(lease.fd, count, offset)
                    if nowait
                    else os.pread(lease.fd, count, offset)
                )
                return data, offset + len(data) >= st.st_size
            if nowait and not page_cache.holds(lease.fd, offset, count):
                raise WouldBlock
            return FileSegment(os.dup(lease.fd), offset, count), offset + count >= st.st_size
        finally:
            self._fds.release(lease)

    def _fstat_linked(self, fd: int, fid: FileId) -> os.stat_result:
        """fstat of an open file; STALE once it was removed behind our back."""
        st = os.fstat(fd)
        if st.st_nlink == 0:
            self._fds.invalidate(fid)
            raise stale(fid)
        return st

    def write(self, fid: FileId, offset: int, data: memoryview, stable: StableHow) -> StableHow:
        lease = self._lease(fid, writable=True)
        try:
            fd = lease.fd
            done = os.pwrite(fd, data, offset)
            while done < len(data):
                n = os.pwrite(fd, data[done:], offset + done)
                if n <= 0:
                    raise OSError(errno.EIO, "short write")
                done += n
            if stable is StableHow.DATA_SYNC:
                os.fdatasync(fd)
            elif stable is StableHow.FILE_SYNC:
                os.fsync(fd)
        finally:
            self._fds.release(lease)
        return stable

    def commit(self, fid: FileId, offset: int, count: int) -> None:
        try:
            lease = self._lease(fid, writable=False)
        except NfsError as exc:
            if exc.status in (Nfsstat3.ISDIR, Nfsstat3.INVAL):
                return  # nothing buffered by us for a non-regular file
            raise
        try:
            os.fsync(lease.fd)
        finally:
            self._fds.release(lease)

    # -- namespace -----------------------------------------------------------------------

    def _chown_new(self, path: int | bytes, attrs: SetAttr, **at: Any) -> None:
        """Give a new file the requested owner; only root may, so others skip EPERM."""
        owner = _owner(attrs)
        if owner is not None:
            try:
                os.chown(path, *owner, **at)
            except PermissionError:
                if self._is_root:
                    raise

    def create(self, dir_fid: FileId, name: bytes, attrs: SetAttr, exclusive: bool) -> FileId:
        _check_name(name, Nfsstat3.EXIST)
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        flags = os.O_RDWR | _FILE_FLAGS
        with self._opendir(dir_fid) as dfd:
            try:
                fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, mode, dir_fd=dfd)
            except FileExistsError:
                if exclusive:
                    raise
                fd = self._open_existing(dfd, name, flags, attrs)
                try:  # a retried CREATE may find a file whose entry was never synced
                    self._commit(fd, dfd)
                except BaseException:
                    os.close(fd)
                    raise
            else:
                try:
                    self._chown_new(fd, attrs)
                    if attrs.size:
                        os.ftruncate(fd, attrs.size)
                    # Last: chown and truncate clear set-id bits; fchmod ignores the umask.
                    os.fchmod(fd, mode)
                    if _explicit(attrs.atime_ns) and _explicit(attrs.mtime_ns):
                        os.utime(fd, ns=(attrs.atime_ns, attrs.mtime_ns))  # before the sync
                    self._commit(fd, dfd)
                except BaseException:
                    os.close(fd)
                    raise
        try:
            ino = os.fstat(fd).st_ino
        except BaseException:
            os.close(fd)
            raise
        self._tree.map.record(ino, dir_fid, name)
        self._fds.release(self._fds.insert(ino, fd, writable=True))
        return ino

    def _open_existing(self, dfd: int, name: bytes, flags: int, attrs: SetAttr) -> int:
        """Non-exclusive create of a name that exists: only a regular file will do."""
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise NfsError(Nfsstat3.EXIST, f"{name!r} exists and is not a regular file")
        fd = os.open(name, flags, dir_fd=dfd)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NfsError(Nfsstat3.EXIST, f"{name!r} exists and is not a regular file")
            if attrs.size == 0:
                os.ftruncate(fd, 0)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def mkdir(self, dir_fid: FileId, name: bytes, attrs: SetAttr) -> FileId:
        _check_name(name, Nfsstat3.EXIST)
        mode = 0o755 if attrs.mode is None else attrs.mode & 0o7777
        with self._opendir(dir_fid) as dfd:
            os.mkdir(name, mode, dir_fd=dfd)
            fd = os.open(name, DIR_FLAGS, dir_fd=dfd)
            try:
                self._chown_new(fd, attrs)
                os.fchmod(fd, mode)
                ino = os.fstat(fd).st_ino
                self._commit(fd, dfd)
            finally:
                os.close(fd)
        self._tree.map.record(ino, dir_fid, name)
        return ino

    def symlink(self, dir_fid: FileId, name: bytes, target: bytes, attrs: SetAttr) -> FileId:
        _check_name(name, Nfsstat3.EXIST)
        if not target or b"\0" in target:
            raise NfsError(Nfsstat3.INVAL, "bad symbolic link target")
        with self._opendir(dir_fid) as dfd:
            os.symlink(bytes(target), name, dir_fd=dfd)
            self._chown_new(name, attrs, dir_fd=dfd, follow_symlinks=False)
            ino = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_ino
            self._commit(dfd)
        self._tree.map.record(ino, dir_fid, name)
        return ino

    def mknod(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, rdev: tuple[int, int]
    ) -> FileId:
        if ftype not in MKNOD_TYPES:
            raise NfsError(Nfsstat3.BADTYPE, f"mknod cannot make {ftype.name}")
        _check_name(name, Nfsstat3.EXIST)
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        device = os.makedev(*rdev) if ftype in (Ftype3.CHR, Ftype3.BLK) else 0
        with self._opendir(dir_fid) as dfd:
            os.mknod(name, mode | S_IFMT_OF[ftype], device, dir_fd=dfd)
            self._chown_new(name, attrs, dir_fd=dfd, follow_symlinks=False)
            ino = self._chmod_at(dfd, name, mode)
            self._commit(dfd)
        self._tree.map.record(ino, dir_fid, name)
        return ino

    def _chmod_at(self, dfd: int, name: bytes, mode: int) -> int:
        """chmod ``name`` without following a symlink (those keep their mode); its inode.

        Python 3.11 has no lchmod on Linux, so open the file as an O_PATH handle (which has
        no side effects, even for devices) and change it through /proc/self/fd.
        """
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=dfd)
        try:
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                return st.st_ino
            try:
                os.chmod(f"/proc/self/fd/{fd}", mode)
            except FileNotFoundError:  # no /proc: accept the tiny race of a plain chmod
                if not self._tree.is_(os.stat(name, dir_fd=dfd, follow_symlinks=False), st.st_ino):
                    raise
                os.chmod(name, mode, dir_fd=dfd)
            return st.st_ino
        finally:
            os.close(fd)

    def remove(self, dir_fid: FileId, name: bytes) -> None:
        _check_name(name)
        with self._opendir(dir_fid) as dfd:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                raise NfsError(Nfsstat3.ISDIR)
            os.unlink(name, dir_fd=dfd)
            self._commit(dfd)
        self._dropped(st, dir_fid, name)

    def rmdir(self, dir_fid: FileId, name: bytes) -> None:
        _check_name(name)
        with self._opendir(dir_fid) as dfd:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise NfsError(Nfsstat3.NOTDIR)
            os.rmdir(name, dir_fd=dfd)
            self._commit(dfd)
        self._dropped(st, dir_fid, name)

    def rename(self, from_dir: FileId, from_name: bytes, to_dir: FileId, to_name: bytes) -> None:
        _check_name(from_name)
        _check_name(to_name)
        with self._opendir(from_dir) as sfd, self._opendir(to_dir) as dfd:
            st = os.stat(from_name, dir_fd=sfd, follow_symlinks=False)
            try:
                victim: os.stat_result | None = os.stat(to_name, dir_fd=dfd, follow_symlinks=False)
            except FileNotFoundError:
                victim = None
            if victim is not None and victim.st_ino == st.st_ino:
                return  # the same file (or another link to it): POSIX says do nothing
            os.rename(from_name, to_name, src_dir_fd=sfd, dst_dir_fd=dfd)
            self._commit(dfd, sfd)
        if victim is not None:
            self._dropped(victim, to_dir, to_name)
        self._tree.map.record(st.st_ino, to_dir, to_name)

    def link(self, fid: FileId, dir_fid: FileId, name: bytes) -> None:
        _check_name(name, Nfsstat3.EXIST)
        with self._entry(fid) as (pfd, src, st), self._opendir(dir_fid) as dfd:
            if not src or stat.S_ISDIR(st.st_mode):
                raise NfsError(Nfsstat3.PERM, "cannot hard-link a directory")
            os.link(src, name, src_dir_fd=pfd, dst_dir_fd=dfd, follow_symlinks=False)
            self._commit(dfd)

    def setattr(self, fid: FileId, attrs: SetAttr) -> None:
        if attrs.size is not None:
            lease = self._lease(fid, writable=True)
            try:
                os.ftruncate(lease.fd, attrs.size)
                self._commit(lease.fd)
            finally:
                self._fds.release(lease)
        owner = _owner(attrs)
        touch = attrs.atime_ns is not None or attrs.mtime_ns is not None
        if owner is None and attrs.mode is None and not touch:
            self._tree.locate(fid)  # nothing to change, but a stale id is still an error
            return
        if self._setattr_open(fid, attrs, owner, touch):
            return
        with self._entry(fid) as (pfd, name, st):
            at: dict[str, Any] = {"dir_fd": pfd, "follow_symlinks": False} if name else {}
            path: int | bytes = name or self._tree.root_fd
            if owner is not None:
                os.chown(path, *owner, **at)  # before chmod: chown clears set-id bits
            if attrs.mode is not None:
                if name:
                    self._chmod_at(pfd, name, attrs.mode & 0o7777)
                else:
                    os.chmod(path, attrs.mode & 0o7777)
            if touch:
                os.utime(path, ns=self._times(attrs, st), **at)

    def _setattr_open(
        self, fid: FileId, attrs: SetAttr, owner: tuple[int, int] | None, touch: bool
    ) -> bool:
        """Owner, mode and times of a regular file through its cached descriptor, if one
        is open (a file just created or written, as in ``tar -x``): one system call each,
        where the path way opens the parent, checks the name and opens the file again.
        False (nothing done) when none is cached or the file has no link left (then the
        path way answers STALE)."""
        lease = self._fds.acquire(fid, writable=False)
        if lease is None:
            return False
        try:
            fd = lease.fd
            st = os.fstat(fd)
            if st.st_nlink == 0:
                self._fds.invalidate(fid)
                return False
            if owner is not None:
                os.fchown(fd, *owner)  # before chmod: chown clears set-id bits
            if attrs.mode is not None:
                os.fchmod(fd, attrs.mode & 0o7777)
            if touch:
                os.utime(fd, ns=self._times(attrs, st))
            return True
        finally:
            self._fds.release(lease)

    @staticmethod
    def _times(attrs: SetAttr, st: os.stat_result) -> tuple[int, int]:
        now = time.time_ns()
        times = []
        for new, old in ((attrs.atime_ns, st.st_atime_ns), (attrs.mtime_ns, st.st_mtime_ns)):
            times.append(old if new is None else now if new == SERVER_TIME else new)
        return times[0], times[1]

    # -- file system -------------------------------------------------------------------

    def fsstat(self, fid: FileId) -> FsStat:
        self._tree.locate(fid)
        v = os.fstatvfs(self._tree.root_fd)
        return FsStat(
            v.f_blocks * v.f_frsize, v.f_bfree * v.f_frsize, v.f_bavail * v.f_frsize,
            v.f_files, v.f_ffree, v.f_favail,
        )  # fmt: skip


def _explicit(ns: int | None) -> TypeGuard[int]:
    """A time given as a value (not left alone, not ``SERVER_TIME``)."""
    return ns is not None and ns != SERVER_TIME

"""Serve a directory of the local POSIX file system.

File ids are inode numbers. ``FileIdMap`` remembers where each inode was last seen so a
handle still works after a rename or a restart; every location it returns is checked
against the inode, and a wrong or missing one triggers a bounded breadth-first rescan.

Confinement: nothing is ever opened through a symbolic link. Files and directories are
opened by walking from a descriptor of the export root one component at a time with
``O_NOFOLLOW``, and namespace changes are made relative to such a directory descriptor,
so a symlink swapped into a parent path cannot redirect a change outside the export.
Attribute reads (``getattr``, ``lookup``) use a single ``lstat`` relative to the root for
speed and only accept a result whose device and inode are the expected ones.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from ferry.backends._fdcache import FdCache, Lease
from ferry.backends._fileids import FileIdMap
from ferry.backends.base import SERVER_TIME, Attr, Backend, DirEntry, FileId, FsStat, SetAttr
from ferry.errors import ConfigError, NfsError
from ferry.nfs3.const import Ftype3, Nfsstat3, StableHow

_TYPES = {
    stat.S_IFREG: Ftype3.REG,
    stat.S_IFDIR: Ftype3.DIR,
    stat.S_IFBLK: Ftype3.BLK,
    stat.S_IFCHR: Ftype3.CHR,
    stat.S_IFLNK: Ftype3.LNK,
    stat.S_IFSOCK: Ftype3.SOCK,
    stat.S_IFIFO: Ftype3.FIFO,
}
_MKNOD = {Ftype3.FIFO: stat.S_IFIFO, Ftype3.SOCK: stat.S_IFSOCK,
          Ftype3.CHR: stat.S_IFCHR, Ftype3.BLK: stat.S_IFBLK}  # fmt: skip
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
_MISS_TTL = 5.0  # seconds an unfindable file id answers STALE without another scan
_DOTS = (b".", b"..")


def attr_of(st: os.stat_result) -> Attr:
    """NFS attributes from an ``lstat`` result."""
    rdev = st.st_rdev
    return Attr(
        _TYPES.get(stat.S_IFMT(st.st_mode), Ftype3.REG), st.st_mode & 0o7777, st.st_nlink,
        st.st_uid, st.st_gid, st.st_size, st.st_blocks * 512,
        (os.major(rdev), os.minor(rdev)) if rdev else (0, 0), st.st_ino,
        st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns,
    )  # fmt: skip


def _stale(fid: FileId) -> NfsError:
    return NfsError(Nfsstat3.STALE, f"file id {fid} no longer names a file")


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
    """The directory ``root_path``; file id state is kept in ``state_dir``."""

    def __init__(
        self,
        root_path: str | os.PathLike[str] | bytes,
        state_dir: str | os.PathLike[str],
        *,
        fd_cache_size: int = 64,
        scan_limit: int = 1_000_000,
    ) -> None:
        self._root_path = os.path.realpath(os.fsencode(root_path))
        try:
            self._root_fd = os.open(self._root_path, _DIR_FLAGS)
        except OSError as exc:
            raise ConfigError(f"root_path {root_path!s}: {exc.strerror}") from exc
        try:
            st = os.fstat(self._root_fd)
            self._dev, self._root_ino = st.st_dev, st.st_ino
            self.name_max = min(255, os.fstatvfs(self._root_fd).f_namemax)
            os.makedirs(state_dir, exist_ok=True)
            identity = f"{os.fsdecode(self._root_path)}:{self._root_ino}"
            db = os.path.join(state_dir, "fileids.sqlite3")
            self._map = FileIdMap(db, self._root_ino, identity)
        except BaseException:
            os.close(self._root_fd)
            raise
        self._fds = FdCache(fd_cache_size)
        self._scan_limit = scan_limit
        self._scan_lock = threading.Lock()
        self._misses: dict[FileId, float] = {}
        self._is_root = os.geteuid() == 0
        self._closed = False

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._fds.clear()
        try:
            self._map.close()
        finally:
            os.close(self._root_fd)

    def __enter__(self) -> LocalBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- locating files ------------------------------------------------------------------

    def _lstat(self, rel: bytes) -> os.stat_result:
        if not rel:
            return os.fstat(self._root_fd)
        return os.stat(rel, dir_fd=self._root_fd, follow_symlinks=False)

    def _is(self, st: os.stat_result, fid: FileId) -> bool:
        return st.st_ino == fid and st.st_dev == self._dev

    def _locate(self, fid: FileId) -> tuple[bytes, os.stat_result]:
        """The verified path (relative to the root) and ``lstat`` of ``fid``."""
        return self._verified(self._map.path(fid), fid) or self._rescan(fid)

    def _verified(self, rel: bytes | None, fid: FileId) -> tuple[bytes, os.stat_result] | None:
        """``(rel, lstat)`` if ``rel`` still leads to ``fid``."""
        if rel is None:
            return None
        try:
            st = self._lstat(rel)
        except OSError as exc:
            if exc.errno in _GONE:
                return None
            raise
        return (rel, st) if self._is(st, fid) else None

    def _rescan(self, fid: FileId) -> tuple[bytes, os.stat_result]:
        """Search the export for ``fid`` (it moved behind our back, or state was lost)."""
        if self._misses.get(fid, 0.0) > time.monotonic():
            raise _stale(fid)
        with self._scan_lock:
            # Another thread may have found it while this one waited.
            found = self._verified(self._map.path(fid), fid)
            if found is None:
                found = self._verified(self._scan(fid), fid)
        if found is not None:
            return found
        if len(self._misses) > 10_000:
            self._misses.clear()
        self._misses[fid] = time.monotonic() + _MISS_TTL
        raise _stale(fid)

    def _scan(self, fid: FileId) -> bytes | None:
        """Breadth-first search for ``fid``, recording every name seen on the way."""
        queue: deque[tuple[FileId, bytes]] = deque([(self._root_ino, b"")])
        seen = 0
        while queue and seen < self._scan_limit:
            dino, drel = queue.popleft()
            try:
                entries = self._list(dino, drel)
            except OSError:
                continue  # vanished or unreadable: skip that subtree
            self._map.record_many(dino, [(name, ino) for name, ino, _ in entries])
            seen += len(entries)
            for name, ino, is_dir in entries:
                rel = drel + b"/" + name if drel else name
                if ino == fid:
                    return rel
                if is_dir:
                    queue.append((ino, rel))
        return None

    def _list(self, dino: FileId, drel: bytes) -> list[tuple[bytes, FileId, bool]]:
        fd = self._walk_open(drel, _DIR_FLAGS)
        try:
            if not self._is(os.fstat(fd), dino):
                return []  # changed under us, or another file system mounted here
            with os.scandir(fd) as it:
                fse = os.fsencode
                return [(fse(e.name), e.inode(), e.is_dir(follow_symlinks=False)) for e in it]
        finally:
            os.close(fd)

    def _walk_open(self, rel: bytes, flags: int) -> int:
        """Open ``rel`` beneath the root one component at a time, following no symlink."""
        if not rel:
            return os.open(b".", flags, dir_fd=self._root_fd)
        *dirs, last = rel.split(b"/")
        cur = self._root_fd
        try:
            for comp in dirs:
                nxt = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                if cur != self._root_fd:
                    os.close(cur)
                cur = nxt
            return os.open(last, flags | os.O_NOFOLLOW, dir_fd=cur)
        finally:
            if cur != self._root_fd:
                os.close(cur)

    def _open_fid(self, fid: FileId, flags: int, want_dir: bool) -> int:
        """Open ``fid`` itself (NOTDIR/ISDIR/INVAL if it has the wrong type)."""
        rel, st = self._locate(fid)
        if want_dir and not stat.S_ISDIR(st.st_mode):
            raise NfsError(Nfsstat3.NOTDIR)
        if not want_dir and not stat.S_ISREG(st.st_mode):
            is_dir = stat.S_ISDIR(st.st_mode)
            raise NfsError(Nfsstat3.ISDIR if is_dir else Nfsstat3.INVAL, "not a regular file")
        try:
            fd = self._walk_open(rel, flags)
        except OSError as exc:
            if exc.errno in _GONE:
                raise _stale(fid) from exc
            raise
        if not self._is(os.fstat(fd), fid):
            os.close(fd)
            raise _stale(fid)
        return fd

    @contextlib.contextmanager
    def _opendir(self, fid: FileId) -> Iterator[int]:
        fd = self._open_fid(fid, _DIR_FLAGS, want_dir=True)
        try:
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _entry(self, fid: FileId) -> Iterator[tuple[int, bytes, os.stat_result]]:
        """A descriptor of the directory holding ``fid``, its name there and its lstat.

        For the root the descriptor is the root itself and the name is empty.
        """
        rel, st = self._locate(fid)
        if not rel:
            yield self._root_fd, b"", st
            return
        parent, _, name = rel.rpartition(b"/")
        try:
            pfd = self._walk_open(parent, _DIR_FLAGS)
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _GONE:
                raise _stale(fid) from exc
            raise
        try:
            if not self._is(st, fid):
                raise _stale(fid)
            yield pfd, name, st
        finally:
            os.close(pfd)

    def _dropped(self, st: os.stat_result, dir_fid: FileId, name: bytes) -> None:
        """Bookkeeping after the name ``name`` of the file ``st`` went away."""
        if st.st_nlink <= 1 or stat.S_ISDIR(st.st_mode):
            self._map.forget(st.st_ino)
            self._fds.invalidate(st.st_ino)
        else:
            self._map.forget(st.st_ino, only_if=(dir_fid, name))

    # -- resolving ----------------------------------------------------------------------

    def root(self) -> FileId:
        return self._root_ino

    def getattr(self, fid: FileId) -> Attr:
        lease = self._fds.acquire(fid, writable=False)
        if lease is not None:
            try:
                st = os.fstat(lease.fd)
            finally:
                self._fds.release(lease)
            if st.st_nlink > 0:
                return attr_of(st)
            self._fds.invalidate(fid)
        return attr_of(self._locate(fid)[1])

    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        rel, st = self._locate(dir_fid)
        if not stat.S_ISDIR(st.st_mode):
            raise NfsError(Nfsstat3.NOTDIR)
        if name == b".":
            return dir_fid
        if name == b"..":
            return self._lstat(rel.rpartition(b"/")[0]).st_ino if rel else dir_fid
        _check_name(name)
        st = self._lstat(rel + b"/" + name if rel else name)
        if st.st_dev != self._dev:
            raise NfsError(Nfsstat3.ACCES, f"{name!r} is on another file system")
        self._map.record(st.st_ino, dir_fid, name)
        return st.st_ino

    def readdir(self, dir_fid: FileId) -> list[DirEntry]:
        with self._opendir(dir_fid) as fd, os.scandir(fd) as it:
            fse = os.fsencode
            pairs = [(fse(e.name), e.inode()) for e in it]
        self._map.record_many(dir_fid, pairs)
        return [DirEntry(name, ino) for name, ino in pairs]

    def readdir_plus(self, dir_fid: FileId) -> Iterator[DirEntry]:
        out: list[DirEntry] = []
        dev, fse = self._dev, os.fsencode
        with self._opendir(dir_fid) as fd, os.scandir(fd) as it:
            for e in it:
                try:
                    st = e.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed while listing
                if st.st_dev == dev:  # skip mount points: lookup refuses them too
                    out.append(DirEntry(fse(e.name), st.st_ino, attr_of(st)))
        self._map.record_many(dir_fid, [(d.name, d.fileid) for d in out])
        return iter(out)

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
            fd = self._open_fid(fid, os.O_RDWR | _FILE_FLAGS, want_dir=False)
        except OSError as exc:
            if writable or exc.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise
            fd = self._open_fid(fid, os.O_RDONLY | _FILE_FLAGS, want_dir=False)
            return self._fds.insert(fid, fd, writable=False)
        return self._fds.insert(fid, fd, writable=True)

    def read(self, fid: FileId, offset: int, count: int) -> tuple[bytes, bool]:
        lease = self._lease(fid, writable=False)
        try:
            data = os.pread(lease.fd, count, offset)
            st = os.fstat(lease.fd)
        finally:
            self._fds.release(lease)
        if st.st_nlink == 0:  # removed behind our back
            self._fds.invalidate(fid)
            raise _stale(fid)
        return data, offset + len(data) >= st.st_size

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
        lease = self._lease(fid, writable=False)
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
            else:
                try:
                    self._chown_new(fd, attrs)
                    os.fchmod(fd, mode)  # unlike open(2), not subject to the umask
                    if attrs.size:
                        os.ftruncate(fd, attrs.size)
                except BaseException:
                    os.close(fd)
                    raise
        try:
            ino = os.fstat(fd).st_ino
        except BaseException:
            os.close(fd)
            raise
        self._map.record(ino, dir_fid, name)
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
            fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                self._chown_new(fd, attrs)
                os.fchmod(fd, mode)
                ino = os.fstat(fd).st_ino
            finally:
                os.close(fd)
        self._map.record(ino, dir_fid, name)
        return ino

    def symlink(self, dir_fid: FileId, name: bytes, target: bytes, attrs: SetAttr) -> FileId:
        _check_name(name, Nfsstat3.EXIST)
        if not target or b"\0" in target:
            raise NfsError(Nfsstat3.INVAL, "bad symbolic link target")
        with self._opendir(dir_fid) as dfd:
            os.symlink(bytes(target), name, dir_fd=dfd)
            self._chown_new(name, attrs, dir_fd=dfd, follow_symlinks=False)
            ino = os.stat(name, dir_fd=dfd, follow_symlinks=False).st_ino
        self._map.record(ino, dir_fid, name)
        return ino

    def mknod(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, rdev: tuple[int, int]
    ) -> FileId:
        ifmt = _MKNOD.get(ftype)
        if ifmt is None:
            raise NfsError(Nfsstat3.BADTYPE, f"mknod cannot make {ftype.name}")
        _check_name(name, Nfsstat3.EXIST)
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        device = os.makedev(*rdev) if ftype in (Ftype3.CHR, Ftype3.BLK) else 0
        with self._opendir(dir_fid) as dfd:
            os.mknod(name, mode | ifmt, device, dir_fd=dfd)
            self._chown_new(name, attrs, dir_fd=dfd, follow_symlinks=False)
            ino = self._chmod_at(dfd, name, mode)
        self._map.record(ino, dir_fid, name)
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
                if not self._is(os.stat(name, dir_fd=dfd, follow_symlinks=False), st.st_ino):
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
        self._dropped(st, dir_fid, name)

    def rmdir(self, dir_fid: FileId, name: bytes) -> None:
        _check_name(name)
        with self._opendir(dir_fid) as dfd:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise NfsError(Nfsstat3.NOTDIR)
            os.rmdir(name, dir_fd=dfd)
        self._dropped(st, dir_fid, name)

    def rename(self, from_dir: FileId, from_name: bytes, to_dir: FileId, to_name: bytes) -> None:
        _check_name(from_name)
        _check_name(to_name)
        with self._opendir(from_dir) as sfd, self._opendir(to_dir) as dfd:
            st = os.stat(from_name, dir_fd=sfd, follow_symlinks=False)
            try:
                victim: os.stat_result | None = os.stat(
                    to_name, dir_fd=dfd, follow_symlinks=False
                )
            except FileNotFoundError:
                victim = None
            if victim is not None and victim.st_ino == st.st_ino:
                return  # the same file (or another link to it): POSIX says do nothing
            os.rename(from_name, to_name, src_dir_fd=sfd, dst_dir_fd=dfd)
        if victim is not None:
            self._dropped(victim, to_dir, to_name)
        self._map.record(st.st_ino, to_dir, to_name)

    def link(self, fid: FileId, dir_fid: FileId, name: bytes) -> None:
        _check_name(name, Nfsstat3.EXIST)
        with self._entry(fid) as (pfd, src, st), self._opendir(dir_fid) as dfd:
            if not src or stat.S_ISDIR(st.st_mode):
                raise NfsError(Nfsstat3.PERM, "cannot hard-link a directory")
            os.link(src, name, src_dir_fd=pfd, dst_dir_fd=dfd, follow_symlinks=False)

    def setattr(self, fid: FileId, attrs: SetAttr) -> None:
        if attrs.size is not None:
            lease = self._lease(fid, writable=True)
            try:
                os.ftruncate(lease.fd, attrs.size)
            finally:
                self._fds.release(lease)
        owner = _owner(attrs)
        touch = attrs.atime_ns is not None or attrs.mtime_ns is not None
        if owner is None and attrs.mode is None and not touch:
            return
        with self._entry(fid) as (pfd, name, st):
            at: dict[str, Any] = {"dir_fd": pfd, "follow_symlinks": False} if name else {}
            path: int | bytes = name or self._root_fd
            if owner is not None:
                os.chown(path, *owner, **at)  # before chmod: chown clears set-id bits
            if attrs.mode is not None:
                if name:
                    self._chmod_at(pfd, name, attrs.mode & 0o7777)
                else:
                    os.chmod(path, attrs.mode & 0o7777)
            if touch:
                os.utime(path, ns=self._times(attrs, st), **at)

    @staticmethod
    def _times(attrs: SetAttr, st: os.stat_result) -> tuple[int, int]:
        now = time.time_ns()
        times = []
        for new, old in ((attrs.atime_ns, st.st_atime_ns), (attrs.mtime_ns, st.st_mtime_ns)):
            times.append(old if new is None else now if new == SERVER_TIME else new)
        return times[0], times[1]

    # -- file system -------------------------------------------------------------------

    def fsstat(self, fid: FileId) -> FsStat:
        self._locate(fid)
        v = os.fstatvfs(self._root_fd)
        return FsStat(
            v.f_blocks * v.f_frsize, v.f_bfree * v.f_frsize, v.f_bavail * v.f_frsize,
            v.f_files, v.f_ffree, v.f_favail,
        )  # fmt: skip

"""Serve a CephFS directory through libcephfs, with full POSIX semantics.

File ids are CephFS inode numbers. They are cluster-wide, so a file handle names the same
file on every Ferry server in front of one file system (give them one ``handle_key``), and
a server finds any file from its number alone (``ceph_ll_lookup_vino`` asks the MDS when the
inode is not in its cache): no path map, nothing to rebuild after a restart. Coherence
between servers is CephFS's own (capabilities): data buffered by one server is flushed
before another reads it. The generation in handles comes from the inode's birth time.

Every backend call goes through a ``Deadline``: when the cluster stops answering mid-flight
the NFS client gets JUKEBOX after ``op_timeout`` seconds instead of a hung call, and errors
libcephfs reports (``ENOTCONN`` after eviction, ``EIO``...) become NFS3ERR_IO. An
unreachable cluster at start is a ``ConfigError`` naming the cause.

Export options (``[[export]] backend = "cephfs"``, ``path`` = the directory inside CephFS)::

    options = { conf = "/etc/ceph/ceph.conf", client_id = "admin", keyring = "...",
                fs_name = "cephfs", mount_timeout = 10, op_timeout = 30, open_idle = 1,
                settings = { client_oc_size = "104857600" } }
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ferry.backends import _libcephfs as lc
from ferry.backends._deadline import Deadline
from ferry.backends._fdcache import FdCache, Lease
from ferry.backends._statx import mix
from ferry.backends.base import SERVER_TIME, Attr, Backend, DirEntry, FileId, FsStat, SetAttr
from ferry.errors import ConfigError, NfsError
from ferry.nfs3.const import Ftype3, Nfsstat3, StableHow

T = TypeVar("T")
_TYPES = {
    stat.S_IFREG: Ftype3.REG, stat.S_IFDIR: Ftype3.DIR, stat.S_IFLNK: Ftype3.LNK,
    stat.S_IFCHR: Ftype3.CHR, stat.S_IFBLK: Ftype3.BLK, stat.S_IFSOCK: Ftype3.SOCK,
    stat.S_IFIFO: Ftype3.FIFO,
}  # fmt: skip
_MKNOD = {Ftype3.FIFO: stat.S_IFIFO, Ftype3.SOCK: stat.S_IFSOCK,
          Ftype3.CHR: stat.S_IFCHR, Ftype3.BLK: stat.S_IFBLK}  # fmt: skip
_RETRY_LATER = {errno.ETIMEDOUT, errno.EAGAIN}
"""libcephfs errors worth a retry: JUKEBOX. Others keep their errno (unknown ones: IO)."""
_NS = 1_000_000_000
_MOUNT_HINTS = {
    errno.ETIMEDOUT: " (monitors in the conf unreachable, or no active MDS?)",
    errno.ENOENT: " (no such conf file, or no such directory in CephFS)",
    errno.EACCES: " (check client_id and keyring)",
    errno.EPERM: " (check client_id and keyring)",
}


def _ns(ts: lc.Timespec) -> int:
    return int(ts.tv_sec) * _NS + int(ts.tv_nsec)


def _timespec(ns: int) -> lc.Timespec:
    return lc.Timespec(ns // _NS, ns % _NS)


def to_attr(stx: lc.Statx) -> Attr:
    """NFS attributes from a ``ceph_statx`` (generation: the birth time, when known)."""
    ftype = _TYPES.get(stat.S_IFMT(stx.mode), Ftype3.REG)
    rdev = (os.major(stx.rdev), os.minor(stx.rdev)) if ftype in (Ftype3.CHR, Ftype3.BLK) else (0, 0)
    gen = mix(stx.btime.tv_sec, stx.btime.tv_nsec) if stx.mask & lc.STATX_BTIME else 0
    return Attr(
        ftype, stx.mode & 0o7777, stx.nlink, stx.uid, stx.gid, stx.size, stx.blocks * 512, rdev,
        stx.ino, _ns(stx.atime), _ns(stx.mtime), _ns(stx.ctime), generation=gen,
    )  # fmt: skip


def _in_new_thread(make: Callable[[], T]) -> T:
    """``make()`` on a thread of its own. libcephfs draws its network address nonce from
    a per-thread random engine seeded on first use: mounting on the main thread of a
    process that a mounted parent forked (prefork workers) would reuse the parent's
    sequence, so sibling workers got the same address and the MDS mixed them up."""
    box: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            box.append(make())
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    t = threading.Thread(target=run, name="cephfs-mount")
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return box[0]


_DATA = frozenset({"read", "write", "commit"})
"""Methods that wait on OSDs; the others wait on the MDS (``Deadline`` keys tell them apart,
so a READ stuck on a frozen OSD does not hold up a GETATTR of the same file)."""


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """Run a backend method under the deadline and translate libcephfs errors."""
    kind = "data" if method.__name__ in _DATA else "meta"

    @functools.wraps(method)
    def wrapper(self: CephFsBackend, *args: Any, **kwargs: Any) -> T:
        key = (kind, args[0]) if args else None  # the file (or directory) the call is on
        try:
            return self._deadline.run(functools.partial(method, self, *args, **kwargs), key)
        except OSError as exc:
            if exc.errno in _RETRY_LATER:
                raise NfsError(Nfsstat3.JUKEBOX, f"cephfs: {exc.strerror}") from exc
            raise

    return wrapper


class CephFsBackend(Backend):
    """The CephFS directory ``path`` (``/`` is the file system's root)."""

    def __init__(
        self,
        path: str = "/",
        *,
        conf: str | None = None,
        client_id: str | None = None,
        keyring: str | None = None,
        fs_name: str | None = None,
        mount_timeout: float = 10.0,
        op_timeout: float = 30.0,
        open_files: int = 64,
        open_idle: float = 1.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        conf_settings = {
            "client_mount_timeout": f"{mount_timeout:g}",
            "client_caps_release_delay": "1",  # see _lease: hand unused caps back soon
            **(settings or {}),
        }
        if keyring:
            conf_settings["keyring"] = keyring
        if fs_name:
            conf_settings["client_fs"] = fs_name
        where = f"cephfs {path!r} (conf {conf or 'default'}, client {client_id or 'admin'})"
        try:
            self._m = _in_new_thread(lambda: lc.Mount(client_id, conf, conf_settings, path or "/"))
        except OSError as exc:
            hint = _MOUNT_HINTS.get(exc.errno or 0, " (is libcephfs2 installed?)")
            raise ConfigError(f"{where}: cannot mount: {exc}{hint}") from exc
        self._root = self._m.lookup_root()
        root_stx = lc.Statx()
        self._m.getattr(self._root, root_stx)
        self._root_ino = int(root_stx.ino)
        self._files = FdCache(open_files, closer=lambda fh: self._m.close(lc.Fh(fh)))
        self._deadline = Deadline(op_timeout, name=f"cephfs {path}")
        self._close_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        if open_idle > 0:
            threading.Thread(
                target=self._close_idle, args=(open_idle,), name="cephfs-idle", daemon=True
            ).start()

    def _close_idle(self, idle: float) -> None:
        """Close the file handles nobody used for ``idle`` seconds (see ``_lease``)."""
        while not self._stop.wait(max(0.2, idle / 2)):
            self._files.close_idle(idle)

    def close(self) -> None:
        """Unmount (flushes buffered writes, hands capabilities back), bounded in time."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._deadline.close()

        def unmount() -> None:
            self._files.clear()
            self._m.put(self._root)
            self._m.shutdown()

        t = threading.Thread(target=unmount, name="cephfs-unmount", daemon=True)
        t.start()
        t.join(max(self._deadline.timeout, 10.0))

    def instance_id(self) -> int:
        """The libcephfs client id (to find this server's session on the MDS)."""
        return self._m.instance_id()

    # -- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _inode(self, fid: FileId) -> Iterator[lc.Inode]:
        """A referenced inode for ``fid``; STALE if CephFS has no such inode any more."""
        if fid == self._root_ino:
            yield self._root
            return
        try:
            inode = self._m.lookup_ino(fid)
        except OSError as exc:
            if exc.errno in (errno.ESTALE, errno.ENOENT):
                raise NfsError(Nfsstat3.STALE, f"no file with id {fid}") from exc
            raise
        try:
            yield inode
        finally:
            self._m.put(inode)

    def _stat(self, inode: lc.Inode, fid: FileId) -> lc.Statx:
        stx = lc.Statx()
        self._m.getattr(inode, stx)
        if stx.nlink == 0:  # removed, still held open by us or by another client
            self._files.invalidate(fid)
            raise NfsError(Nfsstat3.STALE, f"file {fid} was removed")
        return stx

    def _child(self, dir_fid: FileId, name: bytes) -> lc.Statx:
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            try:
                self._m.put(self._m.lookup(d, name, stx))
            except PermissionError:  # libcephfs checks search permission before the type
                if not stat.S_ISDIR(self._stat(d, dir_fid).mode):
                    raise NfsError(Nfsstat3.NOTDIR) from None
                raise
            return stx

    def _lease(self, fid: FileId, writable: bool = True) -> Lease:
        """A cached libcephfs file handle of regular file ``fid``, read-write if asked.

        A server that dies holding write capabilities (a read-write open) blocks every
        other server's use of the file, even a LOOKUP of its name, until its MDS session
        goes stale (docs/scale-out.md). So reads open read-only, COMMIT closes the
        read-write handle, a handle unused for ``open_idle`` seconds is closed, and
        libcephfs hands capabilities nobody wants back after ``client_caps_release_delay``
        (1 s instead of 5): about 2 s after a COMMIT the server holds nothing that would
        hold up another."""
        lease = self._files.acquire(fid, writable=writable)
        if lease is not None:
            return lease
        with self._inode(fid) as inode:
            ftype = _TYPES.get(stat.S_IFMT(self._stat(inode, fid).mode))
            if ftype is Ftype3.DIR:
                raise NfsError(Nfsstat3.ISDIR)
            if ftype is not Ftype3.REG:
                raise NfsError(Nfsstat3.INVAL, "not a regular file")
            fh = self._m.open(inode, os.O_RDWR if writable else os.O_RDONLY)
        return self._files.insert(fid, fh, writable=writable)

    def _set(self, inode: lc.Inode, attrs: SetAttr) -> None:
        """Apply ``attrs`` in one setattr (times: SERVER_TIME is this server's clock)."""
        stx, mask = lc.Statx(), 0
        now = time.time_ns()
        for value, bit, field in (
            (attrs.mode, lc.SETATTR_MODE, "mode"), (attrs.uid, lc.SETATTR_UID, "uid"),
            (attrs.gid, lc.SETATTR_GID, "gid"), (attrs.size, lc.SETATTR_SIZE, "size"),
        ):  # fmt: skip
            if value is not None:
                setattr(stx, field, value & 0o7777 if field == "mode" else value)
                mask |= bit
        for ns, bit, field in (
            (attrs.atime_ns, lc.SETATTR_ATIME, "atime"),
            (attrs.mtime_ns, lc.SETATTR_MTIME, "mtime"),
        ):
            if ns is not None:
                setattr(stx, field, _timespec(now if ns == SERVER_TIME else ns))
                mask |= bit
        if mask & lc.SETATTR_SIZE and not mask & lc.SETATTR_MTIME:
            stx.mtime = _timespec(now)  # libcephfs takes stx_mtime along with a new size
            mask |= lc.SETATTR_MTIME
        if mask:
            self._m.setattr(inode, stx, mask)

    def _dropped(self, victim: lc.Statx | None) -> None:
        """Forget the cached handle of a file that lost a name (it may be gone)."""
        if victim is not None:
            self._files.invalidate(int(victim.ino))

    def _maybe_child(self, d: lc.Inode, name: bytes) -> lc.Statx | None:
        stx = lc.Statx()
        try:
            self._m.put(self._m.lookup(d, name, stx))
        except FileNotFoundError:
            return None
        return stx

    # -- resolving ----------------------------------------------------------------------

    def root(self) -> FileId:
        return self._root_ino

    @_guarded
    def getattr(self, fid: FileId) -> Attr:
        with self._inode(fid) as inode:
            return to_attr(self._stat(inode, fid))

    @_guarded
    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        if name == b"." or (name == b".." and dir_fid == self._root_ino):
            with self._inode(dir_fid) as d:
                if not stat.S_ISDIR(self._stat(d, dir_fid).mode):
                    raise NfsError(Nfsstat3.NOTDIR)
            return dir_fid
        return int(self._child(dir_fid, name).ino)

    @_guarded
    def readdir(self, dir_fid: FileId) -> list[DirEntry]:
        with self._inode(dir_fid) as d:
            return [DirEntry(name, int(stx.ino), to_attr(stx)) for name, stx in self._m.listdir(d)]

    def readdir_plus(self, dir_fid: FileId) -> Iterator[DirEntry]:
        return iter(self.readdir(dir_fid))  # readdirplus attributes come with the listing

    @_guarded
    def readlink(self, fid: FileId) -> bytes:
        with self._inode(fid) as inode:
            if not stat.S_ISLNK(self._stat(inode, fid).mode):
                raise NfsError(Nfsstat3.INVAL, "not a symbolic link")
            return self._m.readlink(inode)

    # -- data ----------------------------------------------------------------------------

    @_guarded
    def read(self, fid: FileId, offset: int, count: int) -> tuple[memoryview, bool]:
        lease = self._lease(fid, writable=False)
        try:
            data = self._m.read(lc.Fh(lease.fd), offset, count)
        finally:
            self._files.release(lease)
        with self._inode(fid) as inode:
            size = self._stat(inode, fid).size
        return data, offset + len(data) >= size

    @_guarded
    def write(self, fid: FileId, offset: int, data: memoryview, stable: StableHow) -> StableHow:
        with self._inode(fid) as inode:
            self._stat(inode, fid)  # STALE if another server removed it
        lease = self._lease(fid)
        try:
            fh = lc.Fh(lease.fd)
            if self._m.write(fh, offset, data) != len(data):
                raise OSError(errno.EIO, "short write")
            if stable is not StableHow.UNSTABLE:
                self._m.fsync(fh, data_only=stable is StableHow.DATA_SYNC)
        finally:
            self._files.release(lease)
        return stable

    @_guarded
    def commit(self, fid: FileId, offset: int, count: int) -> None:
        try:
            lease = self._lease(fid)
        except NfsError as exc:
            if exc.status in (Nfsstat3.ISDIR, Nfsstat3.INVAL):
                return  # nothing buffered for a non-regular file
            raise
        try:
            self._m.fsync(lc.Fh(lease.fd), data_only=False)
            self._files.invalidate(fid)  # closed on release: no write capabilities kept
        finally:
            self._files.release(lease)

    # -- namespace -----------------------------------------------------------------------

    @_guarded
    def create(self, dir_fid: FileId, name: bytes, attrs: SetAttr, exclusive: bool) -> FileId:
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            try:
                inode, fh = self._m.create(d, name, mode, os.O_RDWR | os.O_CREAT | os.O_EXCL, stx)
            except FileExistsError:
                if exclusive:
                    raise
                return self._open_existing(d, name, attrs)
            try:
                fid = int(stx.ino)
                self._files.release(self._files.insert(fid, fh, writable=True))
                if attrs.uid is not None or attrs.gid is not None or attrs.size:
                    # chown and truncate clear set-id bits: the mode goes last, in the same call
                    self._set(inode, SetAttr(mode, attrs.uid, attrs.gid, attrs.size or None))
            finally:
                self._m.put(inode)
        return fid

    def _open_existing(self, d: lc.Inode, name: bytes, attrs: SetAttr) -> FileId:
        """Non-exclusive create of a name that exists: only a regular file will do."""
        stx = lc.Statx()
        inode = self._m.lookup(d, name, stx)
        try:
            if not stat.S_ISREG(stx.mode):
                raise NfsError(Nfsstat3.EXIST, f"{name!r} exists and is not a regular file")
            if attrs.size == 0 and stx.size:
                self._set(inode, SetAttr(size=0))
        finally:
            self._m.put(inode)
        return int(stx.ino)

    def _made(self, inode: lc.Inode, stx: lc.Statx, attrs: SetAttr, mode: int) -> FileId:
        """Finish a new mkdir/symlink/mknod: owner (and mode, which chown may clear)."""
        try:
            if attrs.uid is not None or attrs.gid is not None:
                self._set(inode, SetAttr(mode=mode, uid=attrs.uid, gid=attrs.gid))
        finally:
            self._m.put(inode)
        return int(stx.ino)

    @_guarded
    def mkdir(self, dir_fid: FileId, name: bytes, attrs: SetAttr) -> FileId:
        mode = 0o755 if attrs.mode is None else attrs.mode & 0o7777
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            return self._made(self._m.mkdir(d, name, mode, stx), stx, attrs, mode)

    @_guarded
    def symlink(self, dir_fid: FileId, name: bytes, target: bytes, attrs: SetAttr) -> FileId:
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            inode = self._m.symlink(d, name, target, stx)
            return self._made(inode, stx, SetAttr(uid=attrs.uid, gid=attrs.gid), 0o777)

    @_guarded
    def mknod(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, rdev: tuple[int, int]
    ) -> FileId:
        kind = _MKNOD.get(ftype)
        if kind is None:
            raise NfsError(Nfsstat3.BADTYPE, f"mknod cannot make {ftype.name}")
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        dev = os.makedev(*rdev) if ftype in (Ftype3.CHR, Ftype3.BLK) else 0
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            return self._made(self._m.mknod(d, name, kind | mode, dev, stx), stx, attrs, mode)

    @_guarded
    def remove(self, dir_fid: FileId, name: bytes) -> None:
        with self._inode(dir_fid) as d:
            victim = self._maybe_child(d, name)
            if victim is not None and stat.S_ISDIR(victim.mode):
                raise NfsError(Nfsstat3.ISDIR)
            self._m.unlink(d, name)
            self._dropped(victim)

    @_guarded
    def rmdir(self, dir_fid: FileId, name: bytes) -> None:
        with self._inode(dir_fid) as d:
            self._m.rmdir(d, name)

    @_guarded
    def rename(self, from_dir: FileId, from_name: bytes, to_dir: FileId, to_name: bytes) -> None:
        with self._inode(from_dir) as src, self._inode(to_dir) as dst:
            victim = self._maybe_child(dst, to_name)
            self._m.rename(src, from_name, dst, to_name)
            self._dropped(victim)
            if from_dir != to_dir:
                self._refresh(src)

    def _refresh(self, inode: lc.Inode) -> None:
        """Make libcephfs fetch a directory's attributes again. After a rename out of it,
        it keeps the old link count (subdirectory count) cached while it holds
        capabilities, and ``ceph_ll_getattr`` cannot force a fetch; a SETATTR does, and
        setting ctime to now is no change to speak of: the rename just set it."""
        stx = lc.Statx(ctime=_timespec(time.time_ns()))
        self._m.setattr(inode, stx, lc.SETATTR_CTIME)

    @_guarded
    def link(self, fid: FileId, dir_fid: FileId, name: bytes) -> None:
        with self._inode(fid) as inode, self._inode(dir_fid) as d:
            if stat.S_ISDIR(self._stat(inode, fid).mode):
                raise NfsError(Nfsstat3.PERM, "cannot hard-link a directory")
            self._m.link(inode, d, name)

    @_guarded
    def setattr(self, fid: FileId, attrs: SetAttr) -> None:
        with self._inode(fid) as inode:
            st = self._stat(inode, fid)
            if attrs.size is not None and stat.S_ISDIR(st.mode):
                raise NfsError(Nfsstat3.ISDIR)
            if attrs.size is not None and not stat.S_ISREG(st.mode):
                raise NfsError(Nfsstat3.INVAL, "not a regular file")
            self._set(inode, attrs)

    # -- file system -------------------------------------------------------------------

    @_guarded
    def fsstat(self, fid: FileId) -> FsStat:
        with self._inode(fid) as inode:
            st = self._m.statfs(inode)
        unit = st.f_frsize or st.f_bsize
        top = (1 << 64) - 1
        return FsStat(
            st.f_blocks * unit, st.f_bfree * unit, st.f_bavail * unit,
            min(st.f_files + st.f_ffree, top), min(st.f_ffree, top), min(st.f_favail, top),
        )  # fmt: skip

"""One libcephfs mount of a CephFS directory, and every backend operation on it.

``CephFsBackend`` (``ferry.backends.cephfs``) decides how calls are run (bounded in time)
and replaces a mount the cluster has cut off; this module does the work on one mount.
Inodes and file handles are pointers into one libcephfs client: an operation uses the
``MountedFs`` it started on from beginning to end, never another's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
import threading
import time
from collections.abc import Iterator

from ferry.backends import _libcephfs as lc
from ferry.backends._fdcache import FdCache, Lease
from ferry.backends._statx import mix
from ferry.backends.base import SERVER_TIME, Attr, DirEntry, FileId, FsStat, SetAttr
from ferry.errors import NfsError
from ferry.vocab import FTYPE_OF, MKNOD_TYPES, S_IFMT_OF, Ftype3, Nfsstat3, StableHow

_NS = 1_000_000_000
INODES = 1024
"""Inode references kept for recent calls (``MountedFs._inode``): a bound on what this
client pins in its cache beyond libcephfs's own choice."""


def _timespec(ns: int) -> lc.Timespec:
    return lc.Timespec(ns // _NS, ns % _NS)


_STATX = struct.Struct("=8xIIIH2xQQQ8xQqqqqqqqq8x")
"""``struct ceph_statx`` (``lc.Statx``) from nlink to btime: one unpack instead of a
Python object per field (and per ``Timespec``) read."""
_TYPES = FTYPE_OF  # hoisted, as in ``_statx``
_REG = Ftype3.REG
_DEVICES = (Ftype3.CHR, Ftype3.BLK)
_NO_RDEV = (0, 0)


def to_attr(stx: lc.Statx) -> Attr:
    """NFS attributes from a ``ceph_statx`` (generation: the birth time, when known)."""
    (nlink, uid, gid, mode, ino, size, blocks, rdev,
     a_s, a_ns, c_s, c_ns, m_s, m_ns, b_s, b_ns) = _STATX.unpack_from(stx)  # fmt: skip
    ftype = _TYPES.get(mode & 0o170000, _REG)
    dev = (os.major(rdev), os.minor(rdev)) if ftype in _DEVICES else _NO_RDEV
    gen = mix(b_s, b_ns) if stx.mask & lc.STATX_BTIME else 0
    return Attr(
        ftype, mode & 0o7777, nlink, uid, gid, size, blocks * 512, dev, ino,
        a_s * _NS + a_ns, m_s * _NS + m_ns, c_s * _NS + c_ns, generation=gen,
    )  # fmt: skip


class MountedFs:
    """The CephFS directory a ``lc.Mount`` was mounted at: its root, its cached file
    handles, and the operations of the backend contract (raising OSError or NfsError)."""

    def __init__(
        self,
        mount: lc.Mount,
        open_files: int = 64,
        open_idle: float = 1.0,
        inodes: int = INODES,
    ) -> None:
        self.m = mount
        self.root_inode = mount.lookup_root()
        root_stx = lc.Statx()
        mount.getattr(self.root_inode, root_stx)
        self.root_ino = int(root_stx.ino)
        self.files = FdCache(open_files, closer=lambda fh: mount.close(lc.Fh(fh)))
        self.inodes = FdCache(inodes, closer=lambda inode: mount.put(lc.Inode(inode)))
        """References to the inodes of recent calls (see ``_inode``), leased like handles."""
        self.calls = 0
        """Operations running on this mount now (it is shut down only when none is)."""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if open_idle > 0:
            threading.Thread(
                target=self._close_idle, args=(open_idle,), name="cephfs-idle", daemon=True
            ).start()

    def _close_idle(self, idle: float) -> None:
        """Close the file handles and drop the inode references nobody used for ``idle``
        seconds (see ``_lease`` and ``_inode``)."""
        while not self._stop.wait(max(0.2, idle / 2)):
            self.files.close_idle(idle)
            self.inodes.close_idle(idle)

    def __enter__(self) -> MountedFs:
        """``with fs:`` counts an operation running on this mount (a class's context
        manager, not a generator's: this brackets every call)."""
        with self._lock:
            self.calls += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self.calls -= 1

    def shutdown(self) -> None:
        """Close the cached handles and unmount (flushes buffered writes, hands capabilities
        back); can take a second, or hang on a cluster that stopped answering."""
        self._stop.set()
        self.files.clear()
        self.inodes.clear()
        self.m.put(self.root_inode)
        self.m.shutdown()

    def instance_id(self) -> int:
        """The libcephfs client id (to find this server's session on the MDS)."""
        return self.m.instance_id()

    # -- helpers -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _inode(self, fid: FileId) -> Iterator[lc.Inode]:
        """A referenced inode for ``fid``; STALE if CephFS has no such inode any more.

        The reference comes from ``inodes`` when a recent call left one there: a GETATTR
        is then one libcephfs call, not three (find the inode, read its attributes, drop
        it), and each is a release and a re-take of the GIL that the other threads
        contend for. A cached reference says nothing about the attributes (``getattr``
        still asks the MDS when this client holds no capabilities for them); it is
        dropped once unused for ``open_idle`` seconds, or when the file is seen removed
        (an unlinked inode we hold stays a stray on the MDS)."""
        if fid == self.root_ino:
            yield self.root_inode
            return
        lease = self.inodes.acquire(fid, writable=False)
        if lease is None:
            lease = self.inodes.insert(fid, self._lookup_ino(fid), writable=False)
        try:
            yield lc.Inode(lease.fd)
        finally:
            self.inodes.release(lease)

    def _lookup_ino(self, fid: FileId) -> lc.Inode:
        try:
            return self.m.lookup_ino(fid)
        except OSError as exc:
            if exc.errno in (errno.ESTALE, errno.ENOENT):
                raise NfsError(Nfsstat3.STALE, f"no file with id {fid}") from exc
            raise

    def _stat(self, inode: lc.Inode, fid: FileId) -> lc.Statx:
        stx = lc.Statx()
        self.m.getattr(inode, stx)
        if stx.nlink == 0:  # removed, still held open by us or by another client
            self._forget(fid)
            raise NfsError(Nfsstat3.STALE, f"file {fid} was removed")
        return stx

    def _child(self, dir_fid: FileId, name: bytes) -> lc.Statx:
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            try:
                self.m.put(self.m.lookup(d, name, stx))
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
        lease = self.files.acquire(fid, writable=writable)
        if lease is not None:
            return lease
        with self._inode(fid) as inode:
            ftype = FTYPE_OF.get(stat.S_IFMT(self._stat(inode, fid).mode))
            if ftype is Ftype3.DIR:
                raise NfsError(Nfsstat3.ISDIR)
            if ftype is not Ftype3.REG:
                raise NfsError(Nfsstat3.INVAL, "not a regular file")
            fh = self.m.open(inode, os.O_RDWR if writable else os.O_RDONLY)
        return self.files.insert(fid, fh, writable=writable)

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
            self.m.setattr(inode, stx, mask)

    def _dropped(self, victim: lc.Statx | None) -> None:
        """Forget the cached handle of a file that lost a name (it may be gone)."""
        if victim is not None:
            self._forget(int(victim.ino))

    def _forget(self, fid: FileId) -> None:
        """Close the cached handle of ``fid`` and drop our reference to its inode."""
        self.files.invalidate(fid)
        self.inodes.invalidate(fid)

    def _maybe_child(self, d: lc.Inode, name: bytes) -> lc.Statx | None:
        stx = lc.Statx()
        try:
            self.m.put(self.m.lookup(d, name, stx))
        except FileNotFoundError:
            return None
        return stx

    # -- resolving ----------------------------------------------------------------------

    def getattr(self, fid: FileId) -> Attr:
        with self._inode(fid) as inode:
            return to_attr(self._stat(inode, fid))

    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        if name == b"." or (name == b".." and dir_fid == self.root_ino):
            with self._inode(dir_fid) as d:
                if not stat.S_ISDIR(self._stat(d, dir_fid).mode):
                    raise NfsError(Nfsstat3.NOTDIR)
            return dir_fid
        return int(self._child(dir_fid, name).ino)

    def readdir(self, dir_fid: FileId) -> list[DirEntry]:
        with self._inode(dir_fid) as d:
            return [DirEntry(name, int(stx.ino), to_attr(stx)) for name, stx in self.m.listdir(d)]

    def readlink(self, fid: FileId) -> bytes:
        with self._inode(fid) as inode:
            if not stat.S_ISLNK(self._stat(inode, fid).mode):
                raise NfsError(Nfsstat3.INVAL, "not a symbolic link")
            return self.m.readlink(inode)

    # -- data ----------------------------------------------------------------------------

    def read(self, fid: FileId, offset: int, count: int) -> tuple[memoryview, bool]:
        lease = self._lease(fid, writable=False)
        try:
            data = self.m.read(lc.Fh(lease.fd), offset, count)
        finally:
            self.files.release(lease)
        with self._inode(fid) as inode:
            size = self._stat(inode, fid).size
        return data, offset + len(data) >= size

    def write(self, fid: FileId, offset: int, data: memoryview, stable: StableHow) -> StableHow:
        with self._inode(fid) as inode:
            self._stat(inode, fid)  # STALE if another server removed it
        lease = self._lease(fid)
        try:
            fh = lc.Fh(lease.fd)
            if self.m.write(fh, offset, data) != len(data):
                raise OSError(errno.EIO, "short write")
            if stable is not StableHow.UNSTABLE:
                self.m.fsync(fh, data_only=stable is StableHow.DATA_SYNC)
        finally:
            self.files.release(lease)
        return stable

    def commit(self, fid: FileId, offset: int, count: int) -> None:
        try:
            lease = self._lease(fid)
        except NfsError as exc:
            if exc.status in (Nfsstat3.ISDIR, Nfsstat3.INVAL):
                return  # nothing buffered for a non-regular file
            raise
        try:
            self.m.fsync(lc.Fh(lease.fd), data_only=False)
            self.files.invalidate(fid)  # closed on release: no write capabilities kept
        finally:
            self.files.release(lease)

    # -- namespace -----------------------------------------------------------------------

    def create(self, dir_fid: FileId, name: bytes, attrs: SetAttr, exclusive: bool) -> FileId:
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            try:
                inode, fh = self.m.create(d, name, mode, os.O_RDWR | os.O_CREAT | os.O_EXCL, stx)
            except FileExistsError:
                if exclusive:
                    raise
                return self._open_existing(d, name, attrs)
            try:
                fid = int(stx.ino)
                self.files.release(self.files.insert(fid, fh, writable=True))
                if attrs.uid is not None or attrs.gid is not None or attrs.size:
                    # chown and truncate clear set-id bits: the mode goes last, in the same call
                    self._set(inode, SetAttr(mode, attrs.uid, attrs.gid, attrs.size or None))
            finally:
                self.m.put(inode)
        return fid

    def _open_existing(self, d: lc.Inode, name: bytes, attrs: SetAttr) -> FileId:
        """Non-exclusive create of a name that exists: only a regular file will do."""
        stx = lc.Statx()
        inode = self.m.lookup(d, name, stx)
        try:
            if not stat.S_ISREG(stx.mode):
                raise NfsError(Nfsstat3.EXIST, f"{name!r} exists and is not a regular file")
            if attrs.size == 0 and stx.size:
                self._set(inode, SetAttr(size=0))
        finally:
            self.m.put(inode)
        return int(stx.ino)

    def _made(self, inode: lc.Inode, stx: lc.Statx, attrs: SetAttr, mode: int) -> FileId:
        """Finish a new mkdir/symlink/mknod: owner (and mode, which chown may clear)."""
        try:
            if attrs.uid is not None or attrs.gid is not None:
                self._set(inode, SetAttr(mode=mode, uid=attrs.uid, gid=attrs.gid))
        finally:
            self.m.put(inode)
        return int(stx.ino)

    def mkdir(self, dir_fid: FileId, name: bytes, attrs: SetAttr) -> FileId:
        mode = 0o755 if attrs.mode is None else attrs.mode & 0o7777
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            return self._made(self.m.mkdir(d, name, mode, stx), stx, attrs, mode)

    def symlink(self, dir_fid: FileId, name: bytes, target: bytes, attrs: SetAttr) -> FileId:
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            inode = self.m.symlink(d, name, target, stx)
            return self._made(inode, stx, SetAttr(uid=attrs.uid, gid=attrs.gid), 0o777)

    def mknod(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, rdev: tuple[int, int]
    ) -> FileId:
        if ftype not in MKNOD_TYPES:
            raise NfsError(Nfsstat3.BADTYPE, f"mknod cannot make {ftype.name}")
        mode = 0o644 if attrs.mode is None else attrs.mode & 0o7777
        dev = os.makedev(*rdev) if ftype in (Ftype3.CHR, Ftype3.BLK) else 0
        with self._inode(dir_fid) as d:
            stx = lc.Statx()
            return self._made(
                self.m.mknod(d, name, S_IFMT_OF[ftype] | mode, dev, stx), stx, attrs, mode
            )

    def remove(self, dir_fid: FileId, name: bytes) -> None:
        with self._inode(dir_fid) as d:
            victim = self._maybe_child(d, name)
            if victim is not None and stat.S_ISDIR(victim.mode):
                raise NfsError(Nfsstat3.ISDIR)
            self.m.unlink(d, name)
            self._dropped(victim)

    def rmdir(self, dir_fid: FileId, name: bytes) -> None:
        with self._inode(dir_fid) as d:
            self.m.rmdir(d, name)

    def rename(self, from_dir: FileId, from_name: bytes, to_dir: FileId, to_name: bytes) -> None:
        with self._inode(from_dir) as src, self._inode(to_dir) as dst:
            victim = self._maybe_child(dst, to_name)
            self.m.rename(src, from_name, dst, to_name)
            self._dropped(victim)
            if from_dir != to_dir:
                self._refresh(src)

    def _refresh(self, inode: lc.Inode) -> None:
        """Make libcephfs fetch a directory's attributes again. After a rename out of it,
        it keeps the old link count (subdirectory count) cached while it holds
        capabilities, and ``ceph_ll_getattr`` cannot force a fetch; a SETATTR does, and
        setting ctime to now is no change to speak of: the rename just set it."""
        stx = lc.Statx(ctime=_timespec(time.time_ns()))
        self.m.setattr(inode, stx, lc.SETATTR_CTIME)

    def link(self, fid: FileId, dir_fid: FileId, name: bytes) -> None:
        with self._inode(fid) as inode, self._inode(dir_fid) as d:
            if stat.S_ISDIR(self._stat(inode, fid).mode):
                raise NfsError(Nfsstat3.PERM, "cannot hard-link a directory")
            self.m.link(inode, d, name)

    def setattr(self, fid: FileId, attrs: SetAttr) -> None:
        with self._inode(fid) as inode:
            st = self._stat(inode, fid)
            if attrs.size is not None and stat.S_ISDIR(st.mode):
                raise NfsError(Nfsstat3.ISDIR)
            if attrs.size is not None and not stat.S_ISREG(st.mode):
                raise NfsError(Nfsstat3.INVAL, "not a regular file")
            self._set(inode, attrs)

    # -- file system -------------------------------------------------------------------

    def fsstat(self, fid: FileId) -> FsStat:
        with self._inode(fid) as inode:
            st = self.m.statfs(inode)
        unit = st.f_frsize or st.f_bsize
        top = (1 << 64) - 1
        return FsStat(
            st.f_blocks * unit, st.f_bfree * unit, st.f_bavail * unit,
            min(st.f_files + st.f_ffree, top), min(st.f_ffree, top), min(st.f_favail, top),
        )  # fmt: skip

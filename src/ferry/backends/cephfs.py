"""Serve a CephFS directory through libcephfs, with full POSIX semantics.

File ids are CephFS inode numbers. They are cluster-wide, so a file handle names the same
file on every Ferry server in front of one file system (give them one ``handle_key``), and
a server finds any file from its number alone (``ceph_ll_lookup_vino`` asks the MDS when the
inode is not in its cache): no path map, nothing to rebuild after a restart. Coherence
between servers is CephFS's own (capabilities): data buffered by one server is flushed
before another reads it. The generation in handles comes from the inode's birth time.

Every backend call goes through a ``Deadline``: when the cluster stops answering mid-flight
the NFS client gets JUKEBOX after ``op_timeout`` seconds instead of a hung call; errors
libcephfs reports (``EIO``...) keep their meaning. When the cluster cuts this server off
(an MDS evicted its session: every call fails with ``ESHUTDOWN``), the backend says so in
the log, answers JUKEBOX while it mounts again, and counts the loss in ``write_epoch``:
the writes the old session held unflushed are gone, so the server's write verifier
changes and clients send them again. An unreachable cluster at start is a
``ConfigError`` naming the cause.

The operations themselves are ``MountedFs``'s (``ferry.backends._cephfsmount``): this
module decides how they run.

Export options (``[[export]] backend = "cephfs"``, ``path`` = the directory inside CephFS)::

    options = { conf = "/etc/ceph/ceph.conf", client_id = "admin", keyring = "...",
                fs_name = "cephfs", subvolume = "", subvolumegroup = "_nogroup",
                mount_timeout = 10, op_timeout = 30, open_idle = 1, inline_metadata = true,
                settings = { client_oc_size = "104857600" } }

With ``subvolume``, ``path`` is a directory inside that subvolume (``/``: all of it).
``settings`` are Ceph options for this server's client, over the conf file's; the client
log (``debug_client``) is off unless one of them sets it (``_cephfsconnect.QUIET``: its
default in-memory log costs every call).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Concatenate, ParamSpec, TypeVar

from ferry.backends._cephfsconnect import DEFAULT_GROUP, MountSpec, connect
from ferry.backends._cephfsmount import MountedFs
from ferry.backends._deadline import Deadline
from ferry.backends.base import Attr, Backend, DirEntry, FileId, FsStat, SetAttr
from ferry.errors import ConfigError, NfsError
from ferry.vocab import Ftype3, Nfsstat3, StableHow

log = logging.getLogger("ferry.backends.cephfs")
T = TypeVar("T")
P = ParamSpec("P")
_RETRY_LATER = {errno.ETIMEDOUT, errno.EAGAIN}
"""libcephfs errors worth a retry: JUKEBOX. Others keep their errno (unknown ones: IO)."""
_CUT_OFF = {errno.ESHUTDOWN, errno.ENOTCONN}
"""What every call answers once the cluster has evicted (blocklisted) this client."""
_INLINE = frozenset({"getattr", "lookup"})
"""Operations run in the caller's thread while the cluster answers promptly: libcephfs
answers them from its cache (under capabilities) in microseconds (``Deadline``)."""
_DATA = frozenset({"read", "write", "commit"})
"""Operations that wait on OSDs; the others wait on the MDS (``Deadline`` keys tell them
apart, so a READ stuck on a frozen OSD does not hold up a GETATTR of the same file)."""
REMOUNT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Seconds between attempts to mount again after an eviction (the last one repeats)."""


class CephFsBackend(Backend):
    """The CephFS directory ``path`` (``/`` is the file system's root)."""

    multiprocess_safe = False  # write_epoch (writes lost with a session) is per process

    def __init__(
        self,
        path: str = "/",
        *,
        conf: str | None = None,
        client_id: str | None = None,
        keyring: str | None = None,
        fs_name: str | None = None,
        subvolume: str | None = None,
        subvolumegroup: str = DEFAULT_GROUP,
        mount_timeout: float = 10.0,
        op_timeout: float = 30.0,
        open_files: int = 64,
        open_idle: float = 1.0,
        inline_metadata: bool = True,
        settings: dict[str, str] | None = None,
    ) -> None:
        conf_settings = {
            "client_mount_timeout": f"{mount_timeout:g}",
            "client_caps_release_delay": "1",  # see MountedFs._lease: hand unused caps back
            **(settings or {}),
        }
        if keyring:
            conf_settings["keyring"] = keyring
        if fs_name:
            conf_settings["client_fs"] = fs_name
        self._spec = MountSpec(
            path or "/", conf, client_id, keyring, fs_name, subvolume, subvolumegroup,
            conf_settings,
        )  # fmt: skip
        self._where = self._spec.where
        self._open = (open_files, open_idle)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._fs: MountedFs | None = self._mount()
        self._root_ino = self._fs.root_ino
        self._deadline = Deadline(op_timeout, name=f"cephfs {path}")
        self._inline = _INLINE if inline_metadata else frozenset()

    def _mount(self) -> MountedFs:
        """A new libcephfs client mounted at the export's path; ConfigError if it cannot."""
        return connect(self._spec, *self._open)

    def close(self) -> None:
        """Unmount (flushes buffered writes, hands capabilities back), bounded in time."""
        with self._lock:
            if self._closed.is_set():
                return
            self._closed.set()
            fs, self._fs = self._fs, None
        self._deadline.close()
        if fs is not None:
            t = threading.Thread(target=fs.shutdown, name="cephfs-unmount", daemon=True)
            t.start()
            t.join(max(self._deadline.timeout, 10.0))

    def instance_id(self) -> int:
        """The libcephfs client id (to find this server's session on the MDS)."""
        return self._mounted().instance_id()

    # -- running calls -------------------------------------------------------------------

    def _mounted(self) -> MountedFs:
        fs = self._fs
        if fs is None:
            why = "closed" if self._closed.is_set() else "mounting again after an eviction"
            raise NfsError(Nfsstat3.JUKEBOX, f"{self._where}: {why}")
        return fs

    def _call(
        self, op: Callable[Concatenate[MountedFs, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``op`` on the current mount, bounded by the deadline, libcephfs errors translated."""
        fs = self._mounted()
        name = op.__name__
        key = ("data" if name in _DATA else "meta", args[0]) if args else None  # its file

        def job() -> T:
            with fs:
                return op(fs, *args, **kwargs)

        try:
            return self._deadline.run(job, key, inline=name in self._inline)
        except OSError as exc:
            if exc.errno in _CUT_OFF:
                self._cut_off(fs, exc)
                raise NfsError(Nfsstat3.JUKEBOX, f"cephfs: {exc.strerror}") from exc
            if exc.errno in _RETRY_LATER:
                raise NfsError(Nfsstat3.JUKEBOX, f"cephfs: {exc.strerror}") from exc
            raise

    # -- losing the session ----------------------------------------------------------------

    def _cut_off(self, fs: MountedFs, exc: OSError) -> None:
        """The cluster has evicted ``fs``'s client: mount again (once, in the background)."""
        with self._lock:
            if self._fs is not fs:
                return  # someone saw it first
            self._fs = None
        log.error(
            "%s: the cluster cut this server off (%s): its MDS session was evicted; writes "
            "not yet committed are lost (clients send them again); mounting again",
            self._where, exc.strerror,
        )  # fmt: skip
        threading.Thread(target=self._remount, args=(fs,), name="cephfs-remount").start()

    def _remount(self, old: MountedFs) -> None:
        threading.Thread(target=_retire, args=(old,), name="cephfs-retire", daemon=True).start()
        for attempt in range(1 << 30):
            if self._closed.is_set():
                return
            try:
                fs = self._mount()
            except (ConfigError, OSError) as exc:
                delay = REMOUNT_DELAYS[min(attempt, len(REMOUNT_DELAYS) - 1)]
                log.error("%s; trying again in %g s", exc, delay)
                self._closed.wait(delay)
                continue
            with self._lock:
                closed = self._closed.is_set()
                if not closed:  # logged first: once _fs is set, calls are served again
                    log.warning("%s: mounted again (client.%d)", self._where, fs.instance_id())
                    self.write_epoch += 1
                    self._fs = fs
            if closed:
                fs.shutdown()
            return

    # -- the backend contract --------------------------------------------------------------

    def root(self) -> FileId:
        return self._root_ino

    def getattr(self, fid: FileId) -> Attr:
        return self._call(MountedFs.getattr, fid)

    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        return self._call(MountedFs.lookup, dir_fid, name)

    def readdir(self, dir_fid: FileId) -> list[DirEntry]:
        return self._call(MountedFs.readdir, dir_fid)

    def readdir_plus(self, dir_fid: FileId) -> Iterator[DirEntry]:
        return iter(self.readdir(dir_fid))  # readdirplus attributes come with the listing

    def readlink(self, fid: FileId) -> bytes:
        return self._call(MountedFs.readlink, fid)

    def read(self, fid: FileId, offset: int, count: int) -> tuple[memoryview, bool]:
        return self._call(MountedFs.read, fid, offset, count)

    def write(self, fid: FileId, offset: int, data: memoryview, stable: StableHow) -> StableHow:
        return self._call(MountedFs.write, fid, offset, data, stable)

    def commit(self, fid: FileId, offset: int, count: int) -> None:
        self._call(MountedFs.commit, fid, offset, count)

    def create(self, dir_fid: FileId, name: bytes, attrs: SetAttr, exclusive: bool) -> FileId:
        return self._call(MountedFs.create, dir_fid, name, attrs, exclusive)

    def mkdir(self, dir_fid: FileId, name: bytes, attrs: SetAttr) -> FileId:
        return self._call(MountedFs.mkdir, dir_fid, name, attrs)

    def symlink(self, dir_fid: FileId, name: bytes, target: bytes, attrs: SetAttr) -> FileId:
        return self._call(MountedFs.symlink, dir_fid, name, target, attrs)

    def mknod(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, rdev: tuple[int, int]
    ) -> FileId:
        return self._call(MountedFs.mknod, dir_fid, name, ftype, attrs, rdev)

    def remove(self, dir_fid: FileId, name: bytes) -> None:
        self._call(MountedFs.remove, dir_fid, name)

    def rmdir(self, dir_fid: FileId, name: bytes) -> None:
        self._call(MountedFs.rmdir, dir_fid, name)

    def rename(self, from_dir: FileId, from_name: bytes, to_dir: FileId, to_name: bytes) -> None:
        self._call(MountedFs.rename, from_dir, from_name, to_dir, to_name)

    def link(self, fid: FileId, dir_fid: FileId, name: bytes) -> None:
        self._call(MountedFs.link, fid, dir_fid, name)

    def setattr(self, fid: FileId, attrs: SetAttr) -> None:
        self._call(MountedFs.setattr, fid, attrs)

    def fsstat(self, fid: FileId) -> FsStat:
        return self._call(MountedFs.fsstat, fid)


def _retire(fs: MountedFs, patience: float = 60.0) -> None:
    """Shut an evicted mount down once no operation runs on it any more (its inodes must
    not be freed under them); a mount whose calls stay stuck is left as it is."""
    deadline = time.monotonic() + patience
    while fs.calls and time.monotonic() < deadline:
        time.sleep(0.1)
    if fs.calls:
        log.warning("cephfs: an evicted mount still has %d call(s) stuck; left open", fs.calls)
        return
    try:
        fs.shutdown()
    except OSError as exc:
        log.info("cephfs: unmounting the evicted mount: %s", exc)

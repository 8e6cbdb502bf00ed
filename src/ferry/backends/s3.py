"""Serve a bucket, or a prefix in one, of an S3-compatible object store (through s3fs).

An object store is not a file system; what it cannot give, and what Ferry does instead
(docs/scale-out.md has the full list):

* Directories are key prefixes. MKDIR writes a marker object ``dir/``; a directory also
  exists while keys lie under it, so removing its last file first writes its marker.
* File ids are hashes of the key path (``_s3ids``): stable across restarts and the same on
  every server, with no state but the store. A rename copies the object and deletes the
  source (not atomic; the file gets a new id, the old handle goes STALE). A directory
  rename is refused with NFS3ERR_XDEV, which ``mv`` answers by copying and removing.
* WRITEs go to a local spool file (after downloading the object, if it has data); COMMIT,
  a FILE_SYNC/DATA_SYNC write, a SETATTR of the size or the server's stop upload the whole
  file, as a multipart upload from ``2 * chunk`` bytes. Uncommitted data dies with the
  server; NFS clients resend it when the write verifier changes.
* READs are ranged GETs with read-ahead: one GET fetches ``readahead`` bytes and the next
  sequential READs are served from it.
* No POSIX metadata: files are 0644 and directories 0755, owned by ``uid``/``gid``;
  SETATTR of mode, owner or times is accepted and ignored. mtime is the object's
  LastModified (whole seconds; to the nanosecond for what this server wrote last).
  Directories report the current time (to ``attr_ttl``), so clients revalidate their
  listings. No hard links, symbolic links or special files (NOTSUPP).
* Between servers, attributes may be ``attr_ttl`` seconds old; data written through one
  server is visible through another once committed (NFS close-to-open).

Every call goes through a ``Deadline``: a store that stops answering gives JUKEBOX after
``op_timeout`` seconds; other store errors become NFS3ERR_IO. An unreachable store or a
missing bucket at start is a ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ferry.backends._deadline import Deadline
from ferry.backends._s3data import Fill, ReadAhead, Spools
from ferry.backends._s3ids import ROOT_ID, IdMap
from ferry.backends.base import Attr, Backend, DirEntry, FileId, SetAttr
from ferry.errors import ConfigError, NfsError
from ferry.nfs3.const import Ftype3, Nfsstat3, StableHow

T = TypeVar("T")
_NS = 1_000_000_000
_BLOCK = 4096
_EMPTY_ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'  # MD5 of no bytes, as S3 quotes it


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """Run a backend method under the deadline; store failures become IO or JUKEBOX."""

    @functools.wraps(method)
    def wrapper(self: S3Backend, *args: Any, **kwargs: Any) -> T:
        try:
            return self._deadline.run(functools.partial(method, self, *args, **kwargs))
        except (NfsError, OSError):
            raise
        except Exception as exc:  # botocore/aiohttp errors: connection, timeouts
            status = Nfsstat3.JUKEBOX if "Timeout" in type(exc).__name__ else Nfsstat3.IO
            raise NfsError(status, f"s3: {type(exc).__name__}: {exc}") from exc

    return wrapper


@dataclasses.dataclass
class _Info:
    """What the store says about a name, cached for ``attr_ttl`` seconds."""

    is_dir: bool
    size: int
    mtime_ns: int
    etag: str
    expires: float


def _mtime(entry: dict[str, Any]) -> int:
    stamp = entry.get("LastModified")
    return int(stamp.timestamp()) * _NS if stamp is not None else 0


class S3Backend(Backend):
    """``path`` is ``bucket`` or ``bucket/prefix``; the other options configure s3fs."""

    def __init__(
        self,
        path: str,
        *,
        endpoint_url: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        region: str | None = None,
        anon: bool = False,
        uid: int = 0,
        gid: int = 0,
        readahead: int = 4 << 20,
        chunk: int = 8 << 20,
        attr_ttl: float = 1.0,
        op_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        spool_dir: str | None = None,
        scan_limit: int = 1_000_000,
    ) -> None:
        self._root = path.strip("/")
        if not self._root:
            raise ConfigError("s3: the export path must name a bucket ('bucket[/prefix]')")
        self._fs = _filesystem(endpoint_url, key, secret, region, anon, connect_timeout)
        self._check_bucket(endpoint_url)
        self._uid, self._gid = uid, gid
        self._chunk, self._ttl = max(chunk, 5 << 20), attr_ttl
        self._ids = IdMap(self._children, scan_limit=scan_limit)
        self._lock = threading.Lock()
        self._infos: dict[FileId, _Info] = {}
        self._spools = Spools(spool_dir)
        self._ahead = ReadAhead(readahead)
        self._changed: dict[FileId, int] = {}
        self._written: OrderedDict[FileId, tuple[str, int]] = OrderedDict()
        self._deadline = Deadline(op_timeout, name=f"s3 {self._root}")
        self._closed = False

    def _check_bucket(self, endpoint: str | None) -> None:
        bucket = self._root.split("/", 1)[0]
        try:
            self._fs.ls(bucket, detail=False)
        except Exception as exc:
            raise ConfigError(
                f"s3 {self._root!r} at {endpoint or 'the default endpoint'}: cannot list bucket "
                f"{bucket!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def close(self) -> None:
        """Upload what is not yet committed (bounded in time), then drop the spool files."""
        if self._closed:
            return
        self._closed = True
        for fid in self._spools.fids():
            with contextlib.suppress(Exception):  # best effort: clients resend uncommitted data
                self._deadline.run(functools.partial(self._upload, fid))
        self._deadline.close()
        self._spools.clear()

    # -- names and keys ------------------------------------------------------------------

    def _key(self, rel: str) -> str:
        return f"{self._root}/{rel}" if rel else self._root

    def _path(self, fid: FileId) -> str:
        rel = self._ids.path(fid)
        if rel is None:
            raise NfsError(Nfsstat3.STALE, f"no object with id {fid}")
        return rel

    @staticmethod
    def _join(dir_rel: str, name: bytes) -> str:
        try:
            text = name.decode()
        except UnicodeDecodeError:
            raise NfsError(Nfsstat3.INVAL, f"object keys are UTF-8; {name!r} is not") from None
        return f"{dir_rel}/{text}" if dir_rel else text

    def _children(self, dir_rel: str) -> Iterator[tuple[str, bool]]:
        """(relative path, is directory) of the entries of a directory (for ``IdMap``)."""
        for entry in self._list(dir_rel):
            yield entry["rel"], entry["type"] == "directory"

    def _list(self, dir_rel: str) -> list[dict[str, Any]]:
        key = self._key(dir_rel)
        try:
            found = self._fs.ls(key, detail=True)
        except FileNotFoundError:
            return []
        out = []
        for entry in found:
            name = entry["name"].rstrip("/")
            if name != key and name.startswith(key + "/"):
                entry["rel"] = self._join(dir_rel, name[len(key) + 1 :].encode())
                out.append(entry)
        return out

    # -- attributes ----------------------------------------------------------------------

    def _info(self, fid: FileId, rel: str) -> _Info:
        """The store's view of ``rel`` (cached ``attr_ttl`` seconds); FileNotFoundError."""
        now = time.monotonic()
        cached = self._infos.get(fid)
        if cached is not None and cached.expires > now:
            return cached
        entry = self._fs.info(self._key(rel))
        return self._remember(fid, entry, now)

    def _remember(self, fid: FileId, entry: dict[str, Any], now: float) -> _Info:
        info = _Info(entry["type"] == "directory", int(entry.get("size") or 0), _mtime(entry),
                     str(entry.get("ETag", "")), now + self._ttl)  # fmt: skip
        with self._lock:
            self._infos[fid] = info
        return info

    def _forget(self, *fids: FileId) -> None:
        with self._lock:
            for fid in fids:
                self._infos.pop(fid, None)
                self._ahead.drop(fid)

    def _touched(self, dir_fid: FileId) -> None:
        self._changed[dir_fid] = time.time_ns()

    def _dir_attr(self, fid: FileId) -> Attr:
        now = time.time_ns()
        step = max(int(self._ttl * _NS), 1)
        t = max(now - now % step, self._changed.get(fid, 0))
        return Attr(Ftype3.DIR, 0o755, 2, self._uid, self._gid, _BLOCK, _BLOCK, (0, 0), fid,
                    t, t, t)  # fmt: skip

    def _file_attr(self, fid: FileId, size: int, mtime_ns: int) -> Attr:
        used = -(-size // _BLOCK) * _BLOCK
        return Attr(Ftype3.REG, 0o644, 1, self._uid, self._gid, size, used, (0, 0), fid,
                    mtime_ns, mtime_ns, mtime_ns)  # fmt: skip

    def _attr(self, fid: FileId) -> Attr:
        if fid == ROOT_ID:
            return self._dir_attr(fid)
        spool = self._spools.get(fid)
        if spool is not None and spool.mtime_ns:
            return self._file_attr(fid, spool.size, spool.mtime_ns)
        try:
            info = self._info(fid, self._path(fid))
        except FileNotFoundError:
            raise NfsError(Nfsstat3.STALE, f"object {fid} is gone") from None
        if info.is_dir:
            return self._dir_attr(fid)
        return self._file_attr(fid, info.size, self._mtime_of(fid, info))

    def _mtime_of(self, fid: FileId, info: _Info) -> int:
        """LastModified has whole seconds; for an object this server wrote last, the
        nanosecond time of that write, so two changes in one second differ."""
        mine = self._written.get(fid)
        return max(mine[1], info.mtime_ns) if mine and mine[0] == info.etag else info.mtime_ns

    def _wrote(self, fid: FileId, etag: str, mtime_ns: int) -> None:
        with self._lock:
            self._written[fid] = (etag, mtime_ns)
            self._written.move_to_end(fid)
            while len(self._written) > 1 << 16:
                self._written.popitem(last=False)

    def _dir(self, fid: FileId) -> str:
        """The relative path of directory ``fid``; NOTDIR if it is a file."""
        rel = self._path(fid)
        if self._attr(fid).type is not Ftype3.DIR:
            raise NfsError(Nfsstat3.NOTDIR)
        return rel

    def _file(self, fid: FileId) -> Attr:
        attr = self._attr(fid)
        if attr.type is Ftype3.DIR:
            raise NfsError(Nfsstat3.ISDIR)
        return attr

    # -- resolving ----------------------------------------------------------------------

    def root(self) -> FileId:
        return ROOT_ID

    @_guarded
    def getattr(self, fid: FileId) -> Attr:
        return self._attr(fid)

    @_guarded
    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        dir_rel = self._dir(dir_fid)
        if name == b".":
            return dir_fid
        if name == b"..":
            return self._ids.remember(dir_rel.rpartition("/")[0])
        rel = self._join(dir_rel, name)
        fid = self._ids.remember(rel)
        if fid not in self._spools:
            try:
                self._info(fid, rel)
            except FileNotFoundError:
                raise NfsError(Nfsstat3.NOENT, f"no such file: {name!r}") from None
        return fid

    @_guarded
    def readdir(self, dir_fid: FileId) -> list[DirEntry]:
        dir_rel, now = self._dir(dir_fid), time.monotonic()
        out = []
        for entry in self._list(dir_rel):
            fid = self._ids.remember(entry["rel"])
            info = self._remember(fid, entry, now)
            attr = None
            if fid not in self._spools:  # a spooled file's size is not the store's
                attr = (
                    self._dir_attr(fid)
                    if info.is_dir
                    else self._file_attr(fid, info.size, self._mtime_of(fid, info))
                )
            out.append(DirEntry(entry["rel"].rpartition("/")[2].encode(), fid, attr))
        return out

    def readlink(self, fid: FileId) -> bytes:
        raise NfsError(Nfsstat3.INVAL, "an object store has no symbolic links")

    # -- data ----------------------------------------------------------------------------

    @_guarded
    def read(self, fid: FileId, offset: int, count: int) -> tuple[bytes, bool]:
        size = self._file(fid).size
        spooled = self._spools.read(fid, offset, count)
        if spooled is not None:
            return spooled[0], offset + len(spooled[0]) >= spooled[1]
        if offset >= size or count == 0:
            return b"", offset >= size
        key = self._key(self._path(fid))

        def fetch(start: int, stop: int) -> bytes:
            return bytes(self._fs.cat_file(key, start=start, end=stop))

        info = self._infos.get(fid)
        data = self._ahead.read(fid, info.etag if info else "", offset, count, size, fetch)
        return data, offset + len(data) >= size

    def _fill(self, fid: FileId) -> Fill | None:
        """How to start a spool of ``fid``: with the object's data, if it has any."""
        attr = self._file(fid)
        key = self._key(self._path(fid))
        return (lambda path: self._fs.get_file(key, path)) if attr.size else None

    @_guarded
    def write(self, fid: FileId, offset: int, data: memoryview, stable: StableHow) -> StableHow:
        def edit(fd: int) -> int:
            os.pwrite(fd, data, offset)
            return max(os.fstat(fd).st_size, offset + len(data))

        self._spools.change(fid, None if fid in self._spools else self._fill(fid), 0, edit)
        if stable is not StableHow.UNSTABLE:
            self._upload(fid)
        return stable

    @_guarded
    def commit(self, fid: FileId, offset: int, count: int) -> None:
        self._upload(fid)

    def _upload(self, fid: FileId) -> None:
        """Store the spool as the object (multipart from 2 * chunk bytes); drop it after."""
        key = self._key(self._path(fid)) if fid in self._spools else ""

        def upload(path: str) -> None:
            self._fs.put_file(path, key, chunksize=self._chunk)

        mtime_ns = self._spools.flush(fid, upload)
        if mtime_ns is not None:
            info = self._remember(fid, self._fs.info(key), time.monotonic())
            self._wrote(fid, info.etag, mtime_ns)

    def _truncate(self, fid: FileId, size: int) -> None:
        def edit(fd: int) -> int:
            os.ftruncate(fd, size)
            return size

        self._spools.change(fid, None if fid in self._spools else self._fill(fid), 0, edit)
        self._upload(fid)

    # -- namespace -----------------------------------------------------------------------

    def _exists(self, rel: str) -> _Info | None:
        fid = self._ids.remember(rel)
        if fid in self._spools:
            return _Info(False, 0, 0, "", 0.0)
        try:
            return self._info(fid, rel)
        except FileNotFoundError:
            return None

    def _keep_dir(self, dir_rel: str) -> None:
        """Write a directory's marker, so it outlives the removal of its last entry."""
        if dir_rel:
            self._fs.pipe_file(self._key(dir_rel) + "/", b"")

    @_guarded
    def create(self, dir_fid: FileId, name: bytes, attrs: SetAttr, exclusive: bool) -> FileId:
        rel = self._join(self._dir(dir_fid), name)
        fid = self._ids.remember(rel)
        found = self._exists(rel)
        if found is not None:
            if exclusive or found.is_dir:
                raise NfsError(Nfsstat3.EXIST, f"file exists: {name!r}")
            if attrs.size == 0 and (found.size or fid in self._spools):
                self._truncate(fid, 0)
            return fid
        self._fs.pipe_file(self._key(rel), b"")
        self._forget(fid)
        self._wrote(fid, _EMPTY_ETAG, time.time_ns())
        self._touched(dir_fid)
        if attrs.size:
            self._truncate(fid, attrs.size)
        return fid

    @_guarded
    def mkdir(self, dir_fid: FileId, name: bytes, attrs: SetAttr) -> FileId:
        rel = self._join(self._dir(dir_fid), name)
        if self._exists(rel) is not None:
            raise NfsError(Nfsstat3.EXIST, f"file exists: {name!r}")
        self._fs.pipe_file(self._key(rel) + "/", b"")
        self._touched(dir_fid)
        fid = self._ids.remember(rel)
        self._forget(fid)
        return fid

    def symlink(self, dir_fid: FileId, name: bytes, target: bytes, attrs: SetAttr) -> FileId:
        raise NfsError(Nfsstat3.NOTSUPP, "an object store has no symbolic links")

    def mknod(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, rdev: tuple[int, int]
    ) -> FileId:
        raise NfsError(Nfsstat3.NOTSUPP, "an object store has no special files")

    def link(self, fid: FileId, dir_fid: FileId, name: bytes) -> None:
        raise NfsError(Nfsstat3.NOTSUPP, "an object store has no hard links")

    @_guarded
    def remove(self, dir_fid: FileId, name: bytes) -> None:
        dir_rel = self._dir(dir_fid)
        rel = self._join(dir_rel, name)
        found = self._exists(rel)
        if found is None:
            raise NfsError(Nfsstat3.NOENT, f"no such file: {name!r}")
        if found.is_dir:
            raise NfsError(Nfsstat3.ISDIR)
        self._keep_dir(dir_rel)
        self._spools.drop(self._ids.remember(rel))
        self._fs.rm_file(self._key(rel))
        self._forget(self._ids.remember(rel), dir_fid)
        self._touched(dir_fid)

    @_guarded
    def rmdir(self, dir_fid: FileId, name: bytes) -> None:
        dir_rel = self._dir(dir_fid)
        rel = self._join(dir_rel, name)
        found = self._exists(rel)
        if found is None:
            raise NfsError(Nfsstat3.NOENT, f"no such directory: {name!r}")
        if not found.is_dir:
            raise NfsError(Nfsstat3.NOTDIR)
        if self._list(rel):
            raise NfsError(Nfsstat3.NOTEMPTY)
        self._keep_dir(dir_rel)
        with contextlib.suppress(FileNotFoundError):  # a directory only implied by keys
            self._fs.rm_file(self._key(rel) + "/")
        self._forget(self._ids.remember(rel), dir_fid)
        self._touched(dir_fid)

    @_guarded
    def rename(self, from_dir: FileId, from_name: bytes, to_dir: FileId, to_name: bytes) -> None:
        src_dir, dst_dir = self._dir(from_dir), self._dir(to_dir)
        src, dst = self._join(src_dir, from_name), self._join(dst_dir, to_name)
        found = self._exists(src)
        if found is None:
            raise NfsError(Nfsstat3.NOENT, f"no such file: {from_name!r}")
        if found.is_dir:
            raise NfsError(Nfsstat3.XDEV, "an object store cannot rename a directory: copy it")
        if src == dst:
            return
        target = self._exists(dst)
        if target is not None and target.is_dir:
            raise NfsError(Nfsstat3.ISDIR)
        src_fid, dst_fid = self._ids.remember(src), self._ids.remember(dst)
        self._upload(src_fid)
        self._spools.drop(dst_fid)
        self._keep_dir(src_dir)
        self._fs.copy(self._key(src), self._key(dst))
        self._fs.rm_file(self._key(src))
        self._forget(src_fid, dst_fid, from_dir, to_dir)
        self._touched(from_dir)
        self._touched(to_dir)

    @_guarded
    def setattr(self, fid: FileId, attrs: SetAttr) -> None:
        """Only the size is stored; mode, owner and times are accepted and ignored."""
        attr = self._attr(fid)
        if attrs.size is not None:
            if attr.type is Ftype3.DIR:
                raise NfsError(Nfsstat3.ISDIR)
            if attrs.size != attr.size:
                self._truncate(fid, attrs.size)


def _filesystem(
    endpoint: str | None, key: str | None, secret: str | None, region: str | None,
    anon: bool, connect_timeout: float,
) -> Any:  # fmt: skip
    """An s3fs file system without listing caches (other servers change the store)."""
    try:
        import s3fs
    except ImportError as exc:
        raise ConfigError("s3: s3fs is not installed (pip install 'ferry-nfs[s3]')") from exc
    client: dict[str, Any] = {"endpoint_url": endpoint} if endpoint else {}
    if region:
        client["region_name"] = region
    return s3fs.S3FileSystem(
        key=key, secret=secret, anon=anon, client_kwargs=client, use_listings_cache=False,
        skip_instance_cache=True,
        config_kwargs={"connect_timeout": connect_timeout, "read_timeout": 60,
                       "retries": {"max_attempts": 2, "mode": "standard"}},
    )  # fmt: skip

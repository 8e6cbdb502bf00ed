"""Serve a bucket, or a prefix in one, of an S3-compatible object store (through s3fs).

An object store is not a file system; what it cannot give, and what Ferry does instead
(docs/scale-out.md has the full list):

* Directories are key prefixes. MKDIR writes a marker object ``dir/``; a directory also
  exists while keys lie under it, so removing its last file first writes its marker.
* File ids are hashes of the key path (``_s3ids``): stable across restarts and the same on
  every server, with no state but the store. A rename copies the object and deletes the
  source (not atomic; the file gets a new id, the old handle goes STALE). A directory
  rename is refused with NFS3ERR_XDEV, which ``mv`` answers by copying and removing.
* WRITEs go to a local spool file (after downloading the object, if it has data), under
  the server's state directory; COMMIT, a FILE_SYNC/DATA_SYNC write, a SETATTR of the
  size or the server's stop upload the whole file, as a multipart upload from
  ``2 * chunk`` bytes. Uncommitted data dies with the server (its spool is removed at the
  next start); NFS clients resend it when the write verifier changes.
* Several servers writing one object: an upload is conditional on the object still being
  the version the spool started from (``If-Match`` on its ETag, ``_s3store``). If another
  server stored it meanwhile, this server downloads the new version, replays only its
  own writes and size changes over it and tries again (at most ``_MERGES`` times, then
  JUKEBOX); if the object was removed, the COMMIT answers STALE. So both servers' ranges
  survive: acknowledged bytes are never replaced by a stale copy of the whole object.
* READs are ranged GETs with read-ahead: one GET fetches ``readahead`` bytes and the next
  sequential READs are served from it.
* No POSIX metadata: files are ``file_mode`` (0644) and directories ``dir_mode`` (0755),
  owned by ``uid``/``gid``; SETATTR of mode, owner or times is accepted and ignored.
  mtime and ctime are the object's LastModified (whole seconds) plus nanoseconds derived
  from its ETag, so every change of content changes them, on every server; for what this
  server wrote last, the nanosecond time of that write. Directories report the current
  time (to ``attr_ttl``), so clients revalidate their listings. No hard links, symbolic
  links or special files (NOTSUPP).
* Between servers, attributes may be ``attr_ttl`` seconds old; data written through one
  server is visible through another once committed (NFS close-to-open).

Every call goes through a ``Deadline``: a store that stops answering gives JUKEBOX after
``op_timeout`` seconds, and one that cannot be reached (refused connections: a stopped
RGW) or is overloaded (HTTP 5xx) gives JUKEBOX at once; other store errors are named by
their S3 code and become NFS3ERR_ACCES (AccessDenied), NOENT or IO. An unreachable store
or a missing bucket at start is a ``ConfigError``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import random
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ferry.backends import _s3store
from ferry.backends._deadline import Deadline
from ferry.backends._s3data import Fill, ReadAhead, Spool, Spools
from ferry.backends._s3ids import ROOT_ID, IdMap
from ferry.backends._s3store import Conflict, Store
from ferry.backends.base import Attr, Backend, DirEntry, FileId, SetAttr
from ferry.errors import ConfigError, NfsError
from ferry.vocab import Ftype3, Nfsstat3, StableHow

T = TypeVar("T")
_NS = 1_000_000_000
_BLOCK = 4096
_EMPTY_ETAG = '"d41d8cd98f00b204e9800998ecf8427e"'  # MD5 of no bytes, as S3 quotes it
_MERGES = 5
"""Merges a COMMIT tries before it answers JUKEBOX, if the object keeps changing."""
_ADDRESSING = ("auto", "path", "virtual")


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """Run a backend method under the deadline; store failures become IO or JUKEBOX."""

    @functools.wraps(method)
    def wrapper(self: S3Backend, *args: Any, **kwargs: Any) -> T:
        try:
            return self._deadline.run(functools.partial(method, self, *args, **kwargs))
        except NfsError:
            raise
        except Exception as exc:  # botocore/aiohttp errors, or s3fs's OSErrors wrapping them
            if isinstance(exc, OSError) and not _s3store.from_store(exc):
                raise  # the local disk (spools): the errno says it
            status = _s3store.status(exc)
            raise NfsError(status, f"s3 {self._root}: {_s3store.describe(exc)}") from exc

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
    """LastModified (whole seconds) plus nanoseconds drawn from the ETag: two versions
    stored within one second differ, and every server computes the same time."""
    stamp = entry.get("LastModified")
    if stamp is None:
        return 0
    digest = hashlib.blake2b(str(entry.get("ETag", "")).encode(), digest_size=8).digest()
    return int(stamp.timestamp()) * _NS + int.from_bytes(digest, "big") % _NS


class S3Backend(Backend):
    """``path`` is ``bucket`` or ``bucket/prefix`` (the key prefix served); the other
    options configure the client (docs/scale-out.md lists them)."""

    multiprocess_safe = False  # UNSTABLE writes wait in this process's spool until COMMIT

    def __init__(
        self,
        path: str,
        *,
        endpoint_url: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        token: str | None = None,
        profile: str | None = None,
        region: str | None = None,
        anon: bool = False,
        verify: bool = True,
        ca_bundle: str | None = None,
        addressing_style: str | None = None,
        uid: int = 0,
        gid: int = 0,
        file_mode: int = 0o644,
        dir_mode: int = 0o755,
        readahead: int = 4 << 20,
        chunk: int = 8 << 20,
        attr_ttl: float = 1.0,
        op_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        state_dir: str | None = None,
        spool_dir: str | None = None,
        scan_limit: int = 1_000_000,
    ) -> None:
        self._root = path.strip("/")
        if not self._root:
            raise ConfigError("s3: the export path must name a bucket ('bucket[/prefix]')")
        client = _Client(endpoint_url, key, secret, token, profile, region, anon, verify,
                         ca_bundle, addressing_style, connect_timeout)  # fmt: skip
        self._fs = client.filesystem()
        self._chunk, self._ttl = max(chunk, 5 << 20), attr_ttl
        self._store = Store(self._fs, self._chunk)
        self._check_bucket(endpoint_url)
        self._uid, self._gid = uid, gid
        self._file_mode, self._dir_mode = file_mode & 0o7777, dir_mode & 0o7777
        self._ids = IdMap(self._children, scan_limit=scan_limit)
        self._lock = threading.Lock()
        self._infos: dict[FileId, _Info] = {}
        spools = _spool_root(spool_dir, state_dir)
        try:
            self._spools = Spools(spools)
        except OSError as exc:
            raise ConfigError(f"s3: spool directory {spools} is not usable: {exc}") from exc
        self._ahead = ReadAhead(readahead)
        self._changed: dict[FileId, int] = {}
        self._written: OrderedDict[FileId, tuple[str, int]] = OrderedDict()
        self._deadline = Deadline(op_timeout, name=f"s3 {self._root}")
        self._closed = False

    def _check_bucket(self, endpoint: str | None) -> None:
        """List the export's prefix (not the bucket's root: credentials may be scoped to
        the prefix), so a missing bucket or a refusal stops the server at start."""
        bucket, _, prefix = self._root.partition("/")
        what = f"prefix {prefix!r} of bucket {bucket!r}" if prefix else f"bucket {bucket!r}"
        try:
            self._store.check(self._root)
        except Exception as exc:
            raise ConfigError(
                f"s3 {self._root!r} at {endpoint or 'the default endpoint'}: cannot list "
                f"{what}: {_s3store.describe(exc)}"
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
        self._spools.close()

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
        entry = self._store.head(self._key(rel))
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
        return Attr(Ftype3.DIR, self._dir_mode, 2, self._uid, self._gid, _BLOCK, _BLOCK,
                    (0, 0), fid, t, t, t)  # fmt: skip

    def _file_attr(self, fid: FileId, size: int, mtime_ns: int) -> Attr:
        used = -(-size // _BLOCK) * _BLOCK
        return Attr(Ftype3.REG, self._file_mode, 1, self._uid, self._gid, size, used, (0, 0),
                    fid, mtime_ns, mtime_ns, mtime_ns)  # fmt: skip

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
        """For the version of an object this server wrote, the nanosecond time of its last
        WRITE (what clients saw before the COMMIT, so the COMMIT does not look like another
        client's change); else the store's time (``_mtime``)."""
        mine = self._written.get(fid)
        return mine[1] if mine and mine[0] == info.etag else info.mtime_ns

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

    def _fill(self, fid: FileId, data: bool = True) -> Fill:
        """How to start a spool of ``fid``: with the object's data (unless ``data`` is
        false: the caller is about to truncate it to nothing), and its ETag."""
        rel = self._path(fid)

        def fill(path: str) -> str:
            try:
                info = self._info(fid, rel)
                if info.is_dir:
                    raise NfsError(Nfsstat3.ISDIR)
                if not data or not info.size:
                    return info.etag  # observed before any newer version: safe as a base
                return self._store.get(self._key(rel), path)
            except FileNotFoundError:
                raise NfsError(Nfsstat3.STALE, f"object {fid} is gone") from None

        return fill

    @_guarded
    def write(self, fid: FileId, offset: int, data: memoryview, stable: StableHow) -> StableHow:
        self._spools.write(fid, self._fill(fid), offset, data)
        if stable is not StableHow.UNSTABLE:
            self._upload(fid)
        return stable

    @_guarded
    def commit(self, fid: FileId, offset: int, count: int) -> None:
        self._upload(fid)

    def _upload(self, fid: FileId) -> None:
        """Store the spool as the object, merged over another server's newer version if
        need be; drop it after. A file removed meanwhile loses its spool (STALE)."""
        if fid not in self._spools:
            return
        key = self._key(self._path(fid))
        try:
            done = self._spools.flush(fid, functools.partial(self._store_spool, key))
        except NfsError as exc:
            if exc.status is Nfsstat3.STALE:
                self._spools.drop(fid)
                self._forget(fid)
            raise
        if done is not None:
            mtime_ns, etag = done
            with contextlib.suppress(FileNotFoundError):
                self._remember(fid, self._store.head(key), time.monotonic())
            self._wrote(fid, etag, mtime_ns)

    def _store_spool(self, key: str, spool: Spool) -> str:
        """Upload ``spool`` if the object is still its base version; else replay its edits
        over the current version and try that (bounded). Returns the stored ETag."""
        source, base, merged = spool.path, spool.base, ""
        try:
            for attempt in range(_MERGES + 1):
                try:
                    return self._store.put(key, source, base)
                except Conflict:
                    pass
                if attempt:  # several servers keep committing this object: let them pass
                    time.sleep(random.uniform(0, 0.02 * (1 << attempt)))
                merged = merged or self._spools.scratch()
                base = self._store.get(key, merged)
                spool.edits.replay(spool.path, merged)
                source = merged
        except FileNotFoundError:
            raise NfsError(Nfsstat3.STALE, f"{key} was removed by another server") from None
        finally:
            if merged:
                with contextlib.suppress(OSError):
                    os.unlink(merged)
        raise NfsError(Nfsstat3.JUKEBOX, f"{key} kept changing under {_MERGES} merges")

    def _truncate(self, fid: FileId, size: int) -> None:
        self._spools.resize(fid, self._fill(fid, data=size > 0), size)
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
        if found is None:
            if self._store.create(self._key(rel)):  # only if no other server made it meanwhile
                self._forget(fid)
                self._wrote(fid, _EMPTY_ETAG, time.time_ns())
                self._touched(dir_fid)
                if attrs.size:
                    self._truncate(fid, attrs.size)
                return fid
            self._forget(fid)
            found = self._exists(rel) or _Info(False, 0, 0, "", 0.0)
        if exclusive or found.is_dir:
            raise NfsError(Nfsstat3.EXIST, f"file exists: {name!r}")
        if attrs.size == 0 and (found.size or fid in self._spools):
            self._truncate(fid, 0)
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


def _spool_root(spool_dir: str | None, state_dir: str | None) -> str:
    """Where spool files go: ``spool_dir``, else the export's state directory (what
    ``ferry serve`` passes), else the system's temporary directory."""
    if spool_dir:
        return spool_dir
    if state_dir:
        return os.path.join(state_dir, "spool")
    return os.path.join(tempfile.gettempdir(), "ferry-s3-spool")


@dataclasses.dataclass
class _Client:
    """The client options of an S3 export, checked, and the s3fs file system they make."""

    endpoint: str | None
    key: str | None
    secret: str | None
    token: str | None
    profile: str | None
    region: str | None
    anon: bool
    verify: bool
    ca_bundle: str | None
    addressing_style: str | None
    connect_timeout: float

    def filesystem(self) -> Any:
        """An s3fs file system without listing caches (other servers change the store)."""
        try:
            import s3fs
        except ImportError as exc:
            raise ConfigError("s3: s3fs is not installed (pip install 'ferry-nfs[s3]')") from exc
        _check_conditional_writes()
        if self.token and not (self.key and self.secret):
            raise ConfigError("s3: a session token goes with its key and secret (all three)")
        client: dict[str, Any] = {"endpoint_url": self.endpoint} if self.endpoint else {}
        if self.region:
            client["region_name"] = self.region
        if self.ca_bundle is not None:
            if not self.verify:
                raise ConfigError("s3: ca_bundle and verify = false contradict each other")
            if not os.access(self.ca_bundle, os.R_OK):
                raise ConfigError(f"s3: ca_bundle {self.ca_bundle!r} is not a readable file")
            client["verify"] = self.ca_bundle
        elif not self.verify:
            client["verify"] = False
        config: dict[str, Any] = {
            "connect_timeout": self.connect_timeout, "read_timeout": 60,
            "retries": {"max_attempts": 2, "mode": "standard"},
            # checksums only where S3 requires them: botocore's default (1.36+) sends
            # aws-chunked bodies over TLS, which RGW 16 refuses (MissingContentLength)
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        }  # fmt: skip
        if self.addressing_style is not None:
            if self.addressing_style not in _ADDRESSING:
                raise ConfigError(
                    f"s3: addressing_style must be one of {', '.join(_ADDRESSING)}, "
                    f"not {self.addressing_style!r}"
                )
            config["s3"] = {"addressing_style": self.addressing_style}
        session = {"profile": self.profile} if self.profile else {}
        return s3fs.S3FileSystem(
            key=self.key, secret=self.secret, token=self.token, anon=self.anon,
            client_kwargs=client, config_kwargs=config, use_listings_cache=False,
            skip_instance_cache=True, **session,
        )  # fmt: skip


@functools.cache
def _check_conditional_writes() -> None:
    """botocore must know If-Match on PutObject (1.36 and later); checked once (loading
    the S3 model takes 50-150 ms)."""
    import botocore
    import botocore.session

    model = botocore.session.get_session().get_service_model("s3")
    if "IfMatch" not in model.operation_model("PutObject").input_shape.members:
        raise ConfigError(
            f"s3: botocore {botocore.__version__} cannot send conditional writes (If-Match); "
            "pip install -U 's3fs>=2025.2'"
        )

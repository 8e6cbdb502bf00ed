"""fsspec ``nfs://`` file system over the Ferry client engine.

This module owns the mapping between fsspec's path-and-dict world and NFSv3 handles:

* Paths are absolute server paths, ``/export/dir/file``, exactly the path part of an
  ``nfs://host:port/export/dir/file`` URL (``client.url`` decides the syntax). One instance
  talks to one server as one user (or to a group of servers of one store, failing over
  between them: ``nfs://h1:p1,h2:p2/...`` or the ``servers`` option); it mounts each
  export it meets once, on first use, and finds which prefix is the export from the
  server's MOUNT EXPORT list (else the engine's longest-prefix rule), so ``/export/a/b``
  and ``/export/c`` share one mount.
* The server may come from the URL or from ``host``/``port``/... in ``storage_options``
  with a host-less ``nfs:///export/path`` (as fsspec's other network file systems allow);
  a URL and options that name no server are an error, not a guess.
* All NFS work runs as coroutines on fsspec's IO loop (``fsspec.asyn.get_loop``); the sync
  methods are thin ``_run`` calls, and ``NfsError`` becomes ``OSError`` there, once: its
  ``filename`` is the ``nfs://`` URL of the path asked for (``url_of``), not chained.
* Files are the client's: ``NfsFile`` and every transfer (``pipe``, ``put``, ``cp``) write
  through an ``AsyncFile`` (``client.files``): UNSTABLE WRITEs in flight behind the
  caller, in order, made durable by COMMIT at close and sent again after a server restart
  (RFC 1813 3.3.7); ranges are read with ``read_all`` (pipelined READs straight into the
  result). Like object stores, writing a file creates its missing parent directories.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import errno
import os
import posixpath
import secrets
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ClassVar, TypeVar

from fsspec.asyn import get_loop, sync
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from ferry.client import AsyncFile, AsyncNfsClient, AsyncRpcClient, NfsUrl, parse_url, retry
from ferry.client.exports import list_exports, mount_export
from ferry.client.files import OpenMode, read_all
from ferry.client.nfs import AuthSys, server_ports, settings_given, url_keywords
from ferry.client.url import normalise_path, server_name
from ferry.errors import NfsError, NoSuchExport
from ferry.nfs3.const import CreateMode, Ftype3, Nfsstat3
from ferry.vocab import S_IFMT_OF, SERVER_TIME, Attr, SetAttr

T = TypeVar("T")
Info = dict[str, Any]
CHUNK = 16 << 20  # bytes per streamed step of put/get/cp: bounds memory, keeps calls in flight
_READ, _WRITE = OpenMode.parse("rb"), OpenMode.parse("wb")  # how AsyncFiles are opened
_TYPES = {Ftype3.REG: "file", Ftype3.DIR: "directory", Ftype3.LNK: "link"}


def attr_info(name: str, attr: Attr) -> Info:
    """fsspec's info dict (name, size, type) plus the POSIX fields ``os.stat`` would give."""
    return {
        "name": name,
        "size": attr.size,
        "type": _TYPES.get(attr.type, "other"),
        "mode": S_IFMT_OF.get(attr.type, 0) | attr.mode,
        "uid": attr.uid,
        "gid": attr.gid,
        "nlink": attr.nlink,
        "ino": attr.fileid,
        "mtime": attr.mtime_ns / 1e9,
        "atime": attr.atime_ns / 1e9,
        "ctime": attr.ctime_ns / 1e9,
        "islink": attr.type == Ftype3.LNK,
    }


def _under(path: str, prefix: str) -> bool:
    return prefix == "/" or path == prefix or path.startswith(prefix + "/")


def _rel(path: str, export: str) -> str:
    return path[len(export) :].lstrip("/") if export != "/" else path.lstrip("/")


class NfsFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """An NFSv3 server as an fsspec file system (protocol ``nfs``).

    ``NfsFileSystem(host, port)`` or ``fsspec.filesystem("nfs", host=..., port=...)``
    (there is no default server); ``nfsport``/``mountport``/``uid``/``gid`` as in the URL
    query, ``export`` to skip the export discovery, ``servers`` (``"host[:port]"`` items,
    or one comma-separated string) for more servers of the same store to fail over to, as
    a multi-host URL gives. ``connect()``'s keywords ``hard``, ``timeout``, ``retrans``,
    ``retry_for`` (what to do when the server stops answering, ``ferry.client.retry``),
    ``readahead``, ``rsize``, ``wsize``, ``attr_cache`` and ``read_only`` go to every
    mount; a URL's libnfs arguments (``?timeo=...&readonly``) arrive as these keywords.
    ``auto_traverse_mounts`` (default True, as libnfs): a path goes to the deepest export
    holding it, mounted on first use; False: to an export already mounted if one holds it.
    Instances are cached per arguments, as fsspec does.
    """

    protocol: ClassVar[str] = "nfs"
    root_marker: ClassVar[str] = "/"
    blocksize = 4 << 20

    def __init__(
        self,
        host: str | None = None,
        port: int | None = None,
        *,
        nfsport: int | None = None,
        mountport: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        export: str | None = None,
        servers: str | Iterable[str] = (),
        hard: bool | None = None,
        timeout: float | None = None,
        retrans: int | None = None,
        retry_for: float | None = None,
        readahead: int | None = None,
        rsize: int | None = None,
        wsize: int | None = None,
        attr_cache: float | None = None,
        read_only: bool | None = None,
        auto_traverse_mounts: bool = True,
        **storage_options: Any,
    ) -> None:
        super().__init__(**storage_options)
        if not host:
            raise ValueError(
                "nfs: which server? Give nfs://HOST[:PORT]/path, or host= (and port=) in "
                "storage_options with nfs:///path"
            )
        self.url = NfsUrl(host, "/", port, nfsport, mountport, uid, gid).with_servers(servers)
        given = {
            "hard": hard, "timeout": timeout, "retrans": retrans, "retry_for": retry_for,
            "readahead": readahead, "rsize": rsize, "wsize": wsize, "attr_cache": attr_cache,
            "read_only": read_only,
        }  # fmt: skip
        self.client_options: dict[str, Any] = settings_given(given)
        self.traverse = auto_traverse_mounts
        self.loop = get_loop()
        self._exports: list[str] | None = [normalise_path(export)] if export else None
        self._mounts: dict[str, AsyncNfsClient] = {}
        self._lock: asyncio.Lock | None = None
        weakref.finalize(self, _close_all, self.loop, self._mounts)

    # -- URLs ------------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: str | list[str]) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = str(path)
        if path.startswith("nfs://"):
            return _parse(path).path
        return normalise_path(path)  # a plain path: "?" is a glob character, not a query

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        """Constructor arguments from a URL (none from a plain path, nor a host from
        ``nfs:///path``: storage_options say it); hosts after the first become
        ``servers``, the libnfs arguments the keywords they stand for."""
        if not str(path).startswith("nfs://"):
            return {}
        u = _parse(path)
        keys = ("port", "nfsport", "mountport", "uid", "gid")
        # host first: fsspec's instance cache key depends on the order of the arguments
        kwargs: dict[str, Any] = {"host": u.host} if u.host != _NO_HOST else {}
        kwargs |= {k: getattr(u, k) for k in keys if getattr(u, k) is not None}
        if u.more:
            kwargs["servers"] = [server_name(host, port) for host, port in u.more]
        if not u.auto_traverse_mounts:
            kwargs["auto_traverse_mounts"] = False
        return {**kwargs, **url_keywords(u)}

    def unstrip_protocol(self, name: str) -> str:
        return str(NfsUrl(**{**_fields(self.url), "path": self._strip_protocol(name)}))

    def url_of(self, path: str) -> str:
        """The URL of a server path, as errors (and ``UPath``) name it: ``unstrip_protocol``
        without the default ``version=3``."""
        url = self.unstrip_protocol(path)
        return url.replace("?version=3&", "?").removesuffix("?version=3")

    # -- running coroutines ----------------------------------------------------------------

    def _run(self, path: str, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the IO loop; a failure becomes the OSError naming the
        URL of ``path`` (see ``_oserror``)."""
        try:
            result: T = _sync(self.loop, func, *args)
        except (NfsError, OSError) as exc:
            if (error := self._oserror(exc, path)) is exc:
                raise
            raise error from None
        return result

    async def _named(self, path: str, aw: Awaitable[T]) -> T:
        """``await aw``, a failure naming the URL of ``path`` (for one of many calls run
        together, so that the error names the path that failed)."""
        try:
            return await aw
        except (NfsError, OSError) as exc:
            if (error := self._oserror(exc, path)) is exc:
                raise
            raise error from None

    def _oserror(self, exc: NfsError | OSError, path: str) -> OSError:
        """The OSError to raise for ``exc``: an NFS status as ``os`` would raise it, an
        OSError with an errno renamed to the URL of ``path``; other OSErrors (timeouts,
        lost connections: no errno) and those already naming a URL unchanged."""
        if isinstance(exc, NfsError):
            return exc.to_oserror(self.url_of(path))
        if exc.errno is None or str(exc.filename).startswith("nfs://"):
            return exc
        if isinstance(exc, NoSuchExport):  # keeps the list of exports its message gives
            return NoSuchExport(self.url_of(path), exc.exports)
        return OSError(exc.errno, exc.strerror, self.url_of(path))

    def close(self) -> None:
        """Unmount every export and close the connections (the instance stays usable)."""
        sync(self.loop, _close_mounts, self._mounts, timeout=30)

    # -- mounting --------------------------------------------------------------------------

    async def _where(self, path: str) -> tuple[AsyncNfsClient, str]:
        """The mounted export holding ``path`` (mounting it if needed) and the rest."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            export = self._mounted(path)
            if export is None or (self.traverse and self._deeper(path, export)):
                export = await self._mount(path)
        return self._mounts[export], _rel(path, export)

    def _deeper(self, path: str, export: str) -> bool:
        """Does a listed export below ``export`` hold ``path`` (a nested export)?"""
        return any(_under(path, e) and len(e) > len(export) for e in self._exports or [])

    def _mounted(self, path: str) -> str | None:
        found = [e for e in self._mounts if _under(path, e)]
        return max(found, key=len) if found else None

    async def _mount(self, path: str) -> str:
        if self._exports is None:
            self._exports = await self._list_exports(path)
        found = [e for e in self._exports if _under(path, e)]
        export = max(found, key=len) if found else await self._probe(path)
        url = NfsUrl(**{**_fields(self.url), "path": export})
        self._mounts[export] = await AsyncNfsClient.connect(
            url, export=export, **self.client_options
        )
        return export

    async def _probe(self, path: str) -> str:
        """No listed export holds ``path``: let MNT decide (the longest prefix it accepts;
        ``NoSuchExport`` if none), leaving the rest unlooked-up (a file to create, say)."""
        base, u = AuthSys(), self.url
        auth = AuthSys(base.uid if u.uid is None else u.uid, base.gid if u.gid is None else u.gid)
        cred = auth.credential()
        return (await self._on_mount_port(lambda rpc: mount_export(rpc, cred, path), path))[1]

    async def _list_exports(self, path: str = "/") -> list[str]:
        """MOUNT EXPORT (RFC 1813 section 5.2.5): the directories the server exports."""
        return await self._on_mount_port(list_exports, path)

    async def _on_mount_port(
        self, call: Callable[[AsyncRpcClient], Awaitable[T]], path: str = "/"
    ) -> T:
        """``call`` on a connection to the MOUNT service of the first server that answers,
        with the retry policy of this file system (``path``: the one asked about, for the
        messages)."""
        options = retry.resolve(None, **{k: self.client_options.get(k) for k in retry.SETTINGS})
        url = dataclasses.replace(self.url, path=path)
        mnt = [(host, port) for host, _, port in await server_ports(url, options)]
        rpc = AsyncRpcClient(*mnt[0], options, fallbacks=mnt[1:])
        await rpc.connect()
        try:
            return await call(rpc)
        finally:
            await rpc.close()

    def _pseudo_dir(self, path: str) -> bool:
        """Is ``path`` a directory above the exports (``/`` or ``/srv`` for ``/srv/x``)?"""
        if self._exports is None:
            _sync(self.loop, self._load_exports, path)
        exports = self._exports or []
        above = any(_under(e, path) and e != path for e in exports)
        return above and not any(_under(path, e) for e in exports)  # not in an outer export

    async def _load_exports(self, path: str = "/") -> None:
        if self._exports is None:
            self._exports = await self._list_exports(path)

    # -- metadata --------------------------------------------------------------------------

    def info(self, path: str, **kwargs: Any) -> Info:
        path = self._strip_protocol(path)
        if self._pseudo_dir(path):
            return {"name": path, "size": 0, "type": "directory"}
        return self._run(path, self._info, path)

    async def _info(self, path: str) -> Info:
        client, rel = await self._where(path)
        _, attr = await client.resolve(rel)
        if attr.type == Ftype3.LNK:  # describe the target, as os.stat does, if it exists
            try:
                info = attr_info(path, (await client.resolve(rel, True))[1])
            except OSError:
                return attr_info(path, attr)
            return {**info, "islink": True}
        return attr_info(path, attr)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        if self._pseudo_dir(path):
            entries = self._pseudo_entries(path)
        else:
            entries = self._run(path, self._ls, path)
        return entries if detail else [e["name"] for e in entries]

    def _pseudo_entries(self, path: str) -> list[Info]:
        names = {
            posixpath.join(path, e[len(path) :].lstrip("/").split("/")[0])
            for e in self._exports or []
            if _under(e, path) and e != path
        }
        return [{"name": n, "size": 0, "type": "directory"} for n in sorted(names)]

    async def _ls(self, path: str) -> list[Info]:
        client, rel = await self._where(path)
        fh, attr = await client.resolve(rel, True)
        if attr.type != Ftype3.DIR:
            return [await self._info(path)]
        out = []
        for e in await client.scandir(rel):
            name = posixpath.join(path, e.name)
            if e.attr is None or e.attr.type == Ftype3.LNK:
                out.append(await self._info(name))
            else:
                out.append(attr_info(name, e.attr))
        return sorted(out, key=lambda i: str(i["name"]))

    def created(self, path: str) -> datetime.datetime:
        """NFSv3 has no birth time: the change time (ctime) is the closest it offers."""
        return _utc(self.info(path)["ctime"])

    def modified(self, path: str) -> datetime.datetime:
        return _utc(self.info(path)["mtime"])

    # -- directories -----------------------------------------------------------------------

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        if self.exists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), self.url_of(path))
        self._run(path, self._makedirs, path, create_parents)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        path = self._strip_protocol(path)
        if not exist_ok and self.exists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), self.url_of(path))
        if not self._pseudo_dir(path):
            self._run(path, self._makedirs, path, True)

    async def _makedirs(self, path: str, parents: bool = True) -> bytes:
        """LOOKUP each component, MKDIR the missing ones; the handle of ``path``."""
        client, rel = await self._where(path)
        fh, parts = client.root, [p for p in rel.split("/") if p]
        for i, name in enumerate(parts):
            try:
                res = await client.nfs.lookup(fh, name)
                sub, attr = res.object, res.obj_attributes or await client.nfs.getattr(res.object)
            except NfsError as exc:
                if exc.status != Nfsstat3.NOENT or (i < len(parts) - 1 and not parents):
                    raise
                sub, attr = await self._mkdir_one(client, fh, name)
            if attr.type != Ftype3.DIR:
                raise NfsError(Nfsstat3.NOTDIR, f"not a directory: {name}")
            fh = sub
        return fh

    async def _mkdir_one(self, client: AsyncNfsClient, fh: bytes, name: str) -> tuple[bytes, Attr]:
        try:
            res = await client.nfs.mkdir(fh, name)
        except NfsError as exc:  # made by someone else meanwhile
            if exc.status != Nfsstat3.EXIST:
                raise
        else:
            if res.obj is not None:
                return res.obj, res.obj_attributes or await client.nfs.getattr(res.obj)
        found = await client.nfs.lookup(fh, name)
        return found.object, found.obj_attributes or await client.nfs.getattr(found.object)

    def rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        self._run(path, self._unlink, path, True)

    def rm_file(self, path: str) -> None:
        path = self._strip_protocol(path)
        self._run(path, self._unlink, path, False)

    async def _unlink(self, path: str, is_dir: bool) -> None:
        client, rel = await self._where(path)
        parent, _, name = rel.rpartition("/")
        if not name:
            raise NfsError(Nfsstat3.ACCES, "cannot remove the export itself")
        dirfh = (await client.resolve(parent, True))[0]
        await (client.nfs.rmdir if is_dir else client.nfs.remove)(dirfh, name)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Remove files (and, with ``recursive``, directories), deepest first, each depth's
        removals in flight together."""
        if isinstance(path, str) and not self._has_magic(path):
            self.info(path)  # a missing path: FileNotFoundError naming it, with its errno
        paths = self.expand_path(path, recursive=recursive, maxdepth=maxdepth)
        infos = {p: self.info(p) for p in paths}
        if dirs := [p for p, i in infos.items() if i["type"] == "directory" and not recursive]:
            text = "Is a directory (use recursive=True)"
            raise IsADirectoryError(errno.EISDIR, text, self.url_of(dirs[0]))
        by_depth: dict[int, list[str]] = {}
        for p in paths:
            by_depth.setdefault(p.count("/"), []).append(p)
        for depth in sorted(by_depth, reverse=True):
            group = [(p, infos[p]["type"] == "directory") for p in by_depth[depth]]
            removals = [self._named(p, self._unlink(p, d)) for p, d in group]
            self._run(group[0][0], _gather, removals)

    def mv(self, path1: Any, path2: Any, recursive: bool = False, **kwargs: Any) -> None:
        """RENAME when one path moves within one export (into ``path2`` if that is a
        directory, like ``mv``); otherwise fsspec's copy-then-delete."""
        if isinstance(path1, str) and isinstance(path2, str) and not self._has_magic(path1):
            src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
            if self.isdir(dst) and not _under(src, dst):
                dst = posixpath.join(dst, posixpath.basename(src))
            if self._same_export(src, dst):
                self._run(src, self._rename, src, dst)
                return
        super().mv(path1, path2, recursive=recursive, **kwargs)

    def _has_magic(self, path: str) -> bool:
        return any(c in path for c in "*?[")

    def _same_export(self, a: str, b: str) -> bool:
        self.info(a)  # mounts the export of a (and fails early if a is missing)
        return (e := self._mounted(a)) is not None and _under(b, e) and self._mounted(b) == e

    async def _rename(self, src: str, dst: str) -> None:
        client, rel1 = await self._where(src)
        _, rel2 = await self._where(dst)
        (p1, _, n1), (p2, _, n2) = rel1.rpartition("/"), rel2.rpartition("/")
        d1 = (await client.resolve(p1, True))[0]
        d2 = (await client.resolve(p2, True))[0]
        await client.nfs.rename(d1, n1, d2, n2)

    # -- file contents ---------------------------------------------------------------------

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        path = self._strip_protocol(path)
        return self._run(path, self._cat, path, start, end)

    async def _cat(self, path: str, start: int | None, end: int | None) -> bytes:
        client, fh, attr = await self._open_read(path)
        size = attr.size
        lo = 0 if start is None else (max(0, size + start) if start < 0 else start)
        hi = size if end is None else (max(0, size + end) if end < 0 else min(end, size))
        return await read_all(client.nfs, fh, hi - lo, lo, to_eof=False) if hi > lo else b""

    async def _open_read(self, path: str) -> tuple[AsyncNfsClient, bytes, Attr]:
        client, rel = await self._where(path)
        fh, attr = await client.resolve(rel, True)
        if attr.type == Ftype3.DIR:
            raise NfsError(Nfsstat3.ISDIR)
        return client, fh, attr

    async def _reader(self, path: str) -> AsyncFile:
        """``path`` opened for reading through the client's file engine (read-ahead)."""
        client, fh, attr = await self._open_read(path)
        return AsyncFile(client.nfs, fh, path, attr, _READ, client.file_options, client.buffers)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        self._run(path, self._pipe, path, bytes(value), mode == "create")

    async def _pipe(self, path: str, data: bytes, exclusive: bool) -> None:
        async with await self._create(path, exclusive) as file:
            await file.pwrite(0, data)

    async def _create(self, path: str, exclusive: bool, truncate: bool = True) -> AsyncFile:
        """CREATE ``path`` (``create_exclusive`` if ``exclusive``: safe when resent; emptied
        if ``truncate``), making its missing parents; the file open for writing (close it:
        that COMMITs)."""
        parent, _, name = path.rpartition("/")
        dirfh = await self._makedirs(parent or "/")
        client, _ = await self._where(path)
        if exclusive:
            res = await client.nfs.create_exclusive(dirfh, name, SetAttr(mode=0o644))
        else:
            attrs = SetAttr(mode=0o644, size=0 if truncate else None)
            res = await client.nfs.create(dirfh, name, attrs, CreateMode.UNCHECKED)
        fh, attr = res.obj, res.obj_attributes
        if fh is None:
            found = await client.nfs.lookup(dirfh, name)
            fh, attr = found.object, found.obj_attributes
        attr = attr or await client.nfs.getattr(fh)
        return AsyncFile(client.nfs, fh, path, attr, _WRITE, client.file_options, client.buffers)

    def touch(self, path: str, truncate: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        self._run(path, self._touch, path, truncate)

    async def _touch(self, path: str, truncate: bool) -> None:
        async with await self._create(path, False, truncate) as file:
            now = SetAttr(atime_ns=SERVER_TIME, mtime_ns=SERVER_TIME)
            await file.nfs.setattr(file.fh, now)

    def cp_file(
        self, path1: str, path2: str, callback: Callback = DEFAULT_CALLBACK, **kwargs: Any
    ) -> None:
        """NFSv3 has no server-side copy: read and write back, CHUNK at a time."""
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        if self.isdir(src):
            self.makedirs(dst, exist_ok=True)
            return
        self._run(src, self._copy, src, dst, callback)

    async def _copy(self, src: str, dst: str, callback: Callback) -> None:
        client, fh, attr = await self._open_read(src)
        size = attr.size
        callback.set_size(size)

        async def read(offset: int) -> bytes:
            return await read_all(client.nfs, fh, min(CHUNK, size - offset), offset, to_eof=False)

        async with await self._create(dst, False) as file:
            await _stream(read, file.pwrite, size, callback)

    def put_file(
        self,
        lpath: str,
        rpath: str,
        callback: Callback = DEFAULT_CALLBACK,
        mode: str = "overwrite",
        **kwargs: Any,
    ) -> None:
        rpath = self._strip_protocol(rpath)
        if os.path.isdir(lpath):
            self.makedirs(rpath, exist_ok=True)
            return
        self._run(rpath, self._put, lpath, rpath, callback, mode == "create")

    async def _put(self, lpath: str, rpath: str, callback: Callback, exclusive: bool) -> None:
        with open(lpath, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            callback.set_size(size)

            async def read(offset: int) -> bytes:
                return await asyncio.to_thread(os.pread, f.fileno(), CHUNK, offset)

            async with await self._create(rpath, exclusive) as file:
                await _stream(read, file.pwrite, size, callback)

    def get_file(
        self,
        rpath: str,
        lpath: Any,
        callback: Callback = DEFAULT_CALLBACK,
        outfile: Any = None,
        **kwargs: Any,
    ) -> None:
        rpath = self._strip_protocol(rpath)
        if outfile is None and self.isdir(rpath):
            os.makedirs(lpath, exist_ok=True)
            return
        if outfile is not None:
            self._run(rpath, self._get, rpath, outfile, callback)
            return
        os.makedirs(os.path.dirname(os.path.abspath(lpath)), exist_ok=True)
        with open(lpath, "wb") as out:
            self._run(rpath, self._get, rpath, out, callback)

    async def _get(self, rpath: str, out: Any, callback: Callback) -> None:
        client, fh, attr = await self._open_read(rpath)
        size = attr.size
        callback.set_size(size)

        async def read(offset: int) -> bytes:
            return await read_all(client.nfs, fh, min(CHUNK, size - offset), offset, to_eof=False)

        async def write(offset: int, data: bytes) -> int:
            return await asyncio.to_thread(out.write, data)

        await _stream(read, write, size, callback)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> NfsFile:
        return NfsFile(self, path, mode, block_size, autocommit, cache_options, **kwargs)


class _Timeout:
    """A TimeoutError carried out of fsspec's ``sync``, which would replace it by an empty
    FSTimeoutError (losing the client's message: which call, which server, how long)."""

    def __init__(self, exc: TimeoutError) -> None:
        self.exc = exc


async def _keeping_timeouts(func: Callable[..., Awaitable[T]], *args: Any) -> T | _Timeout:
    try:
        return await func(*args)
    except TimeoutError as exc:
        return _Timeout(exc)


def _sync(loop: asyncio.AbstractEventLoop, func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """fsspec's ``sync``, raising a timeout as it was raised."""
    result = sync(loop, _keeping_timeouts, func, *args)
    if isinstance(result, _Timeout):
        raise result.exc
    return result  # type: ignore[no-any-return]


async def _stream(
    read: Callable[[int], Awaitable[bytes]],
    write: Callable[[int, bytes], Awaitable[object]],
    size: int,
    callback: Callback = DEFAULT_CALLBACK,
) -> None:
    """Copy ``size`` bytes CHUNK by CHUNK, reading the next chunk while this one is
    written, so neither side waits for the other; stops early at end of file."""
    offset = 0
    nxt = asyncio.ensure_future(read(0)) if size else None
    try:
        while nxt is not None:
            data = await nxt
            nxt = None
            if data and offset + len(data) < size:
                nxt = asyncio.ensure_future(read(offset + len(data)))
            await write(offset, data)
            offset += len(data)
            callback.relative_update(len(data))
    finally:
        if nxt is not None:  # a failed write or a cancel: the read ahead goes too
            nxt.cancel()


class NfsFile(AbstractBufferedFile):  # type: ignore[misc]
    """A file opened through ``NfsFileSystem.open``, over the client's file engine (an
    ``AsyncFile``: read-ahead, and UNSTABLE WRITEs behind the writer, in order, COMMITted
    at close). As with ``open()``, the file is created (and for ``wb`` emptied, for ``xb``
    refused if it exists) when opened."""

    DEFAULT_BLOCK_SIZE = 4 << 20
    fs: NfsFileSystem

    def __init__(
        self,
        fs: NfsFileSystem,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.target = path
        start = 0
        if mode == "rb":
            self._file = fs._run(path, fs._reader, path)
            kwargs["size"] = self._file.size
        elif mode in ("wb", "xb", "ab"):
            where = path if autocommit else _temp_name(path)
            self._file = fs._run(path, fs._create, where, mode == "xb", mode == "wb")
            start = self._file.size if mode == "ab" else 0
            path = where
        super().__init__(fs, path, mode, block_size or "default", autocommit,
                         cache_options=cache_options, **kwargs)  # fmt: skip
        self._start = self.loc = start

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self.fs._run(self.path, self._file.read_at, start, end - start)

    def _initiate_upload(self) -> None:
        self.offset = self._start

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        self.fs._run(self.path, self._write, self.offset, data, final)
        if final and self.autocommit:
            self.commit()
        return True

    async def _write(self, offset: int, data: bytes, final: bool) -> None:
        await self._file.pwrite(offset, data)
        if final:
            await self._file.close()

    def close(self) -> None:
        """As fsspec's (a file being written is flushed, its engine closed with the last
        chunk); a file being read lets go of what it read ahead."""
        file = getattr(self, "_file", None)  # None if opening failed
        try:
            super().close()
        finally:
            if file is not None and file.mode.readable and not file.closed:
                self.fs._run(self.path, file.close)

    def commit(self) -> None:
        """Autocommit: nothing left to do. In a transaction: move the temp file in place."""
        if self.path != self.target:
            self.fs.mv(self.path, self.target)

    def discard(self) -> None:
        if self.path != self.target:
            self.fs.rm_file(self.path)


def _temp_name(path: str) -> str:
    parent, _, name = path.rpartition("/")
    return f"{parent}/.{name}.ferry-{secrets.token_hex(4)}"


_NO_HOST = "host-from-storage-options"


def _parse(url: str) -> NfsUrl:
    """``parse_url``, also of a host-less ``nfs:///path``, whose host is then ``_NO_HOST``
    (the server comes from storage_options, as with fsspec's other network file systems)."""
    if url.startswith("nfs:///"):
        return parse_url(f"nfs://{_NO_HOST}{url[len('nfs://') :]}")
    return parse_url(url)


def _fields(u: NfsUrl) -> dict[str, Any]:
    keys = ("host", "path", "port", "nfsport", "mountport", "uid", "gid", "version", "more")
    return {k: getattr(u, k) for k in keys}


def _utc(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


async def _gather(coros: list[Coroutine[Any, Any, Any]]) -> None:
    await asyncio.gather(*coros)


async def _close_mounts(mounts: dict[str, AsyncNfsClient]) -> None:
    clients = list(mounts.values())
    mounts.clear()
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


def _close_all(loop: asyncio.AbstractEventLoop, mounts: dict[str, AsyncNfsClient]) -> None:
    """Finaliser: close what is still open, if the IO loop still runs (not at shutdown)."""
    if mounts and loop.is_running():
        with contextlib.suppress(Exception):  # best effort while being collected
            sync(loop, _close_mounts, mounts, timeout=5)

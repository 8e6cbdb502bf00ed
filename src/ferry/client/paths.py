"""The path-level asyncio client: ``AsyncNfsClient``, the ``os``-like face of the engine.

Paths are ``/``-separated and relative to the mounted directory (a leading ``/`` is that
directory too); the parent of a path is always resolved following symlinks, the last
component as each ``os`` function does. ``stat``/``lstat`` give ``os.stat_result``.
Every method raises the ``OSError`` subclass ``os`` would (``FileNotFoundError``,
``PermissionError``, ...) with the errno, ``os.strerror``'s text and the path (both paths
for two-path calls), not chained to the ``NfsError`` it comes from, which never escapes
here. ``connect_async`` and ``open`` return an ``Opening``: await it, or ``async with``.

The client holds the procedure layer, ``client.nfs`` (``NfsProcedures``: one method per
NFS procedure, on file handles, raising ``NfsError``), and is not one: ``client.mkdir(path,
mode)`` is the ``os`` call, ``client.nfs.mkdir(dirfh, name, attrs)`` the MKDIR procedure,
so each name means one thing with one signature.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Self, Unpack

from ferry.errors import NfsError
from ferry.nfs3 import types as t
from ferry.nfs3.const import Access, CreateMode, Ftype3, Nfsstat3
from ferry.vocab import Attr, SetAttr

from .aio import AsyncRpcClient, RpcStats
from .buffers import ChunkBuffers
from .files import AsyncFile, FileOptions, OpenMode, read_all, write_all
from .nfs import MAX_DIR_PAGES, ConnectOptions, NfsDirEntry, NfsProcedures, _parts, _str
from .opening import Opening
from .url import NfsUrl

Walk = tuple[str, list[str], list[str]]


def _split(path: str) -> tuple[str, str]:
    parts = _parts(path)
    if not parts or parts[-1] == "..":
        raise OSError(22, "path names no entry of a directory", path)  # EINVAL
    return "/".join(parts[:-1]), parts[-1]


def _join(top: str, name: str) -> str:
    return f"{top.rstrip('/')}/{name}" if top else name


class AsyncNfsClient:
    """A mounted NFSv3 export, by path: ``async with connect_async(url) as c`` (or
    ``await AsyncNfsClient.connect(url)``, closed by the caller). The procedure calls, on
    file handles, are ``c.nfs`` (an ``NfsProcedures``)."""

    def __init__(self, nfs: NfsProcedures, file_options: FileOptions | None = None) -> None:
        self.nfs = nfs
        if file_options is None and nfs.readahead is not None:
            file_options = FileOptions(readahead=nfs.readahead)
        self.file_options = file_options or FileOptions()

    @classmethod
    async def connect(cls, url: str | NfsUrl, **kw: Unpack[ConnectOptions]) -> Self:
        """Mount ``url``: ``NfsProcedures.connect`` (its keywords), wrapped for paths."""
        return cls(await NfsProcedures.connect(url, **kw))

    async def close(self) -> None:
        """Unmount and close the connections (``NfsProcedures.close``)."""
        await self.nfs.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- what the mount is (from ``nfs``) ---------------------------------------------

    @property
    def root(self) -> bytes:
        """The handle of the mounted directory."""
        return self.nfs.root

    @property
    def export(self) -> str:
        return self.nfs.export

    @property
    def subpath(self) -> str:
        """The file the URL named beyond the export ("" when it named a directory)."""
        return self.nfs.subpath

    @property
    def rsize(self) -> int:
        return self.nfs.rsize

    @property
    def wsize(self) -> int:
        return self.nfs.wsize

    @property
    def rpc(self) -> AsyncRpcClient:
        """The NFS connection (``rpc.stats``: what went over the wire)."""
        return self.nfs.rpc

    @property
    def stats(self) -> RpcStats:
        return self.nfs.rpc.stats

    @functools.cached_property
    def buffers(self) -> ChunkBuffers:
        """The pool READ replies of read-ahead land in, shared by this client's open files
        (made on first use, once rsize is known)."""
        return ChunkBuffers(self.nfs.rsize)

    async def resolve(self, path: str, follow_symlinks: bool = False) -> tuple[bytes, Attr]:
        """Handle and attributes of ``path`` (``NfsProcedures.resolve``): the way from
        paths to the procedure calls of ``nfs``."""
        return await self.nfs.resolve(path, follow_symlinks)

    # -- lookups ------------------------------------------------------------------------

    async def stat(self, path: str, follow_symlinks: bool = True) -> os.stat_result:
        """``os.stat`` of ``path``: a symlink is followed unless ``follow_symlinks`` is
        false. ``st_dev`` is the NFS fsid; ``resolve`` gives the NFS ``Attr`` itself."""
        return (await self.resolve(path, follow_symlinks))[1].to_stat_result()

    async def lstat(self, path: str) -> os.stat_result:
        """``os.lstat``: the attributes of ``path`` itself, a symlink not followed."""
        return await self.stat(path, follow_symlinks=False)

    async def _dir(self, path: str) -> bytes:
        fh, attr = await self.resolve(path, follow_symlinks=True)
        if attr.type != Ftype3.DIR:
            raise NotADirectoryError(20, "not a directory", path)
        return fh

    async def _parent(self, path: str) -> tuple[bytes, str]:
        """The parent's handle and the last name; errors name the whole path, as os does."""
        parent, name = _split(path)
        try:
            return await self._dir(parent), name
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, path) from None

    async def _type(self, path: str) -> Ftype3 | None:
        try:
            return (await self.resolve(path, follow_symlinks=True))[1].type
        except (FileNotFoundError, NotADirectoryError):
            return None

    async def exists(self, path: str) -> bool:
        """Like ``os.path.exists``: symlinks followed, a dangling one does not exist."""
        return await self._type(path) is not None

    async def isdir(self, path: str) -> bool:
        return await self._type(path) == Ftype3.DIR

    async def isfile(self, path: str) -> bool:
        return await self._type(path) == Ftype3.REG

    # -- directories --------------------------------------------------------------------

    async def listdir(self, path: str = "") -> list[str]:
        """Names in a directory (READDIR over as many calls as needed), without . and .."""
        fh = await self._dir(path)
        names: list[str] = []
        cookie, verf = 0, t.COOKIEVERF_ZERO
        for _ in range(MAX_DIR_PAGES):
            try:
                res = await self.nfs.readdir(fh, cookie, verf)
            except NfsError as exc:
                raise exc.to_oserror(path) from None
            names += [_str(e.name) for e in res.entries if e.name not in (b".", b"..")]
            if res.eof or not res.entries:
                return names
            cookie, verf = res.entries[-1].cookie, res.cookieverf
        raise OSError(5, "directory listing does not end", path)

    async def iter_scandir(self, path: str = "") -> AsyncIterator[NfsDirEntry]:
        """Entries with handles and attributes, page by page (READDIRPLUS with cookies)."""
        fh = await self._dir(path)
        cookie, verf = 0, t.COOKIEVERF_ZERO
        for _ in range(MAX_DIR_PAGES):
            try:
                res = await self.nfs.readdirplus(fh, cookie, verf)
            except NfsError as exc:
                raise exc.to_oserror(path) from None
            for e in res.entries:
                if e.name not in (b".", b".."):
                    yield NfsDirEntry(_str(e.name), e.fileid, e.handle, e.attr)
            if res.eof or not res.entries:
                return
            cookie, verf = res.entries[-1].cookie, res.cookieverf
        raise OSError(5, "directory listing does not end", path)

    async def scandir(self, path: str = "") -> list[NfsDirEntry]:
        return [e async for e in self.iter_scandir(path)]

    async def walk(
        self,
        top: str = "",
        topdown: bool = True,
        onerror: Callable[[OSError], object] | None = None,
        followlinks: bool = False,
    ) -> AsyncGenerator[Walk, None]:
        """Like ``os.walk``, one READDIRPLUS listing per directory. Top-down, callers may
        prune ``dirnames`` in place; a symlink to a directory is listed as a directory and
        entered only with ``followlinks``."""
        todo: list[tuple[str, bool]] = [(top, False)]  # (dir, already listed: yield it)
        done: dict[str, Walk] = {}
        for _ in range(1 << 30):  # bounded by the tree; each round pops one entry
            if not todo:
                return
            path, listed = todo.pop()
            if listed:
                yield done.pop(path)
                continue
            walked = await self._walk_one(path, onerror, followlinks)
            if walked is None:
                continue
            step, enter = walked
            if topdown:
                yield step
            else:
                done[path] = step
                todo.append((path, True))
            entered = [n for n in step[1] if n in enter]  # pruning happened in place
            todo.extend((_join(path, n), False) for n in reversed(entered))

    async def _walk_one(
        self, path: str, onerror: Callable[[OSError], object] | None, followlinks: bool
    ) -> tuple[Walk, set[str]] | None:
        dirs: list[str] = []
        files: list[str] = []
        enter: set[str] = set()
        try:
            entries = await self.scandir(path)
        except OSError as exc:
            if onerror is not None:
                onerror(exc)
            return None
        for e in entries:
            kind = e.attr.type if e.attr is not None else None
            if kind == Ftype3.LNK or kind is None:
                kind = await self._type(_join(path, e.name))
                if kind == Ftype3.DIR and followlinks:
                    enter.add(e.name)
            elif kind == Ftype3.DIR:
                enter.add(e.name)
            (dirs if kind == Ftype3.DIR else files).append(e.name)
        return (path, dirs, files), enter

    async def mkdir(self, path: str, mode: int = 0o777) -> None:
        """Like ``os.mkdir``; ``nfs.mkdir`` is the MKDIR procedure."""
        dirfh, leaf = await self._parent(path)
        try:
            await self.nfs.mkdir(dirfh, leaf, SetAttr(mode=mode & 0o7777))
        except NfsError as exc:
            raise exc.to_oserror(path) from None

    async def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        """Like ``os.makedirs``: create the missing directories on the way, then ``path``."""
        parts = _parts(path)
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            try:
                await self.mkdir(sub, mode)
            except FileExistsError:
                if i == len(parts) and not (exist_ok and await self.isdir(sub)):
                    raise
                if i < len(parts) and not await self.isdir(sub):
                    raise NotADirectoryError(20, "not a directory", sub) from None

    async def remove(self, path: str) -> None:
        """Like ``os.remove``; ``nfs.remove`` is the REMOVE procedure."""
        dirfh, leaf = await self._parent(path)
        try:
            await self.nfs.remove(dirfh, leaf)
        except NfsError as exc:
            raise exc.to_oserror(path) from None

    async def unlink(self, path: str) -> None:
        await self.remove(path)

    async def rmdir(self, path: str) -> None:
        """Like ``os.rmdir``: a non-empty directory raises OSError(ENOTEMPTY); ``nfs.rmdir``
        is the RMDIR procedure."""
        dirfh, leaf = await self._parent(path)
        try:
            await self.nfs.rmdir(dirfh, leaf)
        except NfsError as exc:
            raise exc.to_oserror(path) from None

    async def rename(self, src: str, dst: str) -> None:
        """Like ``os.rename``, replacing ``dst`` if it exists (RENAME is atomic, RFC 1813
        section 3.3.14); ``nfs.rename`` is the RENAME procedure."""
        (sdir, sname), (ddir, dname) = await self._parent(src), await self._parent(dst)
        try:
            await self.nfs.rename(sdir, sname, ddir, dname)
        except NfsError as exc:
            raise exc.to_oserror(src, dst) from None

    async def replace(self, src: str, dst: str) -> None:
        await self.rename(src, dst)

    # -- links --------------------------------------------------------------------------

    async def symlink(self, target: str, path: str) -> None:
        """Like ``os.symlink`` (target first): ``path`` becomes a link to ``target``;
        ``nfs.symlink`` is the SYMLINK procedure."""
        dirfh, leaf = await self._parent(path)
        try:
            await self.nfs.symlink(dirfh, leaf, target, SetAttr(mode=0o777))
        except NfsError as exc:
            raise exc.to_oserror(path) from None

    async def readlink(self, path: str) -> str:
        """Like ``os.readlink``; ``nfs.readlink`` is the READLINK procedure (bytes)."""
        handle, attr = await self.resolve(path)
        if attr.type != Ftype3.LNK:
            raise OSError(22, "not a symbolic link", path)  # EINVAL, as os.readlink
        try:
            return _str(await self.nfs.readlink(handle))
        except NfsError as exc:
            raise exc.to_oserror(path) from None

    async def link(self, src: str, dst: str) -> None:
        """Like ``os.link`` (a hard link); ``nfs.link`` is the LINK procedure."""
        srcfh, _ = await self.resolve(src)
        dirfh, leaf = await self._parent(dst)
        try:
            await self.nfs.link(srcfh, dirfh, leaf)
        except NfsError as exc:
            raise exc.to_oserror(src, dst) from None

    # -- attributes ---------------------------------------------------------------------

    async def _setattr(self, path: str, attrs: SetAttr, follow: bool = True) -> None:
        fh, _ = await self.resolve(path, follow_symlinks=follow)
        try:
            await self.nfs.setattr(fh, attrs)
        except NfsError as exc:
            raise exc.to_oserror(path) from None

    async def chmod(self, path: str, mode: int) -> None:
        await self._setattr(path, SetAttr(mode=mode & 0o7777))

    async def chown(self, path: str, uid: int, gid: int) -> None:
        """Like ``os.chown``: -1 leaves that id unchanged."""
        await self._setattr(
            path, SetAttr(uid=None if uid < 0 else uid, gid=None if gid < 0 else gid)
        )

    async def utime(
        self,
        path: str,
        times: tuple[float, float] | None = None,
        *,
        ns: tuple[int, int] | None = None,
    ) -> None:
        """Like ``os.utime``: (atime, mtime) in seconds or ``ns``; neither means now."""
        if times is not None and ns is not None:
            raise ValueError("utime: you may specify either 'times' or 'ns' but not both")
        if times is not None:
            ns = (int(times[0] * 1e9), int(times[1] * 1e9))
        if ns is None:
            now = time.time_ns()
            ns = (now, now)
        await self._setattr(path, SetAttr(atime_ns=ns[0], mtime_ns=ns[1]))

    async def truncate(self, path: str, size: int) -> None:
        await self._setattr(path, SetAttr(size=size))

    # -- whole files --------------------------------------------------------------------

    async def _regular(self, path: str) -> tuple[bytes, Attr]:
        fh, attr = await self.resolve(path, follow_symlinks=True)
        if attr.type == Ftype3.DIR:
            raise IsADirectoryError(21, "is a directory", path)
        return fh, attr

    async def read_file(self, path: str) -> bytes:
        """The whole file, read with rsize READs all in flight at once (symlinks followed)."""
        fh, attr = await self._regular(path)
        try:
            return await read_all(self.nfs, fh, attr.size)
        except NfsError as exc:
            raise exc.to_oserror(path) from None

    async def write_file(
        self, path: str, data: bytes | bytearray | memoryview, mode: int = 0o644
    ) -> int:
        """Create or truncate ``path`` and write ``data``: UNSTABLE WRITEs of wsize all in
        flight, then COMMIT; data whose write verifier differs from the COMMIT verifier (a
        server restart, RFC 1813 section 3.3.7) is written and committed again."""
        dirfh, name = await self._parent(path)
        try:
            res = await self.nfs.create(dirfh, name, SetAttr(mode=mode, size=0))
            fh = res.obj or (await self.nfs.lookup(dirfh, name)).object
            await write_all(self.nfs, fh, memoryview(data).cast("B"), path)
        except NfsError as exc:
            raise exc.to_oserror(path) from None
        return len(data)

    # -- open files ---------------------------------------------------------------------

    def open(self, path: str, mode: str = "rb", perm: int = 0o644) -> Opening[AsyncFile]:
        """An ``AsyncFile`` (binary; ``Client.open`` adds the io layers and text modes):
        ``f = await c.open(path)``, or ``async with c.open(path) as f`` to close it.

        ``r`` opens an existing file, ``w`` creates or truncates it (CREATE UNCHECKED with
        size 0), ``a`` creates it or writes at its end, ``x`` creates it or fails
        (``create_exclusive``: FileExistsError). Attributes are fetched afresh
        (close-to-open). A text mode (no ``b``) is a ValueError: an ``AsyncFile`` reads and
        writes bytes."""
        how = OpenMode.parse(mode)
        if how.text:
            raise ValueError(
                f"invalid mode {mode!r}: the asyncio client's files are binary (add 'b'; "
                "the blocking Client.open has text modes)"
            )
        return Opening(lambda: self._open(path, how, perm))

    async def _open(self, path: str, how: OpenMode, perm: int) -> AsyncFile:
        fh = await (self._create_for_open(path, how, perm) if how.create else self._existing(path))
        try:
            attr = await self.nfs.getattr(fh)
        except NfsError as exc:
            raise exc.to_oserror(path) from None
        if attr.type == Ftype3.DIR:
            raise IsADirectoryError(21, "is a directory", path)
        await self._check_access(fh, path, how)
        return AsyncFile(self.nfs, fh, path, attr, how, self.file_options, self.buffers)

    async def _existing(self, path: str) -> bytes:
        return (await self._regular(path))[0]

    async def _create_for_open(self, path: str, how: OpenMode, perm: int) -> bytes:
        dirfh, name = await self._parent(path)
        try:
            if how.exclusive:
                res = await self.nfs.create_exclusive(dirfh, name, SetAttr(mode=perm))
                assert res.obj is not None
                return res.obj
            attrs = SetAttr(mode=perm, size=0 if how.truncate else None)
            try:
                res = await self.nfs.create(dirfh, name, attrs, CreateMode.UNCHECKED)
            except NfsError as exc:
                if exc.status not in (Nfsstat3.EXIST, Nfsstat3.ISDIR):
                    raise
                return await self._reopen(path, how)  # a symlink or a directory in the way
            return res.obj or (await self.nfs.lookup(dirfh, name)).object
        except NfsError as exc:
            raise exc.to_oserror(path) from None

    async def _reopen(self, path: str, how: OpenMode) -> bytes:
        fh = await self._existing(path)
        if how.truncate:
            await self.nfs.setattr(fh, SetAttr(size=0))  # its NfsError: _create_for_open's
        return fh

    async def _check_access(self, fh: bytes, path: str, how: OpenMode) -> None:
        """ACCESS at open, as kernel clients do, so a denied open fails at once."""
        want = (Access.READ if how.readable else 0) | (Access.MODIFY if how.writable else 0)
        try:
            granted = (await self.nfs.access(fh, want)).access
        except NfsError as exc:
            raise exc.to_oserror(path) from None
        if want & ~granted:
            raise PermissionError(13, "permission denied", path)


def connect_async(url: str | NfsUrl, **kw: Unpack[ConnectOptions]) -> Opening[AsyncNfsClient]:
    """Mount ``url`` with the asyncio client; ``connect``'s keywords. Use it as
    ``async with connect_async(url) as c:`` (closed on the way out), or
    ``c = await connect_async(url)`` and ``await c.close()`` when done."""
    return Opening(lambda: AsyncNfsClient.connect(url, **kw))

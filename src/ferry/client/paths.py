"""The path-level asyncio client: ``AsyncNfsClient``, the ``os``-like face of the engine.

Paths are ``/``-separated and relative to the mounted directory (a leading ``/`` is that
directory too); the parent of a path is always resolved following symlinks, the last
component as each ``os`` function does. ``stat``/``lstat`` give ``os.stat_result``.
Every method raises the ``OSError`` subclass ``os`` would (``FileNotFoundError``,
``PermissionError``, ...) with the errno, ``os.strerror``'s text and the path (both paths
for two-path calls), not chained to the ``NfsError`` it comes from, which never escapes
here. ``connect_async`` and ``open`` return an ``Opening``: await it, or ``async with``.
Seven names are shared with NFS procedures (``mkdir``, ``symlink``, ``readlink``,
``remove``, ``rmdir``, ``rename``, ``link``): called with a file handle (``bytes``) first
they are the procedure, with a path (``str``) the path operation, so code written against
either keeps working.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from typing import Any, overload

from ferry.errors import NfsError
from ferry.nfs3 import types as t
from ferry.nfs3.const import Access, CreateMode, Ftype3, Nfsstat3
from ferry.vocab import Attr, SetAttr

from .buffers import ChunkBuffers
from .files import AsyncFile, FileOptions, OpenMode, read_all, write_all
from .nfs import MAX_DIR_PAGES, Name, NfsDirEntry, NfsProcedures, _parts, _str
from .opening import Opening
from .url import NfsUrl

Walk = tuple[str, list[str], list[str]]


@contextlib.contextmanager
def _as_oserror(path: str, path2: str | None = None) -> Iterator[None]:
    """Translate an NFS status into the OSError ``os`` raises, naming the path(s); the
    NfsError is not chained: it would only repeat the status."""
    try:
        yield
    except NfsError as exc:
        raise exc.to_oserror(path, path2) from None


def _split(path: str) -> tuple[str, str]:
    parts = _parts(path)
    if not parts or parts[-1] == "..":
        raise OSError(22, "path names no entry of a directory", path)  # EINVAL
    return "/".join(parts[:-1]), parts[-1]


def _join(top: str, name: str) -> str:
    return f"{top.rstrip('/')}/{name}" if top else name


class AsyncNfsClient(NfsProcedures):
    """A mounted NFSv3 export: ``async with connect_async(url) as c`` (or
    ``await AsyncNfsClient.connect(url)``, closed by the caller)."""

    file_options = FileOptions()

    def _set_readahead(self, size: int) -> None:
        self.file_options = dataclasses.replace(self.file_options, readahead=size)

    @functools.cached_property
    def buffers(self) -> ChunkBuffers:
        """The pool READ replies of read-ahead land in, shared by this client's open files
        (made on first use, once rsize is known)."""
        return ChunkBuffers(self.rsize)

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
            with _as_oserror(path):
                res = await self.readdir(fh, cookie, verf)
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
            with _as_oserror(path):
                res = await self.readdirplus(fh, cookie, verf)
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

    @overload
    async def mkdir(self, dir: bytes, name: Name, attrs: SetAttr | None = None) -> t.CreateRes: ...
    @overload
    async def mkdir(self, dir: str, name: int = 0o777) -> None: ...
    async def mkdir(self, dir: bytes | str, name: Any = 0o777, attrs: Any = None) -> Any:
        """``mkdir(path, mode=0o777)``; with a handle first, the MKDIR procedure."""
        if isinstance(dir, bytes):
            return await super().mkdir(dir, name, attrs)
        dirfh, leaf = await self._parent(dir)
        with _as_oserror(dir):
            await super().mkdir(dirfh, leaf, SetAttr(mode=name & 0o7777))
        return None

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

    @overload
    async def remove(self, dir: bytes, name: Name) -> t.Wcc: ...
    @overload
    async def remove(self, dir: str) -> None: ...
    async def remove(self, dir: bytes | str, name: Name | None = None) -> t.Wcc | None:
        """``remove(path)`` (like ``os.remove``); with a handle first, REMOVE."""
        if isinstance(dir, bytes):
            assert name is not None
            return await super().remove(dir, name)
        dirfh, leaf = await self._parent(dir)
        with _as_oserror(dir):
            await super().remove(dirfh, leaf)
        return None

    async def unlink(self, path: str) -> None:
        await self.remove(path)

    @overload
    async def rmdir(self, dir: bytes, name: Name) -> t.Wcc: ...
    @overload
    async def rmdir(self, dir: str) -> None: ...
    async def rmdir(self, dir: bytes | str, name: Name | None = None) -> t.Wcc | None:
        """``rmdir(path)``; with a handle first, RMDIR. A non-empty directory raises
        OSError(ENOTEMPTY)."""
        if isinstance(dir, bytes):
            assert name is not None
            return await super().rmdir(dir, name)
        dirfh, leaf = await self._parent(dir)
        with _as_oserror(dir):
            await super().rmdir(dirfh, leaf)
        return None

    @overload
    async def rename(
        self, fromdir: bytes, fromname: Name, todir: bytes, toname: Name
    ) -> t.RenameRes: ...
    @overload
    async def rename(self, fromdir: str, fromname: str) -> None: ...
    async def rename(
        self, fromdir: bytes | str, fromname: Any, todir: Any = None, toname: Any = None
    ) -> t.RenameRes | None:
        """``rename(src, dst)``, replacing ``dst`` if it exists (RENAME is atomic, RFC 1813
        section 3.3.14); with handles, the RENAME procedure."""
        if isinstance(fromdir, bytes):
            return await super().rename(fromdir, fromname, todir, toname)
        src, dst = fromdir, str(fromname)
        (sdir, sname), (ddir, dname) = await self._parent(src), await self._parent(dst)
        with _as_oserror(src, dst):
            await super().rename(sdir, sname, ddir, dname)
        return None

    async def replace(self, src: str, dst: str) -> None:
        await self.rename(src, dst)

    # -- links --------------------------------------------------------------------------

    @overload
    async def symlink(
        self, dir: bytes, name: Name, target: Name, attrs: SetAttr | None = None
    ) -> t.CreateRes: ...
    @overload
    async def symlink(self, dir: str, name: str) -> None: ...
    async def symlink(
        self, dir: bytes | str, name: Any, target: Any = None, attrs: Any = None
    ) -> t.CreateRes | None:
        """``symlink(target, path)`` (``os.symlink`` order); with a handle first, SYMLINK."""
        if isinstance(dir, bytes):
            return await super().symlink(dir, name, target, attrs)
        target, path = dir, str(name)
        dirfh, leaf = await self._parent(path)
        with _as_oserror(path):
            await super().symlink(dirfh, leaf, target, SetAttr(mode=0o777))
        return None

    @overload
    async def readlink(self, fh: bytes) -> bytes: ...
    @overload
    async def readlink(self, fh: str) -> str: ...
    async def readlink(self, fh: bytes | str) -> bytes | str:
        """``readlink(path) -> str``; with a handle, READLINK (bytes)."""
        if isinstance(fh, bytes):
            return await super().readlink(fh)
        handle, attr = await self.resolve(fh)
        if attr.type != Ftype3.LNK:
            raise OSError(22, "not a symbolic link", fh)  # EINVAL, as os.readlink
        with _as_oserror(fh):
            return _str(await super().readlink(handle))

    @overload
    async def link(self, fh: bytes, dir: bytes, name: Name) -> t.LinkRes: ...
    @overload
    async def link(self, fh: str, dir: str) -> None: ...
    async def link(self, fh: bytes | str, dir: Any, name: Any = None) -> t.LinkRes | None:
        """``link(src, dst)`` (a hard link); with handles, the LINK procedure."""
        if isinstance(fh, bytes):
            return await super().link(fh, dir, name)
        src, dst = fh, str(dir)
        srcfh, _ = await self.resolve(src)
        dirfh, leaf = await self._parent(dst)
        with _as_oserror(src, dst):
            await super().link(srcfh, dirfh, leaf)
        return None

    # -- attributes ---------------------------------------------------------------------

    async def _setattr(self, path: str, attrs: SetAttr, follow: bool = True) -> None:
        fh, _ = await self.resolve(path, follow_symlinks=follow)
        with _as_oserror(path):
            await self.setattr(fh, attrs)

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
        with _as_oserror(path):
            return await read_all(self, fh, attr.size)

    async def write_file(
        self, path: str, data: bytes | bytearray | memoryview, mode: int = 0o644
    ) -> int:
        """Create or truncate ``path`` and write ``data``: UNSTABLE WRITEs of wsize all in
        flight, then COMMIT; data whose write verifier differs from the COMMIT verifier (a
        server restart, RFC 1813 section 3.3.7) is written and committed again."""
        dirfh, name = await self._parent(path)
        with _as_oserror(path):
            res = await self.create(dirfh, name, SetAttr(mode=mode, size=0))
            fh = res.obj or (await self.lookup(dirfh, name)).object
            await write_all(self, fh, memoryview(data).cast("B"), path)
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
        with _as_oserror(path):
            attr = await self.getattr(fh)
        if attr.type == Ftype3.DIR:
            raise IsADirectoryError(21, "is a directory", path)
        await self._check_access(fh, path, how)
        return AsyncFile(self, fh, path, attr, how, self.file_options, self.buffers)

    async def _existing(self, path: str) -> bytes:
        return (await self._regular(path))[0]

    async def _create_for_open(self, path: str, how: OpenMode, perm: int) -> bytes:
        dirfh, name = await self._parent(path)
        if how.exclusive:
            with _as_oserror(path):
                res = await self.create_exclusive(dirfh, name, SetAttr(mode=perm))
            assert res.obj is not None
            return res.obj
        attrs = SetAttr(mode=perm, size=0 if how.truncate else None)
        try:
            res = await self.create(dirfh, name, attrs, CreateMode.UNCHECKED)
        except NfsError as exc:
            if exc.status not in (Nfsstat3.EXIST, Nfsstat3.ISDIR):
                raise exc.to_oserror(path) from None
            return await self._reopen(path, how)  # a symlink or a directory in the way
        if res.obj is not None:
            return res.obj
        with _as_oserror(path):
            return (await self.lookup(dirfh, name)).object

    async def _reopen(self, path: str, how: OpenMode) -> bytes:
        fh = await self._existing(path)
        if how.truncate:
            with _as_oserror(path):
                await self.setattr(fh, SetAttr(size=0))
        return fh

    async def _check_access(self, fh: bytes, path: str, how: OpenMode) -> None:
        """ACCESS at open, as kernel clients do, so a denied open fails at once."""
        want = (Access.READ if how.readable else 0) | (Access.MODIFY if how.writable else 0)
        with _as_oserror(path):
            granted = (await self.access(fh, want)).access
        if want & ~granted:
            raise PermissionError(13, "permission denied", path)


def connect_async(url: str | NfsUrl, **kw: Any) -> Opening[AsyncNfsClient]:
    """Mount ``url`` with the asyncio client; ``connect``'s keywords. Use it as
    ``async with connect_async(url) as c:`` (closed on the way out), or
    ``c = await connect_async(url)`` and ``await c.close()`` when done."""
    return Opening(lambda: AsyncNfsClient.connect(url, **kw))

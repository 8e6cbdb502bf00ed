"""What the client commands need of either side of a transfer, a local tree or an NFS
server: ``Meta`` (what ``lstat`` says) and a few ``os``-like operations on paths.

* Nothing here follows a symbolic link unless asked: ``ls -l``, ``stat``, ``rm -r`` and
  ``cp -r`` see a link as a link, as coreutils do.
* NFS work runs on the ``NfsFileSystem``'s IO loop. ``NfsSide.run`` waits for it in a way
  Ctrl-C interrupts and then cancels it, so a command's clean-up (removing a temporary
  file) never races the transfer it interrupted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import posixpath
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ferry.client import AsyncNfsClient
from ferry.errors import NfsError
from ferry.nfs3.const import Ftype3
from ferry.nfsfs.filesystem import NfsFileSystem
from ferry.vocab import Attr, SetAttr

T = TypeVar("T")
CANCEL_WAIT = 10.0  # seconds an interrupted NFS call may take to wind down
DISCARD_WAIT = 5.0  # seconds to spend removing a temporary on a server that may be gone
REMOVE_BATCH = 256  # REMOVEs of one directory in flight together
_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "directory", stat.S_IFLNK: "link"}
_PSEUDO_MODE = stat.S_IFDIR | 0o555


@dataclass(frozen=True, slots=True)
class Meta:
    """A file's attributes as ``lstat`` gives them (times in nanoseconds)."""

    mode: int  # st_mode, type bits included
    size: int = 0
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    ino: int = 0
    dev: int = 0
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0

    @classmethod
    def of_attr(cls, a: Attr) -> Meta:
        return cls(a.st_mode, a.size, a.uid, a.gid, a.nlink, a.fileid, a.fsid,
                   a.atime_ns, a.mtime_ns, a.ctime_ns)  # fmt: skip

    @classmethod
    def of_stat(cls, s: os.stat_result) -> Meta:
        return cls(s.st_mode, s.st_size, s.st_uid, s.st_gid, s.st_nlink, s.st_ino, s.st_dev,
                   s.st_atime_ns, s.st_mtime_ns, s.st_ctime_ns)  # fmt: skip

    @property
    def kind(self) -> str:
        """``file``, ``directory``, ``link`` or ``other`` (devices, fifos, sockets)."""
        return _KINDS.get(stat.S_IFMT(self.mode), "other")

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass(frozen=True, slots=True)
class Entry:
    """One directory entry: its name, lstat's view, and a link's target (if asked for)."""

    name: str
    meta: Meta
    target: str | None = None


class LocalSide:
    """The local file system, through ``os``."""

    def stat(self, path: str, follow: bool = True) -> Meta:
        return Meta.of_stat(os.stat(path, follow_symlinks=follow))

    def scan(self, path: str, targets: bool = False) -> list[Entry]:
        with os.scandir(path) as it:
            found = [(e.name, Meta.of_stat(e.stat(follow_symlinks=False))) for e in it]
        return sorted(
            (Entry(n, m, os.readlink(os.path.join(path, n)) if targets and m.kind == "link"
                   else None) for n, m in found),
            key=_name,
        )  # fmt: skip

    def readlink(self, path: str) -> str:
        return os.readlink(path)

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(path, mode)

    def symlink(self, target: str, path: str) -> None:
        os.symlink(target, path)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def set_meta(self, path: str, mode: int | None, times: tuple[int, int] | None) -> None:
        if mode is not None:
            os.chmod(path, mode)
        if times is not None:
            os.utime(path, ns=times, follow_symlinks=False)

    def discard(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)


class NfsSide:
    """One NFS server (an ``NfsFileSystem``), through the path API of its async client;
    paths are server paths (``/export/dir/file``)."""

    def __init__(self, fs: NfsFileSystem) -> None:
        self.fs = fs

    def run(self, path: str, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``func(*args)`` on the IO loop; an NFS error becomes the OSError naming ``path``.
        If the wait is interrupted (Ctrl-C), the call is cancelled before this returns."""
        future = asyncio.run_coroutine_threadsafe(_call(func, *args), self.fs.loop)
        try:
            return future.result()
        except NfsError as exc:
            raise exc.to_oserror(path) from None
        finally:
            if not future.done():
                future.cancel()
                concurrent.futures.wait([future], timeout=CANCEL_WAIT)

    async def _at(self, path: str) -> tuple[AsyncNfsClient, str]:
        return await self.fs._where(path)

    def is_export_root(self, path: str) -> bool:
        """Whether ``path`` is an export's root, or a directory above the exports."""
        return self.fs._pseudo_dir(path) or self.run(path, self._at, path)[1] == ""

    def stat(self, path: str, follow: bool = True) -> Meta:
        if self.fs._pseudo_dir(path):
            return Meta(_PSEUDO_MODE)
        return self.run(path, self._stat, path, follow)

    async def _stat(self, path: str, follow: bool) -> Meta:
        client, rel = await self._at(path)
        return Meta.of_attr((await client.resolve(rel, follow))[1])

    def scan(self, path: str, targets: bool = False) -> list[Entry]:
        if self.fs._pseudo_dir(path):
            return [Entry(posixpath.basename(e["name"]), Meta(_PSEUDO_MODE))
                    for e in self.fs.ls(path, detail=True)]  # fmt: skip
        return self.run(path, self._scan, path, targets)

    async def _scan(self, path: str, targets: bool) -> list[Entry]:
        client, rel = await self._at(path)

        async def entry(name: str, attr: Attr | None, fh: bytes | None) -> Entry:
            if attr is None or fh is None:
                fh, attr = await client.resolve(_join(rel, name))
            target = None
            if targets and attr.type == Ftype3.LNK:
                target = (await client.nfs.readlink(fh)).decode("utf-8", "surrogateescape")
            return Entry(name, Meta.of_attr(attr), target)

        found = await client.scandir(rel)
        return sorted(await asyncio.gather(*(entry(e.name, e.attr, e.handle) for e in found)),
                      key=_name)  # fmt: skip

    def readlink(self, path: str) -> str:
        return self.run(path, self._readlink, path)

    async def _readlink(self, path: str) -> str:
        client, rel = await self._at(path)
        return await client.readlink(rel)

    def mkdir(self, path: str, mode: int) -> None:
        self.run(path, self._mkdir, path, mode)

    async def _mkdir(self, path: str, mode: int) -> None:
        client, rel = await self._at(path)
        await client.mkdir(rel, mode)

    def symlink(self, target: str, path: str) -> None:
        self.run(path, self._symlink, target, path)

    async def _symlink(self, target: str, path: str) -> None:
        client, rel = await self._at(path)
        await client.symlink(target, rel)

    def rename(self, src: str, dst: str) -> None:
        self.run(dst, self._rename, src, dst)

    async def _rename(self, src: str, dst: str) -> None:
        (client, a), (_, b) = await self._at(src), await self._at(dst)
        await client.rename(a, b)

    def set_meta(self, path: str, mode: int | None, times: tuple[int, int] | None) -> None:
        atime, mtime = times if times is not None else (None, None)
        self.run(path, self._setattr, path, SetAttr(mode=mode, atime_ns=atime, mtime_ns=mtime))

    async def _setattr(self, path: str, attrs: SetAttr) -> None:
        client, rel = await self._at(path)
        fh, _ = await client.resolve(rel)
        await client.nfs.setattr(fh, attrs)

    def discard(self, path: str) -> None:
        """Remove ``path`` if the server lets us within DISCARD_WAIT; never raises."""
        with contextlib.suppress(Exception):
            self.run(path, self._discard, path)

    async def _discard(self, path: str) -> None:
        await asyncio.wait_for(self._remove(path), DISCARD_WAIT)

    async def _remove(self, path: str) -> None:
        client, rel = await self._at(path)
        await client.remove(rel)

    def remove(self, path: str) -> None:
        self.run(path, self._remove, path)

    def remove_tree(self, path: str, keep_top: bool = False) -> None:
        """``rm -r``: everything below ``path`` (links removed, never followed), then
        ``path`` itself unless ``keep_top``."""
        self.run(path, self._remove_tree, path, keep_top)

    async def _remove_tree(self, path: str, keep_top: bool) -> None:
        client, rel = await self._at(path)
        await _remove_below(client, rel)
        if not keep_top:
            await client.rmdir(rel)


async def _remove_below(client: AsyncNfsClient, rel: str) -> None:
    """Empty the directory ``rel``: subdirectories depth first, then the rest in batches
    of REMOVE_BATCH calls in flight."""
    fh, _ = await client.resolve(rel, True)
    others = []
    for e in await client.scandir(rel):
        attr = e.attr or (await client.resolve(_join(rel, e.name)))[1]
        kind = attr.type
        if kind == Ftype3.DIR:
            await _remove_below(client, _join(rel, e.name))
            await client.nfs.rmdir(fh, e.name)
        else:
            others.append(e.name)
    for i in range(0, len(others), REMOVE_BATCH):
        await asyncio.gather(*(client.nfs.remove(fh, n) for n in others[i : i + REMOVE_BATCH]))


async def _call(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    return await func(*args)


def _name(e: Entry) -> str:
    return e.name


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


Side = LocalSide | NfsSide


def side_of(fs: Any) -> Side:
    """The side a file system of ``cli_client._fs`` stands for."""
    return NfsSide(fs) if isinstance(fs, NfsFileSystem) else LocalSide()

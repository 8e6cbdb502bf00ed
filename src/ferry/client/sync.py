"""The blocking client: a thin, thread-safe shell around ``AsyncNfsClient``.

It owns one private event loop running in a daemon thread; every method submits the
coroutine of the same name to that loop and waits for it. No protocol logic lives here
(``tests/client/test_client_sync.py`` checks that the method names match the engine's):
``open`` hands the engine's ``AsyncFile`` to ``fileio.wrap`` for the standard io layers,
and ``walk`` steps the engine's async generator. The seven names shared by a procedure and
a path operation (``mkdir``, ``remove``, ...) pass their arguments through unchanged.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable, Iterator
from typing import IO, Any, TypeVar, overload

from ferry import loops
from ferry.nfs3 import types as t
from ferry.nfs3.const import CreateMode, Ftype3, StableHow
from ferry.vocab import Attr, SetAttr

from . import fileio
from .aio import RpcOptions, RpcStats
from .files import AsyncFile
from .nfs import AuthSys, Name, NfsDirEntry
from .opening import Opening
from .paths import AsyncNfsClient, Walk
from .url import NfsUrl

T = TypeVar("T")


class Client:
    """A mounted export, with blocking methods; safe to share between threads. The
    arguments are ``connect``'s."""

    def __init__(
        self,
        url: str | NfsUrl,
        *,
        export: str | None = None,
        auth: AuthSys | None = None,
        options: RpcOptions | None = None,
        rsize: int | None = None,
        wsize: int | None = None,
        attr_cache: float | None = None,
        servers: str | Iterable[str] = (),
        hard: bool | None = None,
        timeout: float | None = None,
        retrans: int | None = None,
        retry_for: float | None = None,
        readahead: int | None = None,
        read_only: bool | None = None,
    ) -> None:
        self._loop = loops.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ferry-client", daemon=True
        )
        self._thread.start()
        try:
            self._client: AsyncNfsClient = self._run(
                AsyncNfsClient.connect(
                    url,
                    export=export,
                    auth=auth,
                    options=options,
                    rsize=rsize,
                    wsize=wsize,
                    attr_cache=attr_cache,
                    servers=servers,
                    hard=hard,
                    timeout=timeout,
                    retrans=retrans,
                    retry_for=retry_for,
                    readahead=readahead,
                    read_only=read_only,
                )
            )
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, agen: AsyncGenerator[T, None]) -> Iterator[T]:
        for _ in range(1 << 40):  # bounded by the iterator
            try:
                yield self._run(agen.__anext__())
            except StopAsyncIteration:
                return

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close())
        finally:
            self._stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> AsyncNfsClient:
        return self._client

    @property
    def root(self) -> bytes:
        return self._client.root

    @property
    def stats(self) -> RpcStats:
        return self._client.rpc.stats

    # -- procedures ------------------------------------------------------------------------

    def null(self) -> None:
        self._run(self._client.null())

    def getattr(self, fh: bytes) -> Attr:
        return self._run(self._client.getattr(fh))

    def setattr(self, fh: bytes, attrs: SetAttr, guard_ctime_ns: int | None = None) -> t.Wcc:
        return self._run(self._client.setattr(fh, attrs, guard_ctime_ns))

    def lookup(self, dir: bytes, name: Name) -> t.LookupRes:
        return self._run(self._client.lookup(dir, name))

    def access(self, fh: bytes, access: int) -> t.AccessRes:
        return self._run(self._client.access(fh, access))

    @overload
    def readlink(self, fh: bytes) -> bytes: ...
    @overload
    def readlink(self, fh: str) -> str: ...
    def readlink(self, *args: Any, **kw: Any) -> Any:
        return self._run(self._client.readlink(*args, **kw))

    def read(self, fh: bytes, offset: int, count: int) -> t.ReadRes:
        return self._run(self._client.read(fh, offset, count))

    def read_into(self, fh: bytes, offset: int, dest: memoryview) -> t.ReadRes:
        return self._run(self._client.read_into(fh, offset, dest))

    def write(
        self,
        fh: bytes,
        offset: int,
        data: bytes | bytearray | memoryview,
        stable: StableHow = StableHow.UNSTABLE,
    ) -> t.WriteRes:
        return self._run(self._client.write(fh, offset, data, stable))

    def create(
        self,
        dir: bytes,
        name: Name,
        attrs: SetAttr | None = None,
        mode: CreateMode = CreateMode.UNCHECKED,
        verf: bytes = b"\0" * 8,
    ) -> t.CreateRes:
        return self._run(self._client.create(dir, name, attrs, mode, verf))

    def create_exclusive(self, dir: bytes, name: Name, attrs: SetAttr | None = None) -> t.CreateRes:
        return self._run(self._client.create_exclusive(dir, name, attrs))

    @overload
    def mkdir(self, dir: bytes, name: Name, attrs: SetAttr | None = None) -> t.CreateRes: ...
    @overload
    def mkdir(self, dir: str, name: int = 0o777) -> None: ...
    def mkdir(self, *args: Any, **kw: Any) -> Any:
        return self._run(self._client.mkdir(*args, **kw))

    @overload
    def symlink(
        self, dir: bytes, name: Name, target: Name, attrs: SetAttr | None = None
    ) -> t.CreateRes: ...
    @overload
    def symlink(self, dir: str, name: str) -> None: ...
    def symlink(self, *args: Any, **kw: Any) -> Any:
        return self._run(self._client.symlink(*args, **kw))

    def mknod(
        self,
        dir: bytes,
        name: Name,
        ftype: Ftype3,
        attrs: SetAttr | None = None,
        rdev: tuple[int, int] = (0, 0),
    ) -> t.CreateRes:
        return self._run(self._client.mknod(dir, name, ftype, attrs, rdev))

    @overload
    def remove(self, dir: bytes, name: Name) -> t.Wcc: ...
    @overload
    def remove(self, dir: str) -> None: ...
    def remove(self, *args: Any, **kw: Any) -> Any:
        return self._run(self._client.remove(*args, **kw))

    @overload
    def rmdir(self, dir: bytes, name: Name) -> t.Wcc: ...
    @overload
    def rmdir(self, dir: str) -> None: ...
    def rmdir(self, *args: Any, **kw: Any) -> Any:
        return self._run(self._client.rmdir(*args, **kw))

    @overload
    def rename(self, fromdir: bytes, fromname: Name, todir: bytes, toname: Name) -> t.RenameRes: ...
    @overload
    def rename(self, fromdir: str, fromname: str) -> None: ...
    def rename(self, *args: Any, **kw: Any) -> Any:
        return self._run(self._client.rename(*args, **kw))

    @overload
    def link(self, fh: bytes, dir: bytes, name: Name) -> t.LinkRes: ...
    @overload
    def link(self, fh: str, dir: str) -> None: ...
    def link(self, *args: Any, **kw: Any) -> Any:
        return self._run(self._client.link(*args, **kw))

    def readdir(
        self, dir: bytes, cookie: int = 0, cookieverf: bytes = t.COOKIEVERF_ZERO, count: int = 0
    ) -> t.ReaddirRes:
        return self._run(self._client.readdir(dir, cookie, cookieverf, count))

    def readdirplus(
        self,
        dir: bytes,
        cookie: int = 0,
        cookieverf: bytes = t.COOKIEVERF_ZERO,
        dircount: int = 0,
        maxcount: int = 0,
    ) -> t.ReaddirRes:
        return self._run(self._client.readdirplus(dir, cookie, cookieverf, dircount, maxcount))

    def fsstat(self, fh: bytes) -> t.FsstatRes:
        return self._run(self._client.fsstat(fh))

    def fsinfo(self, fh: bytes) -> t.FsinfoRes:
        return self._run(self._client.fsinfo(fh))

    def pathconf(self, fh: bytes) -> t.PathconfRes:
        return self._run(self._client.pathconf(fh))

    def commit(self, fh: bytes, offset: int = 0, count: int = 0) -> t.CommitRes:
        return self._run(self._client.commit(fh, offset, count))

    # -- paths -----------------------------------------------------------------------------

    def resolve(self, path: str, follow_symlinks: bool = False) -> tuple[bytes, Attr]:
        return self._run(self._client.resolve(path, follow_symlinks))

    def stat(self, path: str, follow_symlinks: bool = True) -> os.stat_result:
        return self._run(self._client.stat(path, follow_symlinks))

    def lstat(self, path: str) -> os.stat_result:
        return self._run(self._client.lstat(path))

    def listdir(self, path: str = "") -> list[str]:
        return self._run(self._client.listdir(path))

    def scandir(self, path: str = "") -> list[NfsDirEntry]:
        return self._run(self._client.scandir(path))

    def read_file(self, path: str) -> bytes:
        return self._run(self._client.read_file(path))

    def write_file(self, path: str, data: bytes | bytearray | memoryview, mode: int = 0o644) -> int:
        return self._run(self._client.write_file(path, data, mode))

    # -- path operations (like os) -----------------------------------------------------------

    def exists(self, path: str) -> bool:
        return self._run(self._client.exists(path))

    def isdir(self, path: str) -> bool:
        return self._run(self._client.isdir(path))

    def isfile(self, path: str) -> bool:
        return self._run(self._client.isfile(path))

    def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        self._run(self._client.makedirs(path, mode, exist_ok))

    def unlink(self, path: str) -> None:
        self._run(self._client.unlink(path))

    def replace(self, src: str, dst: str) -> None:
        self._run(self._client.replace(src, dst))

    def chmod(self, path: str, mode: int) -> None:
        self._run(self._client.chmod(path, mode))

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._run(self._client.chown(path, uid, gid))

    def utime(
        self,
        path: str,
        times: tuple[float, float] | None = None,
        *,
        ns: tuple[int, int] | None = None,
    ) -> None:
        self._run(self._client.utime(path, times, ns=ns))

    def truncate(self, path: str, size: int) -> None:
        self._run(self._client.truncate(path, size))

    def walk(
        self,
        top: str = "",
        topdown: bool = True,
        onerror: Callable[[OSError], object] | None = None,
        followlinks: bool = False,
    ) -> Iterator[Walk]:
        return self._iterate(self._client.walk(top, topdown, onerror, followlinks))

    def open(
        self,
        path: str,
        mode: str = "rb",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
        perm: int = 0o644,
    ) -> IO[Any]:
        """Like the built-in ``open``, but binary by default ("rb", as fsspec's ``open``):
        ``r``/``w``/``a``/``x`` with ``t`` or without ``b`` are text (UTF-8 unless told
        otherwise), as with ``open``. Standard io objects over the engine's read-ahead
        and write-behind."""
        binary = mode if "b" in mode else mode.replace("t", "") + "b"
        file = self._run(_opened(self._client.open(path, binary, perm)))
        try:
            return fileio.wrap(self._run, file, mode, buffering, encoding, errors, newline)
        except BaseException:
            self._run(file.close())
            raise


async def _opened(opening: Opening[AsyncFile]) -> AsyncFile:
    return await opening


def connect(url: str | NfsUrl, **kw: Any) -> Client:
    """Mount ``url`` (``nfs://host[:port]/export/path?...``) and return a blocking Client.

    Keywords are ``Client``'s (``AsyncNfsClient.connect``'s): ``export``, ``auth``,
    ``options`` (``RpcOptions``: the transport in full), ``rsize``, ``wsize``,
    ``readahead``, ``attr_cache``, ``read_only``; ``servers``, further servers of the
    same store to fail over to, ``"host[:port]"`` each, tried after the URL's own
    (``nfs://h1:p1,h2:p2/...`` says the same)::

        ferry.connect("nfs://10.0.0.1:2049/export", servers=["10.0.0.2:2049"])

    and what to do when the server stops answering (``ferry.client.retry``): ``hard``
    (the default: calls wait for a server that restarts, up to ``retry_for`` seconds,
    300 by default) or ``hard=False`` (soft: fail after ``retrans`` resends, 3), and
    ``timeout``, seconds before a call is first resent (10)::

        ferry.connect(url, retry_for=3600)              # ride over an hour's outage
        ferry.connect(url, hard=False, timeout=2)       # fail within seconds
    """
    return Client(url, **kw)

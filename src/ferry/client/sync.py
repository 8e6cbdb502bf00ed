"""The blocking client: a thin, thread-safe shell around ``AsyncNfsClient``.

It owns one private event loop running in a daemon thread; every method submits the
coroutine of the same name to that loop and waits for it. No protocol logic lives here
(``tests/client/test_sync.py`` checks that the method names match the engine's).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from ferry.backends.base import Attr, SetAttr
from ferry.nfs3 import types as t
from ferry.nfs3.const import CreateMode, Ftype3, StableHow

from .aio import RpcOptions, RpcStats
from .nfs import AsyncNfsClient, AuthSys, Name, NfsDirEntry
from .url import NfsUrl

T = TypeVar("T")


class Client:
    """A mounted export, with blocking methods; safe to share between threads."""

    def __init__(
        self,
        url: str | NfsUrl,
        *,
        export: str | None = None,
        auth: AuthSys | None = None,
        options: RpcOptions | None = None,
        rsize: int | None = None,
        wsize: int | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ferry-client", daemon=True
        )
        self._thread.start()
        try:
            self._client: AsyncNfsClient = self._run(
                AsyncNfsClient.connect(
                    url, export=export, auth=auth, options=options, rsize=rsize, wsize=wsize
                )
            )
        except BaseException:
            self._stop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

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

    def readlink(self, fh: bytes) -> bytes:
        return self._run(self._client.readlink(fh))

    def read(self, fh: bytes, offset: int, count: int) -> t.ReadRes:
        return self._run(self._client.read(fh, offset, count))

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

    def mkdir(self, dir: bytes, name: Name, attrs: SetAttr | None = None) -> t.CreateRes:
        return self._run(self._client.mkdir(dir, name, attrs))

    def symlink(
        self, dir: bytes, name: Name, target: Name, attrs: SetAttr | None = None
    ) -> t.CreateRes:
        return self._run(self._client.symlink(dir, name, target, attrs))

    def mknod(
        self,
        dir: bytes,
        name: Name,
        ftype: Ftype3,
        attrs: SetAttr | None = None,
        rdev: tuple[int, int] = (0, 0),
    ) -> t.CreateRes:
        return self._run(self._client.mknod(dir, name, ftype, attrs, rdev))

    def remove(self, dir: bytes, name: Name) -> t.Wcc:
        return self._run(self._client.remove(dir, name))

    def rmdir(self, dir: bytes, name: Name) -> t.Wcc:
        return self._run(self._client.rmdir(dir, name))

    def rename(self, fromdir: bytes, fromname: Name, todir: bytes, toname: Name) -> t.RenameRes:
        return self._run(self._client.rename(fromdir, fromname, todir, toname))

    def link(self, fh: bytes, dir: bytes, name: Name) -> t.LinkRes:
        return self._run(self._client.link(fh, dir, name))

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

    def stat(self, path: str, follow_symlinks: bool = False) -> Attr:
        return self._run(self._client.stat(path, follow_symlinks))

    def listdir(self, path: str = "") -> list[str]:
        return self._run(self._client.listdir(path))

    def scandir(self, path: str = "") -> list[NfsDirEntry]:
        return self._run(self._client.scandir(path))

    def read_file(self, path: str) -> bytes:
        return self._run(self._client.read_file(path))

    def write_file(self, path: str, data: bytes | bytearray | memoryview, mode: int = 0o644) -> int:
        return self._run(self._client.write_file(path, data, mode))


def connect(url: str | NfsUrl, **kw: Any) -> Client:
    """Mount ``url`` (``nfs://host[:port]/export/path?...``) and return a blocking Client."""
    return Client(url, **kw)

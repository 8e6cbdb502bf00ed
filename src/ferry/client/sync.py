"""The blocking client: a thin, thread-safe shell around ``AsyncNfsClient``.

It owns one private event loop running in a daemon thread (``LoopThread``); every method
runs the engine's coroutine of the same name on that loop and waits for it. Those methods
are generated from the engine's source (``client.sync_calls``, by scripts/gen_sync.py;
the test suite fails while it is stale), with the engine's signatures, which
``tests/client/test_client_sync.py`` compares. Written here are what owns the loop
(connecting, closing), ``open`` (the engine's ``AsyncFile`` handed to ``fileio.wrap`` for
the standard io layers) and ``nfs``, the blocking procedure calls (``SyncProcedures``).
"""

from __future__ import annotations

from typing import IO, Any, Unpack

from . import fileio
from .aio import RpcStats
from .files import AsyncFile
from .loopthread import LoopThread
from .nfs import ConnectOptions, NfsProcedures
from .opening import Opening
from .paths import AsyncNfsClient
from .sync_calls import ClientCalls, ProcedureCalls
from .url import NfsUrl


class SyncProcedures(ProcedureCalls):
    """``NfsProcedures`` with blocking methods (``Client.nfs``): one per NFS procedure, on
    file handles, raising ``NfsError``. Runs on its ``Client``'s loop; closed with it."""

    def __init__(self, engine: NfsProcedures, loop: LoopThread) -> None:
        self._engine, self._loop = engine, loop

    @property
    def engine(self) -> NfsProcedures:
        return self._engine

    @property
    def root(self) -> bytes:
        return self._engine.root

    @property
    def rsize(self) -> int:
        return self._engine.rsize

    @property
    def wsize(self) -> int:
        return self._engine.wsize


class Client(ClientCalls):
    """A mounted export, with blocking methods; safe to share between threads. The
    arguments are ``connect``'s. Path calls are methods (``c.mkdir(path, mode)``, as
    ``os``); the procedure calls on file handles are ``c.nfs`` (``c.nfs.mkdir(dirfh,
    name, attrs)``)."""

    def __init__(self, url: str | NfsUrl, **kw: Unpack[ConnectOptions]) -> None:
        self._loop = LoopThread()
        try:
            self._engine: AsyncNfsClient = self._loop.run(AsyncNfsClient.connect(url, **kw))
        except BaseException:
            self._loop.stop()
            raise
        self.nfs = SyncProcedures(self._engine.nfs, self._loop)

    def close(self) -> None:
        if self._loop.closed:
            return
        try:
            self._loop.run(self._engine.close())
        finally:
            self._loop.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def engine(self) -> AsyncNfsClient:
        return self._engine

    @property
    def root(self) -> bytes:
        return self._engine.root

    @property
    def rsize(self) -> int:
        return self._engine.rsize

    @property
    def wsize(self) -> int:
        return self._engine.wsize

    @property
    def stats(self) -> RpcStats:
        return self._engine.stats

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
        file = self._loop.run(_opened(self._engine.open(path, binary, perm)))
        try:
            return fileio.wrap(self._loop.run, file, mode, buffering, encoding, errors, newline)
        except BaseException:
            self._loop.run(file.close())
            raise


async def _opened(opening: Opening[AsyncFile]) -> AsyncFile:
    return await opening


def connect(url: str | NfsUrl, **kw: Unpack[ConnectOptions]) -> Client:
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

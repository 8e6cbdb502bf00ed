"""NFS3ERR_JUKEBOX ("try again later"): the client waits and sends the call again.

A real Ferry server (in-process) whose backend is wrapped so that chosen operations answer
JUKEBOX, as the cephfs and s3 backends do while their store is slow: a few times, then
the call goes through (the client retries, with new xids); or always (the client gives up
after ``RpcOptions.jukebox_tries`` and the caller gets EAGAIN, in bounded time).
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from client_proxy import url_for
from rawclient import RunningServer

import ferry
from ferry.backends.base import Backend
from ferry.client import AsyncNfsClient, RpcOptions
from ferry.client.nfs import jukebox_waits
from ferry.errors import NfsError
from ferry.nfs3.const import Nfsstat3
from helpers.aio import run as run_bounded

READS = {"read", "read_segment", "read_nowait"}  # whichever the server uses for READ
QUICK = RpcOptions(jukebox_tries=5, jukebox_delay=0.01, jukebox_max_delay=0.04)


class Busy:
    """Wraps a backend: each of ``ops`` answers JUKEBOX while ``times`` (None: forever)
    lasts, then ``inner`` answers; ``refused`` counts the JUKEBOX answers."""

    def __init__(self, inner: Backend, ops: set[str], times: int | None) -> None:
        self.inner, self.ops, self.times = inner, ops, times
        self.refused = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in self.ops:
            return method

        def busy(*args: Any, **kw: Any) -> Any:
            with self._lock:
                if self.times is None or self.refused < self.times:
                    self.refused += 1
                    raise NfsError(Nfsstat3.JUKEBOX, "store busy")
            return method(*args, **kw)

        return busy


@pytest.fixture
def make_busy(ferry_srv: RunningServer) -> Callable[[set[str], int | None], Busy]:
    """Install a ``Busy`` around the served export's backend (after the test's setup)."""

    def install(ops: set[str], times: int | None) -> Busy:
        export = ferry_srv.app.exports[0]
        wrapper = Busy(export.backend, ops, times)
        export.backend = wrapper  # type: ignore[assignment]
        return wrapper

    return install


def run(coro):  # type: ignore[no-untyped-def]
    return run_bounded(coro, 60)


def test_waits_double_up_to_the_cap_and_are_bounded() -> None:
    assert jukebox_waits(RpcOptions()) == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0]
    assert jukebox_waits(RpcOptions(jukebox_tries=1)) == []
    with pytest.raises(ValueError, match="jukebox_tries"):
        RpcOptions(jukebox_tries=0)


def test_read_and_create_go_through_after_a_few_jukeboxes(
    ferry_srv: RunningServer, export_root: Path, make_busy: Callable[..., Busy]
) -> None:
    (export_root / "f").write_bytes(b"hello")
    url = url_for(ferry_srv.port, export_root)

    async def body() -> None:
        async with await AsyncNfsClient.connect(url, options=QUICK) as c:
            events: list[tuple[str, int]] = []
            c.rpc.recorder = lambda event, xid, size: events.append((event, xid))
            busy = make_busy({*READS, "create"}, 3)
            assert await c.read_file("f") == b"hello"
            assert busy.refused == 3 and c.rpc.stats.jukebox_retries == 3
            calls = [xid for event, xid in events if event == "call"]
            assert len(set(calls)) == len(calls)  # each retry is a new request
            assert not any(event == "resend" for event, _ in events)
            busy.refused = 0
            await c.write_file("g", b"new")  # CREATE, not idempotent: retried all the same
            assert busy.refused == 3 and c.rpc.stats.jukebox_retries == 6

    run(body())
    assert (export_root / "g").read_bytes() == b"new"


def test_sync_client_retries_too(
    ferry_srv: RunningServer, export_root: Path, make_busy: Callable[..., Busy]
) -> None:
    (export_root / "f").write_bytes(b"sync")
    with ferry.connect(url_for(ferry_srv.port, export_root), options=QUICK) as c:
        busy = make_busy({"getattr"}, 2)
        assert c.nfs.getattr(c.root).type == ferry.Ftype3.DIR
        assert busy.refused == 2 and c.stats.jukebox_retries == 2


def test_a_store_that_never_recovers_gives_eagain_after_the_bound(
    ferry_srv: RunningServer, export_root: Path, make_busy: Callable[..., Busy]
) -> None:
    (export_root / "f").write_bytes(b"x" * 100)
    url = url_for(ferry_srv.port, export_root)
    opts = RpcOptions(jukebox_tries=4, jukebox_delay=0.1, jukebox_max_delay=0.2)

    async def body() -> None:
        async with await AsyncNfsClient.connect(url, options=opts) as c:
            busy = make_busy(READS, None)
            start = time.monotonic()
            with pytest.raises(BlockingIOError) as info:
                await c.read_file("f")
            elapsed = time.monotonic() - start
            assert info.value.errno == errno.EAGAIN and info.value.filename == "f"
            assert busy.refused == 4 and c.rpc.stats.jukebox_retries == 3
            assert 0.5 <= elapsed < 5  # waited 0.1 + 0.2 + 0.2, then gave up
            fh, _ = await c.resolve("f")
            with pytest.raises(NfsError) as err:  # the procedure level: the status itself
                await c.nfs.read(fh, 0, 10)
            assert err.value.status == Nfsstat3.JUKEBOX

    run(body())

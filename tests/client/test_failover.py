"""Client failover: a URL naming several servers of one store, one dying mid-transfer.

Two real ``ferry serve`` processes export the same local directory with the same handle
key (one ``handle.key`` copied into both state directories), so a handle from one works on
the other. Server A is SIGKILLed (or SIGSTOPped) in the middle of a 64 MiB read or write
through Ferry's client; the transfer must finish through B with the right bytes, and the
client's RPC stats must show the failover. A write also shows the COMMIT verifier at work:
what A acknowledged as UNSTABLE is written again to B (``FileStats.resent``).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

import ferry
from ferry.client import AsyncNfsClient, RpcOptions
from helpers import peers
from helpers.aio import run as run_bounded
from helpers.aio import sha
from helpers.failover import kill, read_killing, server_pair, url_of

SIZE = 64 << 20
CHUNK = 1 << 20
FAST = RpcOptions(timeout=1.0, max_tries=2, connect_timeout=2.0, reconnect_tries=3)


def run(coro):  # type: ignore[no-untyped-def]
    return run_bounded(coro, 180)


@pytest.fixture
def export(tmp_path: Path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    return d


@pytest.fixture
def pair(export: Path, tmp_path: Path) -> Iterator[list[peers.FerryServer]]:
    """Servers A and B on one directory with one handle key."""
    with server_pair(export, tmp_path) as servers:
        yield servers


def test_read_fails_over_when_the_server_is_killed(
    pair: list[peers.FerryServer], export: Path
) -> None:
    data = os.urandom(SIZE)
    (export / "big").write_bytes(data)
    a, _ = pair

    async def body() -> None:
        async with await AsyncNfsClient.connect(url_of(pair, export), options=FAST) as c:
            got = await read_killing(c, "big", a, after=24 << 20, chunk=CHUNK)
            assert len(got) == SIZE and sha(got) == sha(data)
            assert c.rpc.stats.failovers == 1
            assert c.rpc.port == pair[1].port  # it stays on B

    run(body())


def test_write_fails_over_and_resends_what_the_dead_server_acknowledged(
    pair: list[peers.FerryServer], export: Path
) -> None:
    data = os.urandom(SIZE)
    a, _ = pair
    target = export / "out"

    async def on_disk(at_least: int) -> None:
        for _ in range(3000):  # 30 s at most
            if target.exists() and target.stat().st_size >= at_least:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"server A never wrote {at_least} bytes")

    async def body() -> None:
        async with await AsyncNfsClient.connect(url_of(pair, export), options=FAST) as c:
            async with await c.open("out", "wb") as f:
                for off in range(0, SIZE, CHUNK):
                    await f.write(data[off : off + CHUNK])
                    if off == 48 << 20:
                        # A wrote past the client's window of 32 calls: some of its UNSTABLE
                        # replies have arrived, and only a COMMIT to B can tell they are lost
                        await on_disk(40 << 20)
                        kill(a)
            assert c.rpc.stats.failovers == 1
            assert f.stats.resent >= 1  # the verifier changed: A's writes went to B again

    run(body())
    assert sha(target.read_bytes()) == sha(data)


def test_a_server_that_stops_answering_is_left_after_its_timeouts(
    pair: list[peers.FerryServer], export: Path
) -> None:
    """SIGSTOP: the connection stays up but nothing answers; after ``max_tries`` the
    outstanding calls move to B."""
    data = os.urandom(8 << 20)
    (export / "f").write_bytes(data)
    a, _ = pair

    async def body() -> None:
        opts = RpcOptions(timeout=0.5, max_tries=2, connect_timeout=2.0)
        async with await AsyncNfsClient.connect(url_of(pair, export), options=opts) as c:
            async with await c.open("f", "rb") as f:
                head = await f.read(CHUNK)
                kill(a, signal.SIGSTOP)
                rest = await f.read()
            assert sha(head + rest) == sha(data)
            assert c.rpc.stats.failovers == 1 and c.rpc.stats.timeouts >= 1

    run(body())


def test_connect_takes_the_first_server_that_answers(
    pair: list[peers.FerryServer], export: Path
) -> None:
    (export / "f").write_bytes(b"hello")
    dead = peers.free_port()
    url = f"nfs://127.0.0.1:{dead},127.0.0.1:{pair[1].port}{export}"

    async def body() -> None:
        async with await AsyncNfsClient.connect(url, options=FAST) as c:
            assert await c.read_file("f") == b"hello"
            assert c.rpc.port == pair[1].port

    run(body())


def test_one_server_url_fails_when_it_dies_and_close_skips_umnt(
    pair: list[peers.FerryServer], export: Path
) -> None:
    """Without a second server the call fails (after the reconnect attempts); and closing
    a client whose connection is down sends no UMNT (it used to wait 5 s for it)."""
    (export / "f").write_bytes(b"x")
    a = pair[0]

    async def body() -> None:
        c = await AsyncNfsClient.connect(url_of([a], export), options=FAST)
        try:
            assert await c.read_file("f") == b"x"
            kill(a)
            with pytest.raises(OSError):
                await c.read_file("f")
            assert c.rpc.stats.failovers == 0
        finally:
            calls = c.rpc.stats.calls
            await c.close()
        assert c.rpc.stats.calls == calls  # no UMNT on a dead connection

    run(body())


def test_servers_keyword_adds_servers_to_the_url(
    pair: list[peers.FerryServer], export: Path
) -> None:
    """``servers=`` means what more hosts in the URL mean: a dead first server is skipped
    at connect (async), and the blocking client fails over when its server dies."""
    data = os.urandom(16 << 20)
    (export / "f").write_bytes(data)
    a, b = pair
    dead = f"nfs://127.0.0.1:{peers.free_port()}{export}"

    async def body() -> None:
        async with await AsyncNfsClient.connect(dead, servers=[f"{b.host}:{b.port}"]) as c:
            assert await c.read_file("f") == data
            assert c.rpc.port == b.port

    run(body())
    with ferry.connect(url_of([a], export), servers=[f"{b.host}:{b.port}"], options=FAST) as c:
        with c.open("f", "rb") as f:
            head = f.read(4 << 20)
            kill(a)
            rest = f.read()
        assert sha(head + rest) == sha(data)
        assert c.stats.failovers == 1 and c.engine.rpc.port == b.port

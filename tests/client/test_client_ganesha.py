"""The client against NFS-Ganesha (the third-party reference server) on loopback."""

from __future__ import annotations

import hashlib
import os

import pytest

from ferry.client import AsyncNfsClient
from helpers.aio import run as run_bounded
from helpers.peers import GaneshaServer

pytestmark = pytest.mark.interop


def run(coro):  # type: ignore[no-untyped-def]
    return run_bounded(coro, 300)


def test_mount_listdir_read_write(ganesha_server: GaneshaServer) -> None:
    (ganesha_server.export / "d").mkdir()
    (ganesha_server.export / "d" / "hello.txt").write_bytes(b"hello")
    sizes = [0, 1, (1 << 20) + 1, 64 << 20]
    blobs = {n: os.urandom(n) for n in sizes}

    async def body() -> None:
        async with await AsyncNfsClient.connect(ganesha_server.url) as c:
            assert c.export == str(ganesha_server.export)
            assert await c.listdir() == ["d"]
            assert await c.read_file("d/hello.txt") == b"hello"
            for n, data in blobs.items():
                await c.write_file(f"f{n}", data)
                back = await c.read_file(f"f{n}")
                assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
            assert c.rpc.stats.max_in_flight > 1

    run(body())
    for n, data in blobs.items():
        assert (ganesha_server.export / f"f{n}").read_bytes() == data


def test_scandir_thousands(ganesha_server: GaneshaServer) -> None:
    big = ganesha_server.export / "big"
    big.mkdir()
    names = {f"entry-{i:05d}" for i in range(3000)}
    for name in names:
        (big / name).write_bytes(b"")

    async def body() -> None:
        async with await AsyncNfsClient.connect(ganesha_server.url) as c:
            entries = await c.scandir("big")
            assert {e.name for e in entries} == names
            assert all(e.handle and e.attr and e.attr.size == 0 for e in entries)
            assert set(await c.listdir("big")) == names
            pages = c.rpc.stats.calls
            assert pages > 3  # many READDIRPLUS calls, cookies carried over

    run(body())

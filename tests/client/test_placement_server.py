"""READ data received straight into the caller's buffer, through a real Ferry server and
the fault-injecting proxy: byte-exact with replies reordered, dropped, and cut off in the
middle of a payload; ``read_into`` at the edges (end of file, a short buffer)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from client_proxy import Proxy, through_proxy, url_for
from rawclient import RunningServer

from ferry.client import AsyncNfsClient, RpcOptions
from helpers.aio import run, sha

FAST = RpcOptions(timeout=0.5, max_tries=4)
SMALL_IO = {"rsize": 65536, "wsize": 65536}


def test_read_file_lands_in_place(ferry_srv: RunningServer, export_root: Path) -> None:
    data = os.urandom((3 << 20) + 12345)  # a partial last READ, odd padding
    (export_root / "f").write_bytes(data)

    async def body() -> None:
        async with await AsyncNfsClient.connect(url_for(ferry_srv.port, export_root)) as c:
            assert await c.read_file("f") == data
            assert c.rpc.stats.placed_bytes == len(data)

    run(body())


def test_read_into_edges(ferry_srv: RunningServer, export_root: Path) -> None:
    data = os.urandom(100_000)
    (export_root / "f").write_bytes(data)

    async def body() -> None:
        async with await AsyncNfsClient.connect(url_for(ferry_srv.port, export_root)) as c:
            fh = (await c.nfs.lookup(c.root, "f")).object
            buf = bytearray(b"\xee" * 70_000)
            view = memoryview(buf)[10:60_010]
            res = await c.nfs.read_into(fh, 50_000, view)  # runs into end of file
            assert (res.count, res.eof) == (50_000, True)
            assert bytes(res.data) == data[50_000:] == bytes(view[:50_000])
            assert buf[:10] == b"\xee" * 10 and buf[50_010:] == b"\xee" * 19_990
            res = await c.nfs.read_into(fh, 1000, memoryview(buf)[:5000])  # shorter than rsize
            assert (res.count, res.eof) == (5000, False)
            assert buf[:5000] == data[1000:6000]
            res = await c.nfs.read_into(fh, 200_000, memoryview(buf))  # beyond end of file
            assert (res.count, res.eof) == (0, True)
            with pytest.raises(TypeError):  # never handed to the socket
                await c.nfs.read_into(fh, 0, memoryview(data))

    run(body())


def test_out_of_order_replies_land_in_place(ferry_srv: RunningServer, export_root: Path) -> None:
    data = os.urandom(2 << 20)
    (export_root / "f").write_bytes(data)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        proxy.reorder = True
        assert sha(await c.read_file("f")) == sha(data)
        assert proxy.reordered > 0
        assert c.rpc.stats.placed_bytes == len(data)

    run(through_proxy(ferry_srv.port, export_root, body, options=RpcOptions(window=8), **SMALL_IO))


def test_reply_cut_mid_payload(ferry_srv: RunningServer, export_root: Path) -> None:
    """The connection dies halfway through a READ payload being received in place: the
    call is resent on the new connection and its whole reply lands again."""
    data = os.urandom(4 << 20)
    (export_root / "f").write_bytes(data)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        for _ in range(2):
            proxy.cut_inside_reply = proxy.replies + 10
            assert sha(await c.read_file("f")) == sha(data)
        assert proxy.cuts == 2 and c.rpc.stats.reconnects == 2
        assert c.rpc.stats.placed_bytes >= 2 * len(data)

    run(through_proxy(ferry_srv.port, export_root, body, options=FAST, **SMALL_IO))


def test_cancelled_read_leaves_buffer_alone(ferry_srv: RunningServer, export_root: Path) -> None:
    """A READ given up on (its task cancelled while the reply is held back) never writes
    into its buffer afterwards, even when the reply comes."""
    data = os.urandom(60_000)
    (export_root / "f").write_bytes(data)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        fh = (await c.nfs.lookup(c.root, "f")).object
        proxy.reorder = True  # a lone reply is held back 50 ms
        buf = bytearray(60_000)
        task = asyncio.ensure_future(c.nfs.read_into(fh, 0, memoryview(buf)))
        await asyncio.sleep(0.01)
        task.cancel()
        for _ in range(500):  # the held reply arrives (within 5 s), to no call
            if c.rpc.stats.ignored_replies:
                break
            await asyncio.sleep(0.01)
        assert c.rpc.stats.ignored_replies == 1
        assert buf == bytes(60_000)
        proxy.reorder = False
        assert await c.read_file("f") == data

    run(through_proxy(ferry_srv.port, export_root, body, **SMALL_IO))

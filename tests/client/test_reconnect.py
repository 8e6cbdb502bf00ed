"""Reconnecting to a server that is gone while something still accepts its connections
(``ferry proxy``, a load balancer, a port forwarder in front of a dead server): each new
connection is accepted, then closed or reset at once. Such a connection is a failed
attempt, not a reconnect, whether it dies while the client is still opening it or just
after: the retry policy's pauses, attempts and ``retry_for`` apply, with no storm of
connections, and a server that comes back is found again.

A fake RPC server in the test's own event loop answers every call with SUCCESS, or, once
told to, resets every connection it accepts (and the ones it has).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import pytest

from ferry.client.aio import AsyncRpcClient, RpcOptions
from ferry.errors import RpcConnectionError, RpcError
from ferry.rpc.message import AcceptStat, pack_accepted
from ferry.rpc.record import frame_bytes
from ferry.xdr import Packer

T = TypeVar("T")
SOFT = RpcOptions(timeout=5.0, max_tries=2, reconnect_tries=3)  # a call alone gives up in 15 s
NULL = (100003, 3, 0)
LIMIT = 4.0  # seconds any call below may take (the call timeouts alone would take 15 s)


class FakeServer:
    """Answers each call SUCCESS; with ``dead`` set, resets every connection at once."""

    def __init__(self) -> None:
        self.dead = False
        self.accepted = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.transport.abort()

    def die(self) -> None:
        """From now on, every connection is reset (the existing ones too)."""
        self.dead = True
        for w in list(self._writers):
            w.transport.abort()

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self.dead:
            w.transport.abort()  # RST: what a proxy does when the server behind it is gone
            return
        self._writers.add(w)
        try:
            while True:
                mark = int.from_bytes(await r.readexactly(4), "big")
                record = await r.readexactly(mark & 0x7FFFFFFF)
                p = Packer()
                pack_accepted(p, int.from_bytes(record[:4], "big"), AcceptStat.SUCCESS)
                w.write(frame_bytes(p.get_buffer()))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(w)
            w.transport.abort()


@contextlib.asynccontextmanager
async def served() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@contextlib.contextmanager
def busy_after_connect(delay: float) -> Any:
    """The event loop is busy for ``delay`` s between a connection being made and the
    coroutine that made it going on (a CLI copying, a mount serving): whatever happens to
    the connection meanwhile happens while the client is still opening it."""
    loop = asyncio.get_running_loop()
    plain = loop.create_connection

    async def slow(*args: Any, **kwargs: Any) -> Any:
        made = await plain(*args, **kwargs)
        await asyncio.sleep(delay)
        return made

    loop.create_connection = slow  # type: ignore[method-assign]
    try:
        yield
    finally:
        del loop.create_connection  # type: ignore[method-assign]


async def _null(client: AsyncRpcClient) -> None:
    await client.call(*NULL, [], label="NULL")


async def _within(limit: float, work: Awaitable[T]) -> T:
    """``work``'s result or error (an RpcTimeout is a TimeoutError too); fails the test if
    it takes longer than ``limit`` seconds."""
    task = asyncio.ensure_future(work)
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RpcError):
            await task
        pytest.fail(f"still waiting after {limit} s (the client kept a dead connection)")
    return task.result()


async def _connected_then_dead(server: FakeServer, options: RpcOptions) -> AsyncRpcClient:
    """A client that has talked to ``server``, which then dies behind its listener."""
    client = AsyncRpcClient("127.0.0.1", server.port, options)
    await client.connect()
    await _null(client)
    server.die()
    await asyncio.sleep(0.05)  # the client sees its connection go (no call waits: no reconnect)
    return client


def test_a_connection_reset_while_it_is_opened_is_a_failed_attempt() -> None:
    """(a) The reset arrives before ``_open`` has taken the new connection: it must count,
    not leave the client sending into a closed connection until the call times out."""

    async def body() -> None:
        async with served() as server:
            client = await _connected_then_dead(server, SOFT)
            try:
                with busy_after_connect(0.1):
                    with pytest.raises(RpcConnectionError, match="cannot reconnect"):
                        await _within(LIMIT, _null(client))
                    fresh = AsyncRpcClient("127.0.0.1", server.port, SOFT)
                    with pytest.raises(ConnectionError):  # the first connection: at once
                        await _within(LIMIT, fresh.connect())
                    await fresh.close()
                assert server.accepted <= 1 + SOFT.reconnect_tries + 1
            finally:
                await client.close()

    asyncio.run(body())


def test_soft_gives_up_after_its_attempts_on_a_listener_that_resets() -> None:
    """(b) Soft: each accepted-then-reset connection is one of ``reconnect_tries``
    attempts; the call fails after them, in well under a call timeout."""

    async def body() -> None:
        async with served() as server:
            client = await _connected_then_dead(server, SOFT)
            try:
                start, before = time.monotonic(), server.accepted
                with pytest.raises(RpcConnectionError, match="cannot reconnect") as info:
                    await _within(LIMIT, _null(client))
                took, tries = time.monotonic() - start, server.accepted - before
                assert tries == SOFT.reconnect_tries, (tries, str(info.value))
                assert took < SOFT.timeout, took
                assert client.stats.reconnects == 0
            finally:
                await client.close()

    asyncio.run(body())


def test_hard_waits_retry_for_without_a_storm_of_connections() -> None:
    """(b) Hard: the attempts back off (doubling to 2 s) until ``retry_for`` is over; a
    storm would open thousands of connections in that time."""
    retry_for = 2.0

    async def body() -> None:
        async with served() as server:
            hard = RpcOptions(timeout=5.0, max_tries=2, reconnect_tries=2, retry_for=retry_for)
            client = await _connected_then_dead(server, hard)
            try:
                start, before = time.monotonic(), server.accepted
                with pytest.raises(RpcError, match="did not answer for 2 s"):
                    await _within(retry_for + LIMIT, _null(client))
                took, tries = time.monotonic() - start, server.accepted - before
                assert retry_for - 0.1 <= took < retry_for + 2.5, took
                assert tries <= 10, f"{tries} connections in {took:.1f} s"
                assert client.stats.reconnects == 0
            finally:
                await client.close()

    asyncio.run(body())


def test_a_server_back_behind_the_listener_is_found_again() -> None:
    """After a second of resets the server answers again: the waiting call completes and
    that is one reconnect, not one per accepted connection."""

    async def body() -> None:
        async with served() as server:
            hard = RpcOptions(timeout=5.0, max_tries=2, reconnect_tries=2, retry_for=30.0)
            client = await _connected_then_dead(server, hard)
            try:
                call = asyncio.ensure_future(_null(client))
                await asyncio.sleep(1.0)
                assert not call.done()
                server.dead = False
                await _within(LIMIT, call)
                assert client.stats.reconnects == 1
                assert server.accepted <= 12, server.accepted
            finally:
                await client.close()

    asyncio.run(body())

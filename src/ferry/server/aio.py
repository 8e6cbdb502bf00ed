"""The event-driven server model: one asyncio loop, many connections, calls run in threads.

The loop only moves bytes: a ``ServerConnection`` (the same sans-IO object the blocking
models run) cuts the stream into calls and keeps the connection's limits, the
``Dispatcher`` (run in a thread pool so slow disks never block the loop) turns each call
into a reply, and replies go back framed, in whatever order they finish (XIDs match them
up). At most ``max_in_flight`` calls run at once per connection; past that, or while the
peer does not read its replies, reading pauses (backpressure instead of unbounded
buffering). Idle, record and send deadlines and oversized records close it abortively.

``AsyncModel`` is the ``async`` server model: one such loop, or with ``--workers N`` N
forked processes each running one on the shared listening sockets. With ``--udp`` each
loop also serves its own UDP sockets (``ferry.server.udp``) with the same call threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

from ferry import loops
from ferry.errors import RecordError
from ferry.rpc.dispatch import TCP_SENDFILE, Address, Dispatcher
from ferry.segment import Part, SegmentShrank, close_segments
from ferry.server.accounting import cut_off, over_cap
from ferry.server.aiosend import settle, write_reply
from ferry.server.blocking import LINGER_ABORT
from ferry.server.connection import Limits, ServerConnection
from ferry.server.metrics import NO_METRICS, Metrics
from ferry.server.skeleton import ServerModel
from ferry.server.stopping import Stopper, stop_requested_early
from ferry.server.udp import RpcDatagramProtocol
from ferry.server.workers import supervise
from ferry.workpool import WorkPool

__all__ = ["AsyncModel", "AsyncServer", "Limits", "RpcStreamProtocol"]

log = logging.getLogger("ferry.server")


class RpcStreamProtocol(asyncio.BufferedProtocol):
    """One TCP connection: the asyncio adapter around ``ServerConnection`` (record marking
    in, dispatch in threads, framed replies out, in whatever order calls finish).

    A buffered protocol: the loop reads straight into the connection's record buffer (one
    copy from the kernel, none after). One timer per connection, armed at the connection's
    next deadline; a deadline that moves later leaves it armed and it re-arms on firing
    (no cancel and re-create per received buffer)."""

    __slots__ = ("server", "loop", "conn", "transport", "peer", "paused", "timer", "timer_at")

    def __init__(self, server: AsyncServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.conn = ServerConnection(server.limits, self.loop.time())
        self.transport: asyncio.Transport | None = None
        self.peer: Address = None
        self.paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.peer = transport.get_extra_info("peername")
        server = self.server
        if over_cap(len(server.connections), server.limits, server.metrics, self.peer):
            self.transport.abort()
            return
        server.connections.add(self)
        server.metrics.connection_opened()
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.connections:  # not for a refused one
            self.server.connections.discard(self)
            self.server.metrics.connection_closed()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.conn.reader.incomplete:
            log.info("%s disconnected mid-record", self.peer)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.conn.buffer_updated(nbytes, self.loop.time())
        self._drain()

    def eof_received(self) -> bool:
        """The peer half-closed: answer what it sent, then close (True keeps us open)."""
        self.conn.eof_received()
        self._drain()
        return True

    def pause_writing(self) -> None:
        """The peer is not reading its replies: stop taking calls until it does (and give
        up on it after ``send_timeout``)."""
        self.conn.pause_writing(self.loop.time())
        self._drain()

    def resume_writing(self) -> None:
        self.conn.resume_writing(self.loop.time())
        self._drain()

    def reply(self, parts: Sequence[Part] | None) -> None:
        """Called on the loop when a call finishes (a READ's data may be left in its file:
        ``write_reply`` sends it from there)."""
        conn = self.conn
        conn.call_done(self.loop.time())
        transport = self.transport
        if transport is None or transport.is_closing():
            if parts is not None:
                close_segments(parts)
            return
        if parts is not None:
            try:
                write_reply(transport, conn.send(parts))
            except (SegmentShrank, OSError) as exc:
                self._abort(exc)
                return
        self._drain()

    def _drain(self) -> None:
        """Dispatch every call the connection lets us take; then close, or pause or resume
        reading, and arm the timer for the next deadline."""
        conn = self.conn
        try:
            while (record := conn.next_call()) is not None:
                self.server.submit(record, self)
        except RecordError as exc:
            self._abort(exc)
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if conn.finished() is not None:
            transport.close()
            return
        if not conn.eof:
            if conn.reading:
                if self.paused:
                    self.paused = False
                    transport.resume_reading()
            elif not self.paused:
                self.paused = True
                transport.pause_reading()
        self._arm()

    def _arm(self) -> None:
        deadline = self.conn.deadline()
        if deadline is None or (self.timer is not None and self.timer_at <= deadline):
            return  # an armed timer that fires earlier re-arms itself then
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_at(deadline, self._on_deadline)
        self.timer_at = deadline

    def _on_deadline(self) -> None:
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        expired = self.conn.expired(self.loop.time())
        if expired is not None:
            self._abort(expired)
        else:
            self._arm()

    def _abort(self, why: Exception) -> None:
        """Close at once with a reset, dropping whatever the kernel still holds for it."""
        cut_off(self.peer, why, self.server.metrics)
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
        transport.abort()


R = TypeVar("R")


class CallWorkers:
    """Threads that run dispatcher calls and hand replies back to the loop.

    Leaner than ``run_in_executor``: one queue put per call and one ``call_soon_threadsafe``
    per reply, with no future objects chained between the thread and the loop; this is
    per-call latency that clients doing one call at a time (``ls`` of a big directory) feel.
    The threads are a ``WorkPool``: calls stuck on a store (each waits up to the backend's
    ``op_timeout``) do not keep other calls (NULL, MOUNT, other files) from a thread.
    """

    def __init__(self, count: int, limit: int = 256) -> None:
        self.pool = WorkPool(count, limit=limit, name="ferry-call")

    def submit(self, work: Callable[[], R | None], done: Callable[[R | None], object]) -> None:
        """Run ``work()`` in a worker, then ``done(result)`` (``done`` must be thread-safe)."""

        def job() -> None:
            result: R | None
            try:
                result = work()
            except BaseException:  # the dispatcher never raises; this guards the adapter
                log.exception("call crashed the dispatcher")
                result = None
            done(result)

        self.pool.submit(job)

    def shutdown(self) -> None:
        self.pool.shutdown(timeout=5.0)


class AsyncServer:
    """Serves a ``Dispatcher`` on TCP listeners with asyncio."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        limits: Limits | None = None,
        threads: int | None = None,
        metrics: Metrics = NO_METRICS,
    ) -> None:
        self.dispatcher = dispatcher
        self.limits = limits or Limits()
        self.metrics = metrics
        self.connections: set[RpcStreamProtocol] = set()
        self.workers = CallWorkers(threads or min(32, (os.cpu_count() or 1) * 4))
        self.servers: list[asyncio.Server] = []
        self.datagrams: list[asyncio.BaseTransport] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def submit(self, record: bytes | bytearray, conn: RpcStreamProtocol) -> None:
        loop = self.loop
        assert loop is not None
        dispatcher = self.dispatcher
        self.workers.submit(
            lambda: settle(dispatcher.handle_parts(record, conn.peer, TCP_SENDFILE)),
            lambda result: loop.call_soon_threadsafe(conn.reply, result),
        )

    async def listen(self, host: str, port: int) -> int:
        """Start a TCP listener; returns the bound port (useful with port 0)."""
        self.loop = asyncio.get_running_loop()
        server = await self.loop.create_server(
            lambda: RpcStreamProtocol(self), host, port, reuse_address=True, backlog=256
        )
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def listen_socket(self, sock: socket.socket) -> None:
        """Serve on a socket already bound and listening (maybe shared with other workers)."""
        self.loop = asyncio.get_running_loop()
        server = await self.loop.create_server(lambda: RpcStreamProtocol(self), sock=sock)
        self.servers.append(server)

    async def listen_udp(self, sock: socket.socket) -> None:
        """Serve RPC datagrams on a bound UDP socket (maybe one of a SO_REUSEPORT group)."""
        self.loop = asyncio.get_running_loop()
        cap = self.limits.max_in_flight * 4  # for all UDP clients of this socket together
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: RpcDatagramProtocol(self.dispatcher, self.workers.submit, cap), sock=sock
        )
        self.datagrams.append(transport)

    async def close(self) -> None:
        for transport in self.datagrams:
            transport.close()
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self.servers:
            await server.wait_closed()
        self.workers.shutdown()


class AsyncModel(ServerModel):
    """The ``async`` model: the loop above in this process, or in ``workers`` forked ones."""

    name = "async"

    @classmethod
    def shares_state(cls, workers: int) -> bool:
        return workers > 1

    def run(self) -> None:
        if self.spec.workers > 1:
            supervise(self.spec.workers, self.serve, Stopper().install())
        else:
            self.serve(0)

    def serve(self, slot: int) -> None:
        """The loop accepts (``RpcStreamProtocol`` is its spawn hook, ``over_cap`` its cap)."""
        udp = self.spec.udp(slot)
        with self.spec.open_app() as app:
            loops.run(self._main(app.dispatcher(self.spec.port), udp, app.metrics))

    async def _main(
        self, dispatcher: Dispatcher, udp: Sequence[socket.socket], metrics: Metrics
    ) -> None:
        server = AsyncServer(dispatcher, self.spec.limits, metrics=metrics)
        try:
            for sock in self.spec.listeners:
                await server.listen_socket(sock)
            for sock in udp:  # this worker's own sockets of each SO_REUSEPORT group
                await server.listen_udp(sock)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            if stop_requested_early():
                stop.set()
            await stop.wait()
            log.info("shutting down")
        finally:
            await server.close()

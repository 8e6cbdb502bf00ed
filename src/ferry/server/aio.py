"""The event-driven server model: one asyncio loop, many connections, calls run in threads.

The loop only moves bytes: a ``RecordReader`` cuts the stream into call records, the
``Dispatcher`` (run in a thread pool so slow disks never block the loop) turns each into a
reply, and replies go back framed, in whatever order they finish (XIDs match them up).
Per connection, at most ``max_in_flight`` calls run at once; past that, or while the
peer does not read its replies, reading pauses (backpressure instead of unbounded
buffering). Idle connections are closed after ``idle_timeout`` seconds, a record still
incomplete ``record_timeout`` seconds after it began (slowloris) or replies the peer has
not taken for ``send_timeout`` seconds close it abortively; oversized records too.

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
from typing import cast

from ferry import loops
from ferry.errors import RecordError
from ferry.rpc.dispatch import Address, Buffer, Dispatcher
from ferry.rpc.record import RecordReader, frame
from ferry.server.base import (
    LINGER_ABORT,
    Limits,
    ServerModel,
    Stopper,
    stop_requested_early,
    supervise,
)
from ferry.server.metrics import NO_METRICS, Metrics
from ferry.server.udp import RpcDatagramProtocol
from ferry.workpool import WorkPool

__all__ = ["AsyncModel", "AsyncServer", "Limits", "RpcStreamProtocol"]

log = logging.getLogger("ferry.server")


class RpcStreamProtocol(asyncio.BufferedProtocol):
    """One TCP connection: record marking in, dispatch in threads, framed replies out.

    A buffered protocol: the loop reads straight into the record reader's buffers
    (one copy from the kernel, none after)."""

    def __init__(self, server: AsyncServer) -> None:
        self.server = server
        self.reader = RecordReader(server.limits.max_record)
        self.transport: asyncio.Transport | None = None
        self.peer: Address = None
        self.in_flight = 0
        self.paused = False
        self.write_blocked = False
        self.eof = False
        self.idle: asyncio.TimerHandle | None = None
        self.record_timer: asyncio.TimerHandle | None = None
        self.send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.peer = transport.get_extra_info("peername")
        if len(self.server.connections) >= self.server.limits.max_connections:
            log.info("refusing %s: %d connections open", self.peer, len(self.server.connections))
            self.server.metrics.connection_rejected()
            self.transport.abort()
            return
        self.server.connections.add(self)
        self.server.metrics.connection_opened()
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._touch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server.connections:  # not for a refused one
            self.server.connections.discard(self)
            self.server.metrics.connection_closed()
        for timer in (self.idle, self.record_timer, self.send_timer):
            if timer is not None:
                timer.cancel()
        if self.reader.incomplete:
            log.info("%s disconnected mid-record", self.peer)

    def _touch(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
        timeout = self.server.limits.idle_timeout
        if timeout > 0:
            self.idle = asyncio.get_running_loop().call_later(timeout, self._on_idle)

    def _on_idle(self) -> None:
        if self.in_flight == 0 and self.transport is not None:
            self._abort("idle timeout", "idle")
        else:
            self._touch()

    def _abort(self, why: str, timeout: str = "") -> None:
        """Close at once with a reset, dropping whatever the kernel still holds for it;
        ``timeout`` names the timeout (idle, record, send) that cut it off, if one did."""
        log.info("closing connection from %s: %s", self.peer, why)
        if timeout:
            self.server.metrics.timeout(timeout)
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
        transport.abort()

    def _watch_record(self) -> None:
        """Arm the record deadline while a record is half received, disarm it otherwise."""
        if not self.reader.incomplete:
            if self.record_timer is not None:
                self.record_timer.cancel()
                self.record_timer = None
        elif self.record_timer is None and self.server.limits.record_timeout > 0:
            loop = asyncio.get_running_loop()
            self.record_timer = loop.call_later(
                self.server.limits.record_timeout, self._on_record_timeout
            )

    def _on_record_timeout(self) -> None:
        self.record_timer = None
        if self.paused:  # we stopped reading, so the slowness is ours: wait again
            self._watch_record()
        else:
            self._abort("record timeout", "record")

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self._touch()
        self.reader.buffer_updated(nbytes)
        self._drain_records()
        self._watch_record()

    def eof_received(self) -> bool:
        """The peer half-closed: answer what it sent, then close (True keeps us open)."""
        self.eof = True
        self.reader.eof_received()
        self._drain_records()
        return True

    def pause_writing(self) -> None:
        """The peer is not reading its replies: stop taking calls until it does, and give
        up on it after ``send_timeout``."""
        self.write_blocked = True
        timeout = self.server.limits.send_timeout
        if timeout > 0 and self.send_timer is None:
            loop = asyncio.get_running_loop()
            self.send_timer = loop.call_later(
                timeout, self._abort, "send timeout (the client does not read its replies)", "send"
            )

    def resume_writing(self) -> None:
        self.write_blocked = False
        if self.send_timer is not None:
            self.send_timer.cancel()
            self.send_timer = None
        self._drain_records()

    def _drain_records(self) -> None:
        while self.in_flight < self.server.limits.max_in_flight and not self.write_blocked:
            try:
                record = self.reader.next_record()
            except RecordError as exc:
                self._abort(str(exc))
                return
            if record is None:
                if self.eof and self.in_flight == 0 and self.transport is not None:
                    self.transport.close()
                break  # and fall through: reading may have to resume
            self.in_flight += 1
            self.server.submit(record, self)
        self._update_reading()

    def _update_reading(self) -> None:
        """Read only while we can take more calls and the peer takes our replies."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.eof:
            return
        want = self.in_flight < self.server.limits.max_in_flight and not self.write_blocked
        if want and self.paused:
            self.paused = False
            transport.resume_reading()
        elif not want and not self.paused:
            self.paused = True
            transport.pause_reading()

    def reply(self, buffers: Sequence[Buffer] | None) -> None:
        """Called on the loop when a call finishes."""
        self.in_flight -= 1
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if buffers is not None:
            transport.writelines(frame(buffers))
        self._drain_records()


Reply = list[Buffer] | None


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

    def submit(self, work: Callable[[], Reply], done: Callable[[Reply], object]) -> None:
        """Run ``work()`` in a worker, then ``done(result)`` (``done`` must be thread-safe)."""

        def job() -> None:
            result: Reply
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
            lambda: dispatcher.handle(record, conn.peer),
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
            supervise(self.spec.workers, self._serve, Stopper().install())
        else:
            self._serve(0)

    def _serve(self, slot: int) -> None:
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

"""The event-driven server model: one asyncio loop, many connections, calls run in threads.

The loop moves bytes: a ``ServerConnection`` (the same sans-IO object the blocking
models run) cuts the stream into calls and keeps the connection's limits, the
``Dispatcher`` turns each call into a reply, and replies go back framed, in whatever
order they finish (XIDs match them up). Calls that may wait on a disk run in a thread
pool, so slow disks never block the loop; calls that wait on nothing slow (NULL, and
metadata reads of prompt backends) run on the loop itself, without the two thread hops,
under a tripwire that sends them to the threads while one is slow (``ferry.server.inline``).
Replies answered together go out in one write per connection. At most ``max_in_flight``
calls are in progress at once per connection (a reply not yet handed to the transport
counts); past that, or while the peer does not read its replies, reading pauses
(backpressure instead of unbounded buffering). Idle, record and send deadlines and
oversized records close it abortively.

``AsyncModel`` is the ``async`` server model: one such loop, or with ``--workers N`` N
forked processes each running one on the shared listening sockets. With ``--udp`` each
loop also serves its own UDP sockets (``ferry.server.udp``) with the same call threads.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar, cast

from ferry import loops
from ferry.errors import RecordError, WouldBlock
from ferry.rpc.dispatch import TCP_SENDFILE, Address, Dispatcher
from ferry.rpc.record import frame
from ferry.segment import Part, SegmentShrank, close_segments
from ferry.server.accounting import cut_off, over_cap
from ferry.server.aiosend import settle, write_reply
from ferry.server.app import backend_class
from ferry.server.blocking import LINGER_ABORT
from ferry.server.config import ServerConfig
from ferry.server.connection import Limits, ServerConnection
from ferry.server.inline import INLINE, NO_BACKEND, TRY, WATCHED, InlinePolicy
from ferry.server.metrics import NO_METRICS, Metrics
from ferry.server.skeleton import ServerModel
from ferry.server.stopping import Stopper, stop_requested_early
from ferry.server.udp import RpcDatagramProtocol
from ferry.server.workers import supervise, usable_cpus
from ferry.workpool import WorkPool

__all__ = ["AsyncModel", "AsyncServer", "Limits", "RpcStreamProtocol"]

log = logging.getLogger("ferry.server")


class RpcStreamProtocol(asyncio.BufferedProtocol):
    """One TCP connection: the asyncio adapter around ``ServerConnection`` (record marking
    in, dispatch in threads, framed replies out, in whatever order calls finish).

    A buffered protocol: the loop reads straight into the connection's record buffer (one
    copy from the kernel, none after). One timer per connection, armed at the connection's
    next deadline; a deadline that moves later leaves it armed and it re-arms on firing
    (no cancel and re-create per received buffer). Replies collect in ``out`` and go to
    the transport in one ``writelines`` (one ``writev``) per flush."""

    __slots__ = (
        "server",
        "loop",
        "conn",
        "transport",
        "peer",
        "paused",
        "timer",
        "timer_at",
        "out",
        "answered",
        "flush_pending",
    )

    def __init__(self, server: AsyncServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.conn = ServerConnection(server.limits, self.loop.time())
        self.transport: asyncio.Transport | None = None
        self.peer: Address = None
        self.paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.out: list[Part] = []  # framed replies not yet handed to the transport
        self.answered = 0  # calls answered since the last flush (still in flight)
        self.flush_pending = False

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
        return self.conn.reader.get_buffer()  # (``conn.get_buffer``, one call less per read)

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

    def take_reply(self, parts: Sequence[Part] | None) -> None:
        """A call's reply (None: none owed), to go out with the next flush (a READ's data
        may be left in its file: ``write_reply`` sends it from there)."""
        self.answered += 1
        if parts is not None:
            self.out += frame(parts)  # (``conn.send``, one call less per reply)

    def replies_in(self) -> None:
        """Called on the loop once the replies from the call threads are taken:
        write them, and take the calls that waited for room."""
        transport = self.transport
        if transport is None or transport.is_closing():
            self._flush()
            return
        self._drain()

    def _flush(self) -> None:
        """The replies answered since the last flush go to the transport in one write, and
        their calls are done."""
        answered, out = self.answered, self.out
        if not answered:
            return
        self.answered, self.out = 0, []
        self.conn.call_done(self.loop.time(), answered)
        transport = self.transport
        if not out:
            return
        if transport is None or transport.is_closing():
            close_segments(out)
            return
        try:
            write_reply(transport, out)
        except (SegmentShrank, OSError) as exc:
            self._abort(exc)

    def _flush_later(self) -> None:
        self.flush_pending = False
        if self.transport is None or self.transport.is_closing():
            self._flush()
        else:
            self._drain()

    def _drain(self) -> None:
        """Write the replies answered so far (their calls' room is free again); take every
        call the connection lets us take: answer those the inline policy allows at once,
        hand the others to the call threads; write those replies; then close, or pause or
        resume reading, and arm the timer for the next deadline."""
        conn, server = self.conn, self.server
        if self.answered:
            self._flush()
        route, wire = server.inline.route, server.inline.wire
        began = 0.0  # when the last inline call (or the lap after it) began (0: none yet)
        try:
            while (record := conn.next_call()) is not None:
                if began:  # time the call before, so that a slow one trips before routing
                    began = wire.lap(began)
                how = route(record)
                if how in (INLINE, TRY):
                    began = began or wire.enter()
                    reply = server.answer(record, self.peer, how == TRY)
                    if reply is DEFERRED:
                        server.submit(record, self, False)
                    else:
                        self.take_reply(reply)  # type: ignore[arg-type]
                else:
                    server.submit(record, self, how == WATCHED)
        except RecordError as exc:
            self._abort(exc)
            return
        finally:
            if began:  # times the last call (one lap less per read of one call)
                wire.leave(began)
        if self.answered:
            if began and conn.in_flight >= conn.max_in_flight:  # more calls may wait:
                if not self.flush_pending:  # let other connections in before more of ours
                    self.flush_pending = True
                    self.loop.call_soon(self._flush_later)
            else:
                self._flush()
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
DEFERRED = object()
"""``AsyncServer.answer`` of a tried call: it would wait; run it on a call thread."""
Reply = Sequence[Part] | None
"""A call's framed reply parts (a READ's data may be a file segment), or None: no reply."""


class CallWorkers:
    """Threads that run dispatcher calls and hand replies back to the loop.

    Leaner than ``run_in_executor``: one hand-off per call, with no future objects chained
    between the thread and the loop; this is per-call latency that clients doing one call
    at a time (``ls`` of a big directory) feel. TCP calls come back through the server's
    reply queue (``AsyncServer._run``: one loop wake-up per batch); ``submit`` is for UDP.
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
        inline: InlinePolicy | None = None,
    ) -> None:
        """``inline``: which calls the loop answers itself (``App.inline_policy()``); by
        default only those that touch no backend."""
        self.dispatcher = dispatcher
        self.limits = limits or Limits()
        self.metrics = metrics
        self.inline = inline or InlinePolicy(NO_BACKEND)
        self.connections: set[RpcStreamProtocol] = set()
        self.workers = CallWorkers(threads or min(32, (os.cpu_count() or 1) * 4))
        self._replies: collections.deque[tuple[RpcStreamProtocol, Reply]] = collections.deque()
        self._wake_pending = False
        self.servers: list[asyncio.Server] = []
        self.datagrams: list[asyncio.BaseTransport] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def answer(
        self, record: bytes | bytearray, peer: Address, tried: bool = False
    ) -> Reply | object:
        """Run a call on the loop (the protocol times it in the tripwire's lane). ``tried``
        (a READ): ``DEFERRED`` when it would wait on the disk (then ``submit`` it)."""
        try:
            if tried:
                return self.dispatcher.try_handle(record, peer)
            return self.dispatcher.handle(record, peer)
        except WouldBlock:
            return DEFERRED
        except Exception:  # the dispatcher never raises; this guards the loop
            log.exception("call crashed the dispatcher")
            return None

    def submit(self, record: bytes | bytearray, conn: RpcStreamProtocol, watched: bool) -> None:
        """Run a call on a call thread (``watched``: under the tripwire, as a metadata call
        sent there while it is tripped)."""
        self.workers.pool.submit(functools.partial(self._run, record, conn, watched))

    def _run(self, record: bytes | bytearray, conn: RpcStreamProtocol, watched: bool) -> None:
        """On a call thread: the reply joins the loop's queue; the loop is woken only if it
        was not already (one ``call_soon_threadsafe`` per batch of replies, not per reply)."""
        reply: Reply = None
        token = self.inline.wire.begin(self.inline.stuck) if watched else 0
        try:
            reply = settle(self.dispatcher.handle_parts(record, conn.peer, TCP_SENDFILE))
        except BaseException:  # the dispatcher never raises; this guards the adapter
            log.exception("call crashed the dispatcher")
        finally:
            if watched:
                self.inline.wire.end(token)
        self._replies.append((conn, reply))
        if not self._wake_pending:
            self._wake_pending = True
            loop = self.loop
            assert loop is not None
            loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the loop: hand every reply queued by the call threads to its connection, then
        let each connection write its batch (the flag is cleared before the queue is
        emptied, so a reply queued meanwhile either is taken here or wakes the loop)."""
        self._wake_pending = False
        replies = self._replies
        touched: dict[RpcStreamProtocol, None] = {}  # in order, once each
        while replies:
            conn, reply = replies.popleft()
            conn.take_reply(reply)
            touched[conn] = None
        for conn in touched:
            conn.replies_in()

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
        self.inline.close()


class AsyncModel(ServerModel):
    """The ``async`` model: the loop above in this process, or in ``workers`` forked ones.

    By default (``workers`` 0, what ``ferry serve DIR`` runs) one loop per CPU this
    process may use, at most ``MAX_DEFAULT_WORKERS``, when every export's backend can be
    served by several processes (``Backend.multiprocess_safe``); else one."""

    name = "async"
    MAX_DEFAULT_WORKERS: ClassVar[int] = 4
    """A bound, not a measured optimum (only 2 CPUs were measured): each loop is a process
    (about 33 MiB RSS, 8 MiB PSS on that machine) contending on the shared state (the
    duplicate request cache's lock, the file id map)."""

    @classmethod
    def default_workers(cls, config: ServerConfig) -> int:
        if not all(backend_class(e).multiprocess_safe for e in config.exports):
            return 1
        return min(usable_cpus(), cls.MAX_DEFAULT_WORKERS)

    @classmethod
    def shares_state(cls, workers: int) -> bool:
        return workers > 1

    def run(self) -> None:
        if self.spec.workers > 1:
            stop = Stopper().install()
            supervise(self.spec.workers, self.serve, stop, self.spec.metrics.exited)
        else:
            self.serve(0)

    def serve(self, slot: int) -> None:
        """The loop accepts (``RpcStreamProtocol`` is its spawn hook, ``over_cap`` its cap)."""
        udp = self.spec.udp(slot)
        with self.spec.open_app() as app:
            dispatcher, inline = app.dispatcher(self.spec.port), app.inline_policy()
            loops.run(self._main(dispatcher, udp, app.metrics, inline))

    async def _main(
        self,
        dispatcher: Dispatcher,
        udp: Sequence[socket.socket],
        metrics: Metrics,
        inline: InlinePolicy,
    ) -> None:
        server = AsyncServer(dispatcher, self.spec.limits, metrics=metrics, inline=inline)
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

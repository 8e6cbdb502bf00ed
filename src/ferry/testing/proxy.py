"""A link emulator: a loopback TCP/UDP proxy that adds delay, jitter, a rate limit and loss.

This module owns the link model and nothing else; it knows no RPC. Rules:

* Each direction of the link is a ``Wire`` shared by every connection and flow: data is
  serialised onto it at ``rate`` (one queue, first come first served), then propagates for
  ``delay`` plus a jitter sample (uniform in ``[-jitter, +jitter]``). A chunk that arrives
  at ``t`` is therefore released at ``max(max(t, wire free) + size/rate + delay + jitter,
  previous release of its stream)``, so a TCP stream (and a UDP flow, except for the
  datagrams chosen for reordering) keeps its order. Serialising *before* propagating means
  even a single large chunk pays its transmission time (1 MiB at 100 Mbit/s: ~84 ms).
* TCP cannot lose data, so ``loss`` on TCP is the probability, per forwarded chunk (what
  one read returned, at most ``CHUNK`` bytes), that the connection is cut (mode ``cut``:
  the chunk is lost, the data before it is delivered, then both sides are reset, so the
  client must reconnect and retransmit) or that the chunk stalls (mode ``stall``: it and
  everything behind it wait ``stall`` longer, as behind a TCP retransmission timeout).
* UDP datagrams are dropped with probability ``loss``; a fraction ``reorder`` of them is
  held back and delivered just after its successor. ``reorder`` has no effect on TCP.
* Every decision comes from a ``random.Random`` per connection direction, seeded from
  ``(seed, transport, connection number, direction)``, and every chunk or datagram draws
  the same number of values: given the seed, the n-th chunk of the k-th connection always
  meets the same fate, however connections interleave. (How the kernel splits a TCP stream
  into reads is not ours to fix.)
* Memory is bounded: a stream stops reading when ``queue`` bytes wait in its link, and
  stops writing when its peer's transport pushes back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import cast

from ferry.loops import new_event_loop

log = logging.getLogger("ferry.proxy")

CHUNK = 64 * 1024  # the largest chunk forwarded (and drawn for) at once
UDP_FLOW_IDLE = 60.0  # seconds after which a silent UDP flow is forgotten
REORDER_HOLD = 0.05  # longest a held datagram waits for its successor
MAX_UDP_FLOWS = 1024
_EARLY_DATAGRAMS = 64  # datagrams buffered while a flow's upstream socket opens

_now = time.monotonic
"""Arrival and release stamps. Not ``loop.time()``: uvloop's clock is read once per loop
iteration (and in whole milliseconds), so a busy proxy stamped arrivals early and released
data before its delay was up. Timers are armed with ``call_later(deadline - _now())``, so
a stale loop clock makes them fire early, never late, and ``flush`` re-checks each release."""


# -- the model -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LinkSpec:
    """What the emulated link does to each direction; times in seconds, rate in bit/s."""

    delay: float = 0.0
    jitter: float = 0.0
    rate: float = 0.0  # 0: unlimited
    loss: float = 0.0
    reorder: float = 0.0
    seed: int = 0
    tcp_loss: str = "cut"  # or "stall"
    stall: float = 0.2  # Linux's minimum retransmission timeout
    queue: int = 4 << 20  # bytes waiting per stream before it stops reading

    def __post_init__(self) -> None:
        if min(self.delay, self.jitter, self.rate, self.stall) < 0:
            raise ValueError("delay, jitter, rate and stall must not be negative")
        if not (0 <= self.loss <= 1 and 0 <= self.reorder <= 0.5):
            raise ValueError("loss must lie in 0-100% and reorder in 0-50%")
        if self.tcp_loss not in ("cut", "stall"):
            raise ValueError(f"tcp loss mode must be 'cut' or 'stall', not {self.tcp_loss!r}")

    def describe(self) -> str:
        rate = f"{self.rate / 1e6:g} Mbit/s" if self.rate else "unlimited"
        return (
            f"delay {self.delay * 1e3:g}ms jitter {self.jitter * 1e3:g}ms rate {rate} "
            f"loss {self.loss:.2%} ({self.tcp_loss} on TCP) reorder {self.reorder:.2%} "
            f"seed {self.seed}"
        )


@dataclasses.dataclass(slots=True)
class ProxyStats:
    """What the proxy did, over its whole life (read from any thread; ints only)."""

    connections: int = 0
    chunks: int = 0
    cuts: int = 0
    stalls: int = 0
    bytes: int = 0
    flows: int = 0
    datagrams: int = 0
    dropped: int = 0
    reordered: int = 0


class Wire:
    """One direction of the link: the serialisation queue every stream shares."""

    def __init__(self, rate: float) -> None:
        self.bytes_per_second = rate / 8
        self.free_at = 0.0

    def transmit(self, arrival: float, size: int) -> float:
        """When the last bit of ``size`` bytes arriving at ``arrival`` has left."""
        if not self.bytes_per_second:
            return arrival
        self.free_at = max(arrival, self.free_at) + size / self.bytes_per_second
        return self.free_at


_CUT = "cut"  # queue entries that are not data: reset the connection, or pass on an EOF
_EOF = "eof"


class Link:
    """One direction of one TCP connection or UDP flow: chunks waiting for their release."""

    def __init__(self, spec: LinkSpec, wire: Wire, rng: random.Random, stats: ProxyStats) -> None:
        self.spec, self.wire, self.rng, self.stats = spec, wire, rng, stats
        self.loop = asyncio.get_running_loop()
        self.queue: collections.deque[tuple[float, bytes | str]] = collections.deque()
        self.queued = 0
        self.last = 0.0  # release time of the newest entry
        self.blocked = False  # the receiving transport pushes back
        self.timer: asyncio.Handle | None = None
        self.send: Callable[[bytes], None] = lambda data: None
        self.cut: Callable[[], None] = lambda: None
        self.eof: Callable[[], None] = lambda: None
        self.pause: Callable[[bool], None] = lambda paused: None
        self.paused = False
        self.got_eof = False
        self.held: tuple[bytes, asyncio.TimerHandle] | None = None  # UDP reordering

    def _release_time(self, now: float, size: int, jitter: float) -> float:
        sent = self.wire.transmit(now, size)
        return max(sent + max(0.0, self.spec.delay + jitter), self.last)

    def _jitter(self) -> float:
        return (self.rng.random() * 2 - 1) * self.spec.jitter

    def submit_stream(self, data: bytes) -> None:
        """A chunk read from a TCP socket: three draws (loss, jitter, spare), then queue it."""
        for start in range(0, len(data), CHUNK):
            piece = data[start : start + CHUNK] if len(data) > CHUNK else data
            lost, jitter, _ = self.rng.random() < self.spec.loss, self._jitter(), self.rng.random()
            at = self._release_time(_now(), len(piece), jitter)
            self.stats.chunks += 1
            if lost and self.spec.tcp_loss == "cut":
                self.stats.cuts += 1
                self._enqueue(at, _CUT)
                return
            if lost:
                self.stats.stalls += 1
                at += self.spec.stall
            self.stats.bytes += len(piece)
            self._enqueue(at, piece)

    def submit_eof(self) -> None:
        """The sender half-closed: pass the EOF on once the data before it is delivered."""
        if not self.got_eof:
            self.got_eof = True
            self._enqueue(self.last, _EOF)

    def submit_datagram(self, data: bytes) -> None:
        """A UDP datagram: three draws (loss, reorder, jitter), then drop, hold or queue it."""
        lost, early = self.rng.random() < self.spec.loss, self.rng.random()
        jitter = self._jitter()
        self.stats.datagrams += 1
        if lost:
            self.stats.dropped += 1
            return
        at = self._release_time(_now(), len(data), jitter)
        r = self.spec.reorder
        if self.held is None and early < r / (1 - r):  # so that a fraction r is held overall
            timer = self.loop.call_later(at + REORDER_HOLD - _now(), self._release_held)
            self.held = (data, timer)
            return
        self.stats.bytes += len(data)
        self._enqueue(at, data)
        self._release_held()

    def _release_held(self) -> None:
        """The held datagram goes right after the newest one (or alone, after a timeout)."""
        if self.held is None:
            return
        data, timer = self.held
        self.held = None
        timer.cancel()
        self.stats.reordered += 1
        self.stats.bytes += len(data)
        self._enqueue(max(self.last, _now()), data)

    def _enqueue(self, at: float, data: bytes | str) -> None:
        self.last = at
        if not self.queue and not self.blocked and at <= _now() and isinstance(data, bytes):
            self.send(data)  # the zero-delay fast path: no timer, no queue
            return
        self.queue.append((at, data))
        self.queued += len(data) if isinstance(data, bytes) else 0
        if self.queued > self.spec.queue and not self.paused:
            self.paused = True
            self.pause(True)
        self._arm()

    def _arm(self) -> None:
        if self.timer is None and self.queue and not self.blocked:
            self.timer = self.loop.call_later(max(0.0, self.queue[0][0] - _now()), self.flush)

    def flush(self) -> None:
        """Send every due chunk; reset the connection at a cut; re-arm for the rest."""
        self.timer = None
        now = _now() + 0.0005  # within the timer's resolution
        while self.queue and self.queue[0][0] <= now and not self.blocked:
            _, data = self.queue.popleft()
            if data is _CUT:
                self.queue.clear()
                self.cut()
                return
            if data is _EOF:
                self.eof()
                continue
            assert isinstance(data, bytes)
            self.queued -= len(data)
            self.send(data)
        if self.paused and self.queued <= self.spec.queue // 2:
            self.paused = False
            self.pause(False)
        self._arm()

    def set_blocked(self, blocked: bool) -> None:
        """Flow control from the receiving transport (pause_writing/resume_writing)."""
        self.blocked = blocked
        if not blocked and self.timer is None and self.queue:
            self.timer = self.loop.call_soon(self.flush)

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.held is not None:
            self.held[1].cancel()
        self.queue.clear()


def _rng(seed: int, kind: str, number: int, direction: str) -> random.Random:
    return random.Random(f"{seed}/{kind}/{number}/{direction}")


# -- TCP -------------------------------------------------------------------------------------


class _Side(asyncio.Protocol):
    """One socket of a proxied TCP connection: what it reads enters ``inbound``, and what
    leaves ``outbound`` is written to it (kept in ``early`` until the socket is open)."""

    def __init__(self, conn: _Connection, inbound: Link, outbound: Link) -> None:
        self.conn, self.inbound, self.outbound = conn, inbound, outbound
        self.transport: asyncio.Transport | None = None
        self.early: list[bytes] = []
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        if self.conn.closed:  # reset while the server's side was still connecting
            self.transport.abort()
            return
        self.conn.made(self)
        for data in self.early:
            self.transport.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        self.inbound.submit_stream(data)

    def eof_received(self) -> bool:
        self.inbound.submit_eof()
        return True  # keep writing the other direction until its EOF passes too

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.conn.lost(self, exc)

    def pause_writing(self) -> None:
        self.outbound.set_blocked(True)

    def resume_writing(self) -> None:
        self.outbound.set_blocked(False)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self.early.append(data)  # bounded: the link pauses its reader at ``queue``
        elif not self.transport.is_closing():
            self.transport.write(data)

    def reading(self, paused: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def write_eof(self) -> None:
        if self.transport is not None and self.transport.can_write_eof():
            with contextlib.suppress(OSError, RuntimeError):
                self.transport.write_eof()

    def reset(self) -> None:
        """Abort with an RST (SO_LINGER 0), as a broken connection looks to its peer."""
        if self.transport is None or self.lost:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


class _Connection:
    """A proxied TCP connection: the client's socket, the server's, and a link each way.

    A direction is done when its EOF has been passed on or its receiver is gone; the
    connection closes when both are. A reset on either side, or a cut, resets both."""

    def __init__(self, proxy: Proxy, number: int) -> None:
        spec, stats = proxy.spec, proxy.stats
        self.proxy = proxy
        self.up = Link(spec, proxy.wires[0], _rng(spec.seed, "tcp", number, "up"), stats)
        self.down = Link(spec, proxy.wires[1], _rng(spec.seed, "tcp", number, "down"), stats)
        self.client = _Side(self, self.up, self.down)
        self.server = _Side(self, self.down, self.up)
        self.done: set[_Side] = set()  # receivers whose direction is finished
        self.closed = False
        for link, src, dst in (
            (self.up, self.client, self.server),
            (self.down, self.server, self.client),
        ):
            link.send, link.pause, link.cut = dst.write, src.reading, self.reset
            link.eof = functools.partial(self._eof, dst)

    def made(self, side: _Side) -> None:
        if side is self.client:
            self.proxy.spawn(self._open())

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.proxy.to
        try:
            await asyncio.wait_for(loop.create_connection(lambda: self.server, host, port), 10)
        except (OSError, TimeoutError) as exc:
            log.warning("cannot connect to %s:%d: %s", host, port, exc)
            self.reset()

    def _eof(self, receiver: _Side) -> None:
        receiver.write_eof()
        self._finish(receiver)

    def _finish(self, receiver: _Side) -> None:
        self.done.add(receiver)
        if len(self.done) == 2:
            self.close()

    def lost(self, side: _Side, exc: Exception | None) -> None:
        """A socket closed: an error resets the other; a clean close is an EOF from it."""
        if exc is not None:
            self.reset()
            return
        side.outbound.close()  # nothing more can reach it
        self._finish(side)
        side.inbound.submit_eof()  # unless it came already

    def reset(self) -> None:
        self.client.reset()
        self.server.reset()
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.up.close()
        self.down.close()
        for side in (self.client, self.server):
            if side.transport is not None and not side.lost:
                side.transport.close()
        self.proxy.connections.discard(self)


# -- UDP -------------------------------------------------------------------------------------


class _Front(asyncio.DatagramProtocol):
    """The listening UDP socket: each client address is a flow of its own."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        flow = self.proxy.flow(addr)
        if flow is not None:
            flow.up.submit_datagram(data)

    def sendto(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)


class _Flow(asyncio.DatagramProtocol):
    """One client address: its own socket to the server and a link each way."""

    def __init__(self, proxy: Proxy, addr: tuple[str | object, ...], number: int) -> None:
        spec, stats, loop = proxy.spec, proxy.stats, asyncio.get_running_loop()
        self.up = Link(spec, proxy.wires[0], _rng(spec.seed, "udp", number, "up"), stats)
        self.down = Link(spec, proxy.wires[1], _rng(spec.seed, "udp", number, "down"), stats)
        self.up.send = self._send_up
        self.down.send = functools.partial(proxy.front.sendto, addr=addr)
        self.transport: asyncio.DatagramTransport | None = None
        self.early: list[bytes] = []
        self.seen = loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        for data in self.early:
            self.transport.sendto(data)
        self.early.clear()

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.down.submit_datagram(data)

    def _send_up(self, data: bytes) -> None:
        self.seen = self.up.loop.time()
        if self.transport is None:
            if len(self.early) < _EARLY_DATAGRAMS:
                self.early.append(data)
        elif not self.transport.is_closing():
            self.transport.sendto(data)

    def close(self) -> None:
        self.up.close()
        self.down.close()
        if self.transport is not None:
            self.transport.close()


def _udp_socket(host: str, port: int, connect: tuple[str, int] | None = None) -> socket.socket:
    """A non-blocking UDP socket with large buffers (a burst must not overflow the kernel)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        sock.setblocking(False)
        if connect is None:
            sock.bind((host, port))
        else:
            sock.connect(connect)
    except OSError:
        sock.close()
        raise
    return sock


# -- the proxy -------------------------------------------------------------------------------


class Proxy:
    """Listens on ``listen`` (TCP, and UDP on the same port with ``udp``) and forwards to
    ``to`` through the emulated link. ``start`` and ``close`` run on the proxy's loop."""

    def __init__(
        self,
        spec: LinkSpec,
        to: tuple[str, int],
        listen: tuple[str, int] = ("127.0.0.1", 0),
        udp: bool = False,
    ) -> None:
        self.spec, self.to, self.listen, self.udp = spec, to, listen, udp
        self.stats = ProxyStats()
        self.wires = (Wire(spec.rate), Wire(spec.rate))
        self.port = 0
        self.connections: set[_Connection] = set()
        self.flows: dict[tuple[str | object, ...], _Flow] = {}
        self.front = _Front(self)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    async def start(self) -> int:
        """Bind (TCP first, then UDP on the same port number) and return the port."""
        host, port = self.listen
        for attempt in range(10):  # port 0: the UDP port may be taken; try another
            self._server = await asyncio.get_running_loop().create_server(self._accept, host, port)
            self.port = self._server.sockets[0].getsockname()[1]
            try:
                await self._start_udp(host)
                return self.port
            except OSError:
                self._server.close()
                if port or attempt == 9:
                    raise
        raise AssertionError("unreachable")

    async def _start_udp(self, host: str) -> None:
        if not self.udp:
            return
        sock = _udp_socket(host, self.port)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self.front, sock=sock)
        self._sweeper = loop.call_later(UDP_FLOW_IDLE / 4, self._sweep)

    def _accept(self) -> asyncio.Protocol:
        conn = _Connection(self, self.stats.connections)
        self.stats.connections += 1
        self.connections.add(conn)
        return conn.client

    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def flow(self, addr: tuple[str | object, ...]) -> _Flow | None:
        """The flow of a client address, opened on its first datagram (``None``: too many)."""
        flow = self.flows.get(addr)
        if flow is None:
            if len(self.flows) >= MAX_UDP_FLOWS:
                log.warning("too many UDP flows; dropping a datagram from %s", addr)
                return None
            flow = self.flows[addr] = _Flow(self, addr, self.stats.flows)
            self.stats.flows += 1
            self.spawn(self._open_flow(flow))
        flow.seen = asyncio.get_running_loop().time()
        return flow

    async def _open_flow(self, flow: _Flow) -> None:
        loop = asyncio.get_running_loop()
        sock = _udp_socket(self.to[0], 0, self.to)
        await loop.create_datagram_endpoint(lambda: flow, sock=sock)

    def _sweep(self) -> None:
        """Forget UDP flows silent for ``UDP_FLOW_IDLE`` seconds (bounded memory and fds)."""
        loop = asyncio.get_running_loop()
        for addr, flow in list(self.flows.items()):
            if loop.time() - flow.seen > UDP_FLOW_IDLE:
                flow.close()
                del self.flows[addr]
        self._sweeper = loop.call_later(UDP_FLOW_IDLE / 4, self._sweep)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.close()
        for flow in self.flows.values():
            flow.close()
        if self.front.transport is not None:
            self.front.transport.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _ in range(3):  # transports finish closing on later loop iterations
            await asyncio.sleep(0)


# -- running it ------------------------------------------------------------------------------


@contextlib.contextmanager
def running(
    spec: LinkSpec,
    to: tuple[str, int],
    listen: tuple[str, int] = ("127.0.0.1", 0),
    udp: bool = False,
) -> Iterator[Proxy]:
    """A proxy on its own loop in a background thread (for tests and benchmarks)."""
    loop = new_event_loop()
    proxy_box: list[Proxy] = []

    async def start() -> None:
        proxy_box.append(Proxy(spec, to, listen, udp))
        await proxy_box[0].start()

    thread = threading.Thread(target=loop.run_forever, name="ferry-proxy", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        yield proxy_box[0]
    finally:
        if proxy_box:
            asyncio.run_coroutine_threadsafe(proxy_box[0].close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()

"""Pipelined RPC over one asyncio TCP connection (or UDP socket): the IO adapter around
``client.rpc``.

``AsyncRpcClient`` owns the socket, the timers and the loss policy; encoding, xids and
reply matching stay in the sans-IO ``RpcClient``:

* many calls in flight on one connection, at most ``window`` at once (a semaphore);
* each call has a timer; when it fires the call is resent with the same xid (its bytes
  are kept by ``RpcClient``) and the timeout doubles up to ``max_timeout``; after
  ``max_tries`` sends the call fails with ``RpcTimeout`` naming it. ``retransmit`` picks
  what else goes with it: ``selective`` (the default) resends only the lost call,
  ``go-back-n`` also every call still outstanding that was sent after it (the two answers
  to "the 3rd of 100 calls is lost"; benchmarks/rpc_bench.py compares them);
* when the connection breaks, one reconnect task opens a new one (attempts with backoff)
  and resends just the calls still outstanding; callers keep waiting meanwhile. An
  attempt succeeds once the server answers on the new connection: one accepted and then
  closed or reset before (a proxy in front of a dead server) is a failed attempt, like a
  refused one, whether it dies while being opened or just after;
* how long it keeps trying: soft (``retry_for=None``), a call fails after ``max_tries``
  sends and a reconnect after ``reconnect_tries`` attempts per server; hard
  (``retry_for=S``), calls are resent and reconnects retried, round after round over the
  servers, until the server has let a call wait ``retry_for`` seconds without sending a
  byte (counted from the later of its last byte and the call's sending).
  ``client.retry`` turns the user's words (hard/soft, timeout, retrans, retry_for) into
  these options;
* failover: given ``fallbacks`` (other servers of the same store, which accept the same
  handles), a server that cannot be reached after ``reconnect_tries`` attempts, or that
  let a call time out ``max_tries`` times, is left for the next one in the list and the
  outstanding calls are resent there (NFSv3 is stateless; the WRITE/COMMIT verifier tells
  the file layer what to write again). Each server is tried in turn, at most once per
  outage; ``connect`` also takes the first server that answers;
* ``transport="udp"``: one call per datagram, no record marks (RFC 5531 section 11);
  nothing to reconnect, so loss is left to the timers;
* ``stats`` counts calls, retransmissions, timeouts, reconnects and bytes; ``recorder``,
  when set, is told of every send, resend, timeout and reply (for timeline plots).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import logging
import socket
import time
from collections.abc import Callable, Sequence
from typing import cast

from ferry.errors import RecordError, RpcConnectionError, RpcError, RpcTimeout
from ferry.rpc.message import NULL_AUTH, OpaqueAuth
from ferry.rpc.record import Buffer
from ferry.xdr import Unpacker

from .rpc import Reply, RpcClient
from .url import server_name

log = logging.getLogger("ferry.client")


@dataclasses.dataclass(slots=True)
class RpcStats:
    """Counters of one ``AsyncRpcClient`` (cumulative over reconnects)."""

    calls: int = 0
    replies: int = 0
    retransmissions: int = 0  # calls resent by their timer (go-back-n: and the calls after)
    timeouts: int = 0
    reconnects: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    retransmitted_bytes: int = 0  # calls sent again: on timeouts, go-back-n and reconnects
    resent_on_reconnect: int = 0  # calls sent again on a new connection
    failovers: int = 0  # moves to another server of the list
    jukebox_retries: int = 0  # NFS calls sent again after NFS3ERR_JUKEBOX (by ``client.nfs``)
    resent_errors: int = 0  # errors to resent calls found to answer the first send's success
    ignored_replies: int = 0  # replies to no outstanding call (late duplicates)
    placed_bytes: int = 0  # READ data received straight into the caller's buffer
    max_in_flight: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class RpcOptions:
    """Transport policy, and how long the NFS layer retries NFS3ERR_JUKEBOX; times in
    seconds. A call answered JUKEBOX ("try again later") is sent again after
    ``jukebox_delay``, doubling up to ``jukebox_max_delay``, at most ``jukebox_tries`` sends
    in all (about 11 s of waiting with the defaults); then the error is raised."""

    window: int = 32
    timeout: float = 30.0  # first per-call timeout
    max_timeout: float = 120.0
    max_tries: int = 4  # sends of one call, the first included
    connect_timeout: float = 10.0
    reconnect_tries: int = 5  # attempts per server (hard: per round over the servers)
    retry_for: float | None = None  # hard: seconds of outage before calls fail (inf: never)
    transport: str = "tcp"  # or "udp"
    retransmit: str = "selective"  # or "go-back-n"
    jukebox_tries: int = 10  # sends of a call the server answers JUKEBOX; 1: no retry
    jukebox_delay: float = 0.1
    jukebox_max_delay: float = 2.0

    def __post_init__(self) -> None:
        if self.retry_for is not None and not self.retry_for > 0:
            raise ValueError(f"retry_for must be positive (inf: forever), not {self.retry_for}")
        if self.jukebox_tries < 1 or min(self.jukebox_delay, self.jukebox_max_delay) < 0:
            raise ValueError("jukebox_tries must be at least 1 and the delays not negative")
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {self.transport!r}")
        if self.retransmit not in POLICIES:
            raise ValueError(f"retransmit must be one of {POLICIES}, not {self.retransmit!r}")


TRANSPORTS = ("tcp", "udp")
POLICIES = ("selective", "go-back-n")
MAX_DATAGRAM = 65507  # IPv4 UDP payload
PAUSE, MAX_PAUSE = 0.05, 2.0  # seconds between reconnect attempts: doubling, capped
UDP_BUFFER = 4 << 20  # socket buffers: a window of replies must not overflow the kernel
Recorder = Callable[[str, int, int], None]
"""``(event, xid, bytes)`` with event ``call``, ``resend``, ``timeout`` or ``reply``; the
recorder reads its own clock, so the client pays one ``is None`` test per event when off."""


@dataclasses.dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Unpacker]
    label: str
    delay: float
    tries: int = 1
    timer: asyncio.TimerHandle | None = None
    switches: int = 0  # times its tries were restarted on another server
    server: int = 0  # the failover count when it was last (re)started
    placed: int | None = None  # READ data bytes received straight into the destination
    sends: int = 0  # times it was written to a connection (resends included)
    sent: float = dataclasses.field(default_factory=time.monotonic)  # when first sent
    due: float = 0.0  # when its timer resends it


class _Reporting:
    """What both transports tell their client: a lost connection, and flow control."""

    owner: AsyncRpcClient
    lost = False  # the connection is gone (perhaps before _open had taken it)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.owner._on_lost(self, exc)  # type: ignore[arg-type]

    def pause_writing(self) -> None:
        self.owner._writable.clear()

    def resume_writing(self) -> None:
        self.owner._writable.set()


class _Protocol(_Reporting, asyncio.BufferedProtocol):
    """Feeds received bytes straight into the record reader's buffers."""

    def __init__(self, owner: AsyncRpcClient) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        # True once the server has sent a byte, False if the connection was lost first
        self.answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_result(False)
        super().connection_lost(exc)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.owner.rpc.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.owner._on_data(self, nbytes)

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def write(self, buffers: list[Buffer]) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.writelines(buffers)
        return True


class _DatagramProtocol(_Reporting, asyncio.DatagramProtocol):
    """A connected UDP socket: each datagram is one whole reply."""

    def __init__(self, owner: AsyncRpcClient) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.owner._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error from %s:%d: %s", self.owner.host, self.owner.port, exc)

    def write(self, buffers: list[Buffer]) -> bool:
        if self.transport is None or self.transport.is_closing():
            return False
        self.transport.sendto(b"".join(buffers))
        return True


class AsyncRpcClient:
    """An RPC client on one connection with pipelining, retransmission, reconnect and
    failover to ``fallbacks`` ((host, port) of other servers of the same store)."""

    def __init__(
        self,
        host: str,
        port: int,
        options: RpcOptions | None = None,
        *,
        fallbacks: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.servers: list[tuple[str, int]] = [(host, port), *fallbacks]
        self._current = 0  # index in servers
        self._leave = False  # the next reconnect skips the current server (it timed out)
        self.options = options or RpcOptions()
        self.udp = self.options.transport == "udp"
        self.rpc = RpcClient(stream=not self.udp)
        self.stats = RpcStats()
        self.recorder: Recorder | None = None
        self._pending: dict[int, _Pending] = {}
        self._window = asyncio.Semaphore(self.options.window)
        self._writable = asyncio.Event()
        self._writable.set()
        self._protocol: _Protocol | _DatagramProtocol | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False
        self._heard = 0.0  # when the server last sent us anything (monotonic clock)
        self._poke = asyncio.Event()  # a new call waits for the reconnect: try again now

    # -- connection ----------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.servers[self._current][0]

    @property
    def port(self) -> int:
        return self.servers[self._current][1]

    async def connect(self) -> None:
        """Open the connection to the first server that accepts one (in list order)."""
        for attempt in range(len(self.servers)):
            try:
                await self._open()
                return
            except (OSError, TimeoutError) as exc:
                if attempt == len(self.servers) - 1:
                    raise
                log.info(
                    "cannot connect to %s:%d (%s); trying the next server",
                    *self.servers[self._current],
                    exc,
                )
                self._current = (self._current + 1) % len(self.servers)

    async def _open(self) -> _Protocol | _DatagramProtocol:
        """Open a connection to the current server and resend the calls still waiting.
        One already lost by the time it is taken (the server, or a proxy in front of a
        dead one, accepted and reset it) is an error, as a refused one is."""
        loop = asyncio.get_running_loop()
        self.rpc.reset_stream()
        protocol: _Protocol | _DatagramProtocol
        if self.udp:
            _, protocol = await asyncio.wait_for(
                loop.create_datagram_endpoint(
                    lambda: _DatagramProtocol(self), remote_addr=(self.host, self.port)
                ),
                self.options.connect_timeout,
            )
        else:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self), self.host, self.port),
                self.options.connect_timeout,
            )
        if protocol.lost:  # _on_lost ignored it: it was not ours yet
            raise ConnectionResetError(errno.ECONNRESET, "connection closed as it was opened")
        self._protocol = protocol
        self._writable.set()
        for call in self.rpc.outstanding:  # after a reconnect: resend what is unanswered
            if call.xid in self._pending:
                self.stats.resent_on_reconnect += 1
                self._resend(call.xid, call.buffers)
        return protocol

    async def _answered(self, protocol: _Protocol | _DatagramProtocol) -> None:
        """Wait until the server sends a byte on a reopened TCP connection (the answer to
        a call resent on it): a connection lost before is a failed attempt, not a
        reconnect (a listener that accepts and resets, such as a proxy in front of a dead
        server, would otherwise be reconnected to in a storm). After ``timeout`` seconds
        of silence the calls' own timers take over."""
        if not isinstance(protocol, _Protocol):
            return  # UDP: no connection to lose
        done, _ = await asyncio.wait({protocol.answered}, timeout=self.options.timeout)
        if done and not protocol.answered.result():
            raise ConnectionResetError(
                errno.ECONNRESET, "connection closed before the server answered"
            )
        if protocol.lost:  # answered, then lost before this task went on (_on_lost only poked)
            raise ConnectionResetError(errno.ECONNRESET, "connection lost again at once")

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        self._fail_all(RpcConnectionError(f"connection to {self.host}:{self.port} closed"))
        await asyncio.sleep(0)  # let the transport finish closing

    def _on_lost(self, protocol: _Protocol | _DatagramProtocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return  # an old connection we already replaced
        self._protocol = None
        self._writable.set()
        if not self._closed and self._pending:
            log.debug("connection to %s:%d lost (%s); reconnecting", self.host, self.port, exc)
            self._start_reconnect()

    def _start_reconnect(self) -> None:
        """Start the reconnect task; if it runs already, cut its pause short: a new call
        is waiting, and the server may be back."""
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())
        else:
            self._poke.set()

    async def _pause(self, delay: float) -> None:
        """Wait ``delay`` seconds between connection attempts, or PAUSE once poked."""
        self._poke.clear()
        await asyncio.sleep(min(delay, PAUSE))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poke.wait(), delay - PAUSE)

    async def _reconnect(self) -> None:
        """Reconnect to the current server, else to each other one in turn; every server
        gets ``reconnect_tries`` attempts (one that timed out calls is skipped at once).
        Soft: one round, then the waiting calls fail. Hard: round after round until the
        outage has lasted ``retry_for`` seconds."""
        last: BaseException | None = None
        tried: list[str] = []
        backoff = 0  # grows across rounds: a server that stays away is asked every MAX_PAUSE
        warned = False
        for step in range(1 << 62):  # bounded by the rounds (soft) or by retry_for (hard)
            if step >= len(self.servers) and self.options.retry_for is None:
                break
            first_round = step < len(self.servers)
            if (step > 0 or self._leave) and len(self.servers) > 1:
                self._switch()
            self._leave = False
            if first_round:
                tried.append(server_name(self.host, self.port))
            for _ in range(self.options.reconnect_tries):
                if not self._pending:
                    return  # every call gave up meanwhile: the next call starts again
                if self._gave_up():
                    self._fail_all(RpcConnectionError(self._outage_message(last)))
                    return
                try:
                    await self._answered(await self._open())
                except (OSError, TimeoutError) as exc:
                    last = exc
                    await self._pause(min(PAUSE * 2**backoff, MAX_PAUSE))
                    backoff += 1
                    continue
                self.stats.reconnects += 1
                if warned:
                    log.warning("%s answers again", server_name(self.host, self.port))
                return
            if first_round and len(self.servers) > 1:
                log.warning("cannot reach %s (%s)", server_name(self.host, self.port), last)
            if step == len(self.servers) - 1 and self.options.retry_for is not None:
                log.warning(
                    "%s not responding (%s), still trying for up to %g s",
                    ", ".join(tried), last, self.options.retry_for,
                )  # fmt: skip
                warned = True
        self._fail_all(
            RpcConnectionError(
                f"cannot reconnect to {', '.join(tried)} after "
                f"{self.options.reconnect_tries} attempts each: {last}"
            )
        )

    def _silent_for(self, pending: _Pending | None = None) -> float:
        """Seconds calls have waited on a server that sent nothing: since the later of its
        last byte and the sending of ``pending`` (else of the oldest call waiting)."""
        now = time.monotonic()
        sent = (
            pending.sent if pending else min((p.sent for p in self._pending.values()), default=now)
        )
        return now - max(self._heard, sent)

    def _gave_up(self, pending: _Pending | None = None) -> bool:
        """Hard: has the server been silent ``retry_for`` seconds?"""
        limit = self.options.retry_for
        return limit is not None and self._silent_for(pending) >= limit

    def _outage_message(self, last: BaseException | None) -> str:
        servers = ", ".join(server_name(h, p) for h, p in self.servers)
        reason = f" (last error: {last})" if last is not None else ""
        return (
            f"{servers} did not answer for {self.options.retry_for:g} s; "
            f"gave up (retry_for){reason}"
        )

    def _switch(self) -> None:
        """Move to the next server of the list (the caller opens the connection)."""
        self._current = (self._current + 1) % len(self.servers)
        self.stats.failovers += 1
        log.warning("failing over to %s:%d", self.host, self.port)

    def _leave_server(self) -> None:
        """Drop the connection to a server that let a call time out, and fail over."""
        if self._reconnecting is not None and not self._reconnecting.done():
            return  # already moving on
        self._leave = True
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        self._writable.set()
        self._start_reconnect()

    # -- calls ---------------------------------------------------------------------------

    async def call(
        self,
        prog: int,
        vers: int,
        proc: int,
        args: list[Buffer],
        cred: OpaqueAuth = NULL_AUTH,
        label: str = "",
        timeout: float | None = None,
    ) -> Unpacker:
        """Send one call and wait for its results; raises RpcError, RpcTimeout."""
        u, _ = await self.call_into(prog, vers, proc, args, cred, label, timeout)
        return u

    async def call_into(
        self,
        prog: int,
        vers: int,
        proc: int,
        args: list[Buffer],
        cred: OpaqueAuth = NULL_AUTH,
        label: str = "",
        timeout: float | None = None,
        dest: memoryview | None = None,
    ) -> tuple[Unpacker, int | None]:
        """``call``, where the data of a successful READ reply may be received straight
        into ``dest`` (TCP only); returns the results and how many data bytes were placed
        there (``None``: the results hold the data, as from ``call``). ``dest`` is never
        written once this returns or raises."""
        u, placed, _ = await self._call(prog, vers, proc, args, cred, label, timeout, dest)
        return u, placed

    async def call_counted(
        self,
        prog: int,
        vers: int,
        proc: int,
        args: list[Buffer],
        cred: OpaqueAuth = NULL_AUTH,
        label: str = "",
    ) -> tuple[Unpacker, int]:
        """``call``, also returning how many times the call went out: more than once, the
        reply may answer a resend of a call the server had already carried out (its
        duplicate request cache lost in a restart), as NOENT to a REMOVE that did remove."""
        u, _, sends = await self._call(prog, vers, proc, args, cred, label)
        return u, sends

    async def _call(
        self,
        prog: int,
        vers: int,
        proc: int,
        args: list[Buffer],
        cred: OpaqueAuth,
        label: str,
        timeout: float | None = None,
        dest: memoryview | None = None,
    ) -> tuple[Unpacker, int | None, int]:
        if dest is not None and (dest.readonly or not dest.c_contiguous or dest.itemsize != 1):
            raise TypeError("dest must be a writable, contiguous memoryview of bytes")
        if self._closed:
            raise RpcConnectionError(f"client for {self.host}:{self.port} is closed")
        async with self._window:
            await self._writable.wait()
            if self._protocol is None:
                self._start_reconnect()
            xid, buffers = self.rpc.start_call(prog, vers, proc, args, cred, label, dest)
            label = label or f"call {prog}/{vers}/{proc}"
            if self.udp and sum(len(b) for b in buffers) > MAX_DATAGRAM:
                self.rpc.cancel(xid)
                raise RpcError(f"{label}: call too large for one UDP datagram")
            delay = timeout or self.options.timeout
            pending = _Pending(asyncio.get_running_loop().create_future(), label, delay)
            pending.server = self.stats.failovers
            self._pending[xid] = pending
            self.stats.calls += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._pending))
            if self._send(buffers):
                pending.sends += 1
            if self.recorder is not None:
                self.recorder("call", xid, sum(len(b) for b in buffers))
            self._arm(xid, pending)
            try:
                return await pending.future, pending.placed, pending.sends
            finally:
                self._forget(xid)

    def _forget(self, xid: int) -> None:
        pending = self._pending.pop(xid, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        self.rpc.cancel(xid)

    def _send(self, buffers: list[Buffer]) -> int:
        """Write a call; returns its size, 0 if not sent (the reconnect will resend it)."""
        if self._protocol is None or not self._protocol.write(buffers):
            return 0
        size = sum(len(b) for b in buffers)
        self.stats.bytes_sent += size
        return size

    def _resend(self, xid: int, buffers: list[Buffer]) -> None:
        size = self._send(buffers)
        self.stats.retransmitted_bytes += size
        if size and (pending := self._pending.get(xid)) is not None:
            pending.sends += 1
        if self.recorder is not None:
            self.recorder("resend", xid, size)

    def _arm(self, xid: int, pending: _Pending, due: float | None = None) -> None:
        """Start the call's timer for its resend, ``delay`` from now (or at ``due``); hard,
        sooner if ``retry_for`` runs out before (then it only checks, see _on_timeout)."""
        now = time.monotonic()
        pending.due = now + pending.delay if due is None else due
        delay = pending.due - now
        if self.options.retry_for is not None:
            delay = min(delay, self.options.retry_for - self._silent_for(pending))
        pending.timer = asyncio.get_running_loop().call_later(
            max(0.001, delay), self._on_timeout, xid
        )

    def _on_timeout(self, xid: int) -> None:
        pending = self._pending.get(xid)
        if pending is None or pending.future.done():
            return
        if self._gave_up(pending):
            msg = f"{pending.label} (xid {xid:#010x}): {self._outage_message(None)}"
            pending.future.set_exception(RpcTimeout(msg))
            return
        if time.monotonic() < pending.due - 0.001:  # woken to check retry_for: not due
            self._arm(xid, pending, pending.due)
            return
        self.stats.timeouts += 1
        if self.recorder is not None:
            self.recorder("timeout", xid, 0)
        opts = self.options
        if pending.tries >= opts.max_tries and pending.switches < len(self.servers) - 1:
            # this server does not answer: the call starts again on the next one
            pending.switches += 1
            pending.tries, pending.delay = 1, opts.timeout
            moved = pending.server != self.stats.failovers  # already moved since it was sent
            if not moved:
                self._leave_server()
            pending.server = self.stats.failovers + (not moved)
            self._arm(xid, pending)
            return
        if pending.tries >= opts.max_tries and opts.retry_for is None:
            msg = f"{pending.label} (xid {xid:#010x}): no reply after {pending.tries} tries"
            pending.future.set_exception(RpcTimeout(msg))
            return
        pending.tries += 1
        pending.delay = min(pending.delay * 2, opts.max_timeout)
        log.debug("retransmitting %s xid %#x (try %d)", pending.label, xid, pending.tries)
        later = self._sent_after(xid) if opts.retransmit == "go-back-n" else []
        self._retransmit(xid, pending)
        for other_xid, other in later:  # go-back-n: each keeps its own timeout and tries
            if other.timer is not None:
                other.timer.cancel()
            self._retransmit(other_xid, other)

    def _retransmit(self, xid: int, pending: _Pending) -> None:
        self.stats.retransmissions += 1
        self._resend(xid, self.rpc.retransmit(xid))
        self._arm(xid, pending)

    def _sent_after(self, xid: int) -> list[tuple[int, _Pending]]:
        """Calls still waiting that were sent after ``xid``, oldest first."""
        xids = [c.xid for c in self.rpc.outstanding]  # in the order they were started
        later = xids[xids.index(xid) + 1 :] if xid in xids else []
        pending = ((x, self._pending.get(x)) for x in later)
        return [(x, p) for x, p in pending if p is not None and not p.future.done()]

    # -- replies -------------------------------------------------------------------------

    def _on_data(self, protocol: _Protocol, nbytes: int) -> None:
        self.stats.bytes_received += nbytes
        self._heard = time.monotonic()
        if not protocol.answered.done():
            protocol.answered.set_result(True)
        self.rpc.buffer_updated(nbytes)
        try:
            while (reply := self.rpc.next_reply()) is not None:
                self._deliver(reply)
        except RecordError as exc:  # the stream is unusable: drop it, the reconnect resends
            log.warning("bad record from %s:%d: %s", self.host, self.port, exc)
            if protocol.transport is not None:
                protocol.transport.abort()
        self.stats.ignored_replies = self.rpc.ignored

    def _on_datagram(self, data: bytes) -> None:
        self.stats.bytes_received += len(data)
        self._heard = time.monotonic()
        reply = self.rpc.receive_datagram(data)
        if reply is not None:
            self._deliver(reply)
        self.stats.ignored_replies = self.rpc.ignored

    def _deliver(self, reply: Reply) -> None:
        pending = self._pending.get(reply.xid)
        if pending is None or pending.future.done():
            return
        self.stats.replies += 1
        if self.recorder is not None:
            body = reply.body
            self.recorder("reply", reply.xid, body.position + body.remaining() if body else 0)
        if reply.error is not None:
            pending.future.set_exception(reply.error)
        else:
            assert reply.body is not None
            if reply.placed is not None:
                pending.placed = reply.placed
                self.stats.placed_bytes += reply.placed
            pending.future.set_result(reply.body)

    def _fail_all(self, error: RpcError) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(error)

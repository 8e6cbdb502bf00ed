"""Pipelined RPC over one asyncio TCP connection: the IO adapter around ``client.rpc``.

``AsyncRpcClient`` owns the socket, the timers and the loss policy; encoding, xids and
reply matching stay in the sans-IO ``RpcClient``:

* many calls in flight on one connection, at most ``window`` at once (a semaphore);
* each call has a timer; when it fires, only that call is resent, with the same xid
  (its framed bytes are kept by ``RpcClient``), and the timeout doubles up to
  ``max_timeout``; after ``max_tries`` sends the call fails with ``RpcTimeout`` naming it;
* when the connection breaks, one reconnect task opens a new one (bounded attempts with
  backoff) and resends just the calls still outstanding; callers keep waiting meanwhile;
* ``stats`` counts calls, retransmissions, timeouts, reconnects and bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

from ferry.errors import RecordError, RpcConnectionError, RpcError, RpcTimeout
from ferry.rpc.message import NULL_AUTH, OpaqueAuth
from ferry.rpc.record import Buffer
from ferry.xdr import Unpacker

from .rpc import Reply, RpcClient

log = logging.getLogger("ferry.client")


@dataclasses.dataclass(slots=True)
class RpcStats:
    """Counters of one ``AsyncRpcClient`` (cumulative over reconnects)."""

    calls: int = 0
    replies: int = 0
    retransmissions: int = 0
    timeouts: int = 0
    reconnects: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    max_in_flight: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class RpcOptions:
    """Transport policy; times in seconds."""

    window: int = 32
    timeout: float = 30.0  # first per-call timeout
    max_timeout: float = 120.0
    max_tries: int = 4  # sends of one call, the first included
    connect_timeout: float = 10.0
    reconnect_tries: int = 5


@dataclasses.dataclass(slots=True)
class _Pending:
    future: asyncio.Future[Unpacker]
    label: str
    delay: float
    tries: int = 1
    timer: asyncio.TimerHandle | None = None


class _Protocol(asyncio.BufferedProtocol):
    """Feeds received bytes straight into the record reader's buffers."""

    def __init__(self, owner: AsyncRpcClient) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.owner.rpc.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.owner._on_data(self, nbytes)

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._on_lost(self, exc)

    def pause_writing(self) -> None:
        self.owner._writable.clear()

    def resume_writing(self) -> None:
        self.owner._writable.set()


class AsyncRpcClient:
    """An RPC client on one TCP connection with pipelining, retransmission and reconnect."""

    def __init__(self, host: str, port: int, options: RpcOptions | None = None) -> None:
        self.host, self.port = host, port
        self.options = options or RpcOptions()
        self.rpc = RpcClient()
        self.stats = RpcStats()
        self._pending: dict[int, _Pending] = {}
        self._window = asyncio.Semaphore(self.options.window)
        self._writable = asyncio.Event()
        self._writable.set()
        self._protocol: _Protocol | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    # -- connection ----------------------------------------------------------------------

    async def connect(self) -> None:
        await self._open()

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        self.rpc.reset_stream()
        _, protocol = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(self), self.host, self.port),
            self.options.connect_timeout,
        )
        self._protocol = protocol
        self._writable.set()
        for call in self.rpc.outstanding:  # after a reconnect: resend what is unanswered
            self._send(call.buffers)

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

    def _on_lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return  # an old connection we already replaced
        self._protocol = None
        self._writable.set()
        if not self._closed and self._pending:
            log.debug("connection to %s:%d lost (%s); reconnecting", self.host, self.port, exc)
            self._start_reconnect()

    def _start_reconnect(self) -> None:
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        last: BaseException | None = None
        for attempt in range(self.options.reconnect_tries):
            try:
                await self._open()
            except (OSError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(min(0.05 * 2**attempt, 2.0))
                continue
            self.stats.reconnects += 1
            return
        self._fail_all(
            RpcConnectionError(
                f"cannot reconnect to {self.host}:{self.port} after "
                f"{self.options.reconnect_tries} attempts: {last}"
            )
        )

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
        if self._closed:
            raise RpcConnectionError(f"client for {self.host}:{self.port} is closed")
        async with self._window:
            await self._writable.wait()
            if self._protocol is None:
                self._start_reconnect()
            xid, buffers = self.rpc.start_call(prog, vers, proc, args, cred, label)
            label = label or f"call {prog}/{vers}/{proc}"
            delay = timeout or self.options.timeout
            pending = _Pending(asyncio.get_running_loop().create_future(), label, delay)
            self._pending[xid] = pending
            self.stats.calls += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._pending))
            self._send(buffers)
            self._arm(xid, pending)
            try:
                return await pending.future
            finally:
                self._forget(xid)

    def _forget(self, xid: int) -> None:
        pending = self._pending.pop(xid, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        self.rpc.cancel(xid)

    def _send(self, buffers: list[Buffer]) -> None:
        protocol = self._protocol
        if protocol is None or protocol.transport is None or protocol.transport.is_closing():
            return  # resent by the reconnect
        protocol.transport.writelines(buffers)
        self.stats.bytes_sent += sum(len(b) for b in buffers)

    def _arm(self, xid: int, pending: _Pending) -> None:
        loop = asyncio.get_running_loop()
        pending.timer = loop.call_later(pending.delay, self._on_timeout, xid)

    def _on_timeout(self, xid: int) -> None:
        pending = self._pending.get(xid)
        if pending is None or pending.future.done():
            return
        self.stats.timeouts += 1
        opts = self.options
        if pending.tries >= opts.max_tries:
            msg = f"{pending.label} (xid {xid:#010x}): no reply after {pending.tries} tries"
            pending.future.set_exception(RpcTimeout(msg))
            return
        pending.tries += 1
        pending.delay = min(pending.delay * 2, opts.max_timeout)
        self.stats.retransmissions += 1
        log.debug("retransmitting %s xid %#x (try %d)", pending.label, xid, pending.tries)
        self._send(self.rpc.retransmit(xid))
        self._arm(xid, pending)

    # -- replies -------------------------------------------------------------------------

    def _on_data(self, protocol: _Protocol, nbytes: int) -> None:
        self.stats.bytes_received += nbytes
        self.rpc.buffer_updated(nbytes)
        try:
            while (reply := self.rpc.next_reply()) is not None:
                self._deliver(reply)
        except RecordError as exc:  # the stream is unusable: drop it, the reconnect resends
            log.warning("bad record from %s:%d: %s", self.host, self.port, exc)
            if protocol.transport is not None:
                protocol.transport.abort()

    def _deliver(self, reply: Reply) -> None:
        pending = self._pending.get(reply.xid)
        if pending is None or pending.future.done():
            return
        self.stats.replies += 1
        if reply.error is not None:
            pending.future.set_exception(reply.error)
        else:
            assert reply.body is not None
            pending.future.set_result(reply.body)

    def _fail_all(self, error: RpcError) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(error)

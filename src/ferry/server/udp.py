"""RPC over UDP (RFC 5531 section 11 leaves datagram transports to the implementation):
one call per datagram, no record marking, one reply datagram per call.

Two adapters around the same ``Dispatcher`` (with ``dispatch.UDP``, so READ, READDIR and
FSINFO keep to 32 KiB as Linux's nfsd does): ``RpcDatagramProtocol`` for the event loop,
handing datagrams to the async model's call threads, and ``DatagramThreads`` for the
blocking models, a few threads each receiving a datagram, running it and sending the
reply (UDP has no connections, so no model has a connection to run it in). What UDP adds:

* A reply that would not fit one datagram is never sent truncated: it becomes a
  SYSTEM_ERR reply and a log line. Call sizes need no check: a datagram cannot exceed
  65,535 bytes and the loop reads up to 256 KiB, so nothing arrives cut.
* Malformed datagrams are the dispatcher's business (no xid: dropped and logged; a bad
  header: GARBAGE_ARGS), so nothing here can crash on them.
* Memory is bounded by a cap on datagrams being answered at once (the loop), or by the
  number of threads (blocking); past it a datagram is dropped, or waits in the socket
  buffer until the kernel drops it, and the client retransmits.
* Retransmissions are what the duplicate request cache exists for; with several worker
  processes each has its own socket, bound to the same port with ``SO_REUSEPORT``, and
  the kernel picks the socket by a hash of the source address and port, so every
  retransmission from one client socket reaches the same worker and its cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from ferry.rpc.dispatch import UDP, Address, Buffer, Dispatcher
from ferry.rpc.message import AcceptStat, pack_accepted
from ferry.server.listen import listen_error, passive_socket
from ferry.xdr import Packer

__all__ = ["MAX_UDP_PAYLOAD", "DatagramThreads", "RpcDatagramProtocol", "bind_udp"]

log = logging.getLogger("ferry.server")

MAX_UDP_PAYLOAD = 65507  # 65535 - 8 (UDP header) - 20 (IPv4 header); IPv6 allows 65527
RECEIVE_BUFFER = 4 << 20  # bursts of WRITEs wait in the kernel rather than being dropped
POLL = 0.25  # seconds a blocking receiver waits before looking whether to stop

Reply = list[Buffer] | None
Submit = Callable[[Callable[[], Reply], Callable[[Reply], object]], None]


def bind_udp(host: str, port: int, what: str, shared: bool = False) -> socket.socket:
    """A bound UDP socket; ``shared`` sets SO_REUSEPORT so each worker can have one on the
    same port. Errors become a ConfigError naming ``what``."""
    sock, addr = passive_socket(host, port, socket.SOCK_DGRAM)
    try:
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise listen_error(exc, host, port, f"{what} UDP") from exc
    sock.setblocking(False)
    return sock


class RpcDatagramProtocol(asyncio.DatagramProtocol):
    """One UDP socket: each datagram is a call, answered by one datagram to its sender."""

    def __init__(self, dispatcher: Dispatcher, submit: Submit, max_in_flight: int) -> None:
        self.dispatcher = dispatcher
        self.submit = submit
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.dropped = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if self.in_flight >= self.max_in_flight:
            self.dropped += 1
            log.info("dropping %d-byte datagram from %s: %d calls running", len(data), addr,
                     self.in_flight)  # fmt: skip
            return
        self.in_flight += 1
        loop = asyncio.get_running_loop()
        dispatcher = self.dispatcher
        self.submit(
            lambda: dispatcher.handle(data, addr, UDP),
            lambda reply: loop.call_soon_threadsafe(self._reply, data, reply, addr),
        )

    def error_received(self, exc: Exception) -> None:
        """ICMP errors for earlier replies (port unreachable): nothing to do but note it."""
        log.debug("udp error: %s", exc)

    def _reply(self, call: bytes, reply: Reply, addr: Address) -> None:
        self.in_flight -= 1
        if reply is None or self.transport is None:
            return
        self.transport.sendto(fit_datagram(call, reply, addr), addr)


class DatagramThreads:
    """Blocking UDP service: ``threads`` threads per socket, each running one call at a
    time. A context manager: started on entry; on exit each thread finishes the call in
    hand, sends its reply and stops (within ``POLL`` seconds)."""

    def __init__(
        self, socks: Sequence[socket.socket], dispatcher: Dispatcher, threads: int = 1
    ) -> None:
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(
                target=self._serve, args=(sock, dispatcher), name=f"ferry-udp-{i}", daemon=True
            )
            for sock in socks
            for i in range(threads)
        ]

    def __enter__(self) -> DatagramThreads:
        for t in self.threads:
            t.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(POLL + 5.0)

    def _serve(self, sock: socket.socket, dispatcher: Dispatcher) -> None:
        sock.settimeout(POLL)  # the socket object is shared: every thread sets the same
        while not self.stopping.is_set():
            try:
                data, addr = sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                log.debug("udp receive failed: %s", exc)
                if sock.fileno() < 0:
                    return
                continue
            reply = dispatcher.handle(data, addr, UDP)
            if reply is not None:
                try:
                    sock.sendto(fit_datagram(data, reply, addr), addr)
                except OSError as exc:
                    log.debug("udp reply to %s failed: %s", addr, exc)


def fit_datagram(call: bytes, reply: Sequence[Buffer], addr: Address) -> bytes:
    """The reply as one datagram, or SYSTEM_ERR if it would not fit in one."""
    data = b"".join(reply)
    if len(data) <= MAX_UDP_PAYLOAD:
        return data
    log.warning("reply of %d bytes to %s does not fit a datagram; sent SYSTEM_ERR",
                len(data), addr)  # fmt: skip
    p = Packer()
    pack_accepted(p, int.from_bytes(call[:4], "big"), AcceptStat.SYSTEM_ERR)
    return p.get_buffer()

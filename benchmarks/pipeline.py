"""Pipelined small calls: C connections, each with D calls in flight, over prebuilt records.

What ``ferry bench server``'s user-path section uses for GETATTR, LOOKUP and ACCESS at 1
and 32 in flight on one and on 8 connections (issue 20), and for the echo ceiling. Unlike
``loadgen.small_calls`` (one call outstanding per connection), a connection here keeps
``depth`` calls outstanding, the way a kernel client or Ferry's pipelined client does:
each reply that comes back is answered with a new call, and every call a burst of replies
frees is sent in one ``send``. The load is spread over up to ``procs`` forked processes
(epoll each), the calls are built once and only their XIDs patched, a reply is checked for
its XID, accept_stat and NFS status, so the generator costs the machine as little as it
can; its CPU time is returned with the figures.
"""

from __future__ import annotations

import array
import dataclasses
import selectors
import socket
import struct
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

from loadgen import LAST, Addr, cpu_seconds, in_window, nfs_status, shares

_XID = struct.Struct(">I")


@dataclasses.dataclass
class Pipelined:
    """One measurement: ``conns`` connections x ``depth`` calls in flight each."""

    conns: int
    depth: int
    seconds: float
    calls: int  # answered within the window
    errors: int  # bad XID, RPC or NFS status
    latencies: list[float]  # a sample: every call of the first connection of each process
    client_cpu: float

    @property
    def ops(self) -> float:
        return self.calls / self.seconds


class _Conn:
    """One connection with ``depth`` calls outstanding; replies parsed from one buffer."""

    def __init__(self, sock: socket.socket, record: bytes, first_xid: int, timed: bool) -> None:
        self.sock = sock
        self.call = bytearray(_XID.pack(LAST | len(record)) + record)
        self.size = len(self.call)
        self.xid = first_xid
        self.buf = bytearray()
        self.sent: dict[int, float] = {}
        self.timed = timed  # keep per-call latencies (one connection per process does)

    def send(self, n: int) -> None:
        """``n`` new calls in one ``send``."""
        out = self.call * n
        now = time.monotonic()
        for i in range(n):
            self.xid = (self.xid + 1) & 0xFFFFFFFF
            _XID.pack_into(out, i * self.size + 4, self.xid)
            self.sent[self.xid] = now
        self.sock.sendall(out)

    def receive(self, latencies: array.array[float] | None) -> tuple[int, int]:
        """Take what the socket holds: (replies complete, of which errors)."""
        data = self.sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        buf = self.buf
        buf += data
        done = errors = at = 0
        now = time.monotonic()
        while len(buf) - at >= 4:
            n = int.from_bytes(buf[at : at + 4], "big") & ~LAST
            if len(buf) - at - 4 < n:
                break
            record = memoryview(buf)[at + 4 : at + 4 + n]
            sent = self.sent.pop(int.from_bytes(record[:4], "big"), None)
            bad = sent is None or nfs_status(record)[0] != 0
            record.release()
            errors += bad
            if latencies is not None and sent is not None:
                latencies.append(now - sent)
            done += 1
            at += 4 + n
        del buf[:at]
        return done, errors


def _connect(addr: Addr) -> socket.socket:
    sock = socket.create_connection(addr, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def _process(
    addr: Addr, record: bytes, conns: int, depth: int, base: int, pipe: Connection
) -> None:
    sel = selectors.DefaultSelector()
    clients = []
    for i in range(conns):
        sock = _connect(addr)
        c = _Conn(sock, record, base + (i << 22), timed=i == 0)
        sel.register(sock, selectors.EVENT_READ, c)
        clients.append(c)
    _warm(sel, clients, depth)
    pipe.send("ready")
    start, stop = pipe.recv()
    time.sleep(max(0.0, start - time.monotonic()))
    cpu0 = cpu_seconds()
    latencies: array.array[float] = array.array("d")
    calls = errors = 0
    for c in clients:
        c.send(depth)
    while (now := time.monotonic()) < stop:
        for key, _ in sel.select(stop - now):
            c = key.data
            done, bad = c.receive(latencies if c.timed else None)
            calls, errors = calls + done, errors + bad
            if done:
                c.send(done)
    client_cpu = cpu_seconds() - cpu0
    # replies still in flight at ``stop`` are drained, not counted
    deadline = time.monotonic() + 10
    while any(c.sent for c in clients) and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            key.data.receive(None)
    pipe.send((calls, errors, latencies.tobytes(), client_cpu))
    pipe.recv()  # connections stay open until the server's CPU time has been read
    for c in clients:
        c.sock.close()


def _warm(sel: selectors.BaseSelector, clients: list[_Conn], depth: int) -> None:
    """One round of ``depth`` calls per connection, answered (or a clear error)."""
    for c in clients:
        c.send(depth)
    deadline = time.monotonic() + 30
    while any(c.sent for c in clients):
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not answer the first calls within 30 s")
        for key, _ in sel.select(0.5):
            key.data.receive(None)


def run(
    addr: Addr, record: bytes, conns: int, depth: int, seconds: float, procs: int = 2,
    probe: Callable[[], object] = lambda: None,
) -> tuple[Pipelined, list[object]]:  # fmt: skip
    """``conns`` connections with ``depth`` calls in flight each, for ``seconds``, over up
    to ``procs`` processes; also what ``probe()`` returned at the window's start and end
    (the server's CPU time, say)."""
    args = [(addr, record, n, depth, i << 28) for i, n in enumerate(shares(conns, procs))]
    results, probes = in_window(_process, args, seconds, probe)
    latencies = [x for r in results for x in array.array("d", r[2])]
    result = Pipelined(
        conns, depth, seconds,
        calls=sum(r[0] for r in results), errors=sum(r[1] for r in results),
        latencies=latencies, client_cpu=sum(r[3] for r in results),
    )  # fmt: skip
    return result, probes

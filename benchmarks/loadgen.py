"""Load generation for ``server_bench.py``: client processes speaking ONC RPC over TCP.

Why raw sockets and prebuilt calls: the load generator shares the machine's cores with the
server it measures, so each call costs it as little as possible. A call is built once
(``ferry.xdr``) and only its XID (and offset) is patched before each send; a reply is
checked for its XID, accept_stat and NFS status, nothing more. Clients are separate
processes (``fork``), so the generator is not one GIL; each process multiplexes several
client connections with epoll. The processes' CPU time is returned, so the report can say
how much of the machine the generator took.

Workloads:
* ``small_calls``: N clients, each a TCP connection with one call outstanding at a time
  (closed loop, like ``ls -l`` or a stat loop); throughput and per-call latency over a
  window all processes share (CLOCK_MONOTONIC is system-wide). A client whose first call
  is never answered (a model serving fewer connections than there are clients) counts as
  not served.
* ``stream``: one connection with ``window`` 1 MiB READs or WRITEs in flight (a kernel
  client's read-ahead / write-behind); MB/s, WRITEs then COMMITted inside the timing.
* ``hold_idle``: N connections, each answered one NULL, then held open until released.
"""

from __future__ import annotations

import array
import dataclasses
import multiprocessing as mp
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from multiprocessing.connection import Connection
from typing import Any

LAST = 0x80000000
CTX = mp.get_context("fork")
Addr = tuple[str, int]


@dataclasses.dataclass
class Calls:
    """One ``small_calls`` measurement."""

    clients: int
    served: int
    seconds: float
    latencies: list[float]  # seconds, every call begun and answered within the window
    errors: int
    client_cpu: float  # seconds of CPU the client processes used in the window

    @property
    def ops(self) -> float:
        return len(self.latencies) / self.seconds


@dataclasses.dataclass
class Stream:
    """One ``stream`` measurement."""

    nbytes: int
    seconds: float
    latencies: list[float]
    errors: int
    probes: list[object]  # what ``probe()`` returned before and after

    @property
    def mb_s(self) -> float:
        return self.nbytes / 1e6 / self.seconds


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


# -- replies ---------------------------------------------------------------------------------


def reply_status(record: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(accept_stat, offset of the results) of an accepted reply; (-1, 0) otherwise."""
    if len(record) < 24 or int.from_bytes(record[8:12], "big") != 0:
        return -1, 0
    vlen = (int.from_bytes(record[16:20], "big") + 3) & ~3
    at = 20 + vlen
    return int.from_bytes(record[at : at + 4], "big"), at + 4


def nfs_status(record: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(NFS status or -1, offset after it) of a reply."""
    accept, at = reply_status(record)
    if accept != 0 or len(record) < at + 4:
        return -1, at
    return int.from_bytes(record[at : at + 4], "big"), at + 4


def io_count(record: memoryview, write: bool) -> int:
    """The byte count of a READ or WRITE reply, or -1 for an error."""
    status, at = nfs_status(record)
    if status != 0:
        return -1
    if write:  # wcc_data: pre_op_attr (24 bytes), post_op_attr (84)
        at += 4 + (24 if int.from_bytes(record[at : at + 4], "big") else 0)
    at += 4 + (84 if int.from_bytes(record[at : at + 4], "big") else 0)
    return int.from_bytes(record[at : at + 4], "big")


# -- small calls -----------------------------------------------------------------------------


class _Client:
    """One connection with one call outstanding at a time."""

    def __init__(self, sock: socket.socket, record: bytes, first_xid: int) -> None:
        self.sock = sock
        self.call = bytearray(struct.pack(">I", LAST | len(record)) + record)
        self.xid = first_xid
        self.sent_at = 0.0
        self.pending = False
        self.answered = 0
        self.closed = False
        self.buf = bytearray()

    def send(self) -> None:
        self.xid = (self.xid + 1) & 0xFFFFFFFF
        struct.pack_into(">I", self.call, 4, self.xid)
        self.sent_at = time.monotonic()
        self.pending = True
        self.sock.send(self.call)  # a small call always fits the empty send buffer

    def reopen(self, addr: Addr, sel: selectors.BaseSelector) -> None:
        """A new connection after the server closed this one (the serial model closes the
        connection it serves once another client waits); the call in hand is sent again,
        as an NFS client resends what got no reply."""
        sel.unregister(self.sock)
        self.sock.close()
        self.sock = _connect(addr)
        self.sock.setblocking(False)
        sel.register(self.sock, selectors.EVENT_READ, self)
        self.buf.clear()
        if self.pending:
            self.sock.send(self.call)

    def receive(self) -> bytes | None:
        """The reply once complete (one fragment: replies to small calls are)."""
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buf += data
        if len(self.buf) < 4:
            return None
        n = int.from_bytes(self.buf[:4], "big") & ~LAST
        if len(self.buf) < 4 + n:
            return None
        record = bytes(self.buf[4 : 4 + n])
        del self.buf[: 4 + n]
        self.pending = False
        self.answered += 1
        return record


def _connect(addr: Addr) -> socket.socket:
    sock = socket.create_connection(addr, timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _settle(
    sel: selectors.BaseSelector, clients: list[_Client], quiet: float, addr: Addr | None = None
) -> int:
    """Answer first calls until all are answered or none was for ``quiet`` seconds; a
    connection the server closes (the serial model yields an idle one to a waiting client)
    is opened again (``addr`` given) or noted as closed."""
    last = time.monotonic()
    while any(c.pending for c in clients) and time.monotonic() - last < quiet:
        for key, _ in sel.select(0.05):
            client: _Client = key.data
            try:
                answered = client.receive() is not None
            except ConnectionError:
                if addr is not None:
                    client.reopen(addr, sel)
                    continue
                client.closed, client.pending, answered = True, False, False
                sel.unregister(client.sock)
            if answered:
                last = time.monotonic()
    return sum(c.answered > 0 for c in clients)


def _calls_process(addr: Addr, record: bytes, n: int, base: int, pipe: Connection) -> None:
    sel = selectors.DefaultSelector()
    clients = []
    for i in range(n):
        sock = _connect(addr)
        sock.setblocking(False)
        client = _Client(sock, record, base + (i << 20))
        sel.register(sock, selectors.EVENT_READ, client)
        clients.append(client)
        client.send()
    pipe.send(_settle(sel, clients, quiet=2.0, addr=addr))
    start, stop = pipe.recv()
    time.sleep(max(0.0, start - time.monotonic()))
    cpu0 = cpu_seconds()
    latencies, errors = array.array("d"), 0
    for c in clients:
        if not c.pending:
            c.send()
    while (now := time.monotonic()) < stop:
        for key, _ in sel.select(stop - now):
            client = key.data
            try:
                reply = client.receive()
            except ConnectionError:  # the serial model takes clients in turns
                client.reopen(addr, sel)
                continue
            if reply is None:
                continue
            done = time.monotonic()
            if client.sent_at >= start and done <= stop:
                latencies.append(done - client.sent_at)
                ok = reply[:4] == client.call[4:8] and nfs_status(reply)[0] == 0
                errors += not ok
            if done < stop:
                client.send()
    served = sum(c.answered > 1 for c in clients)
    pipe.send((latencies.tobytes(), served, errors, cpu_seconds() - cpu0))
    pipe.recv()  # connections stay open until the server's CPU time has been read
    for c in clients:
        c.sock.close()


def small_calls(
    addr: Addr, record: bytes, clients: int, seconds: float, procs: int,
    probe: Callable[[], object] = lambda: None,
) -> tuple[Calls, list[object]]:  # fmt: skip
    """``clients`` closed-loop clients over ``procs`` processes, for ``seconds``; also
    what ``probe()`` returned at the start and at the end of the window."""
    args = [(addr, record, n, i << 28) for i, n in enumerate(shares(clients, procs))]
    results, probes = in_window(_calls_process, args, seconds, probe)
    latencies = [x for r in results for x in array.array("d", r[0])]
    calls = Calls(
        clients,
        served=sum(r[1] for r in results),
        seconds=seconds,
        latencies=latencies,
        errors=sum(r[2] for r in results),
        client_cpu=sum(r[3] for r in results),
    )
    return calls, probes


def shares(count: int, procs: int) -> list[int]:
    """``count`` clients (or connections) spread as evenly as can be over up to ``procs``
    processes, none of them empty."""
    procs = max(1, min(procs, count))
    return [count // procs + (i < count % procs) for i in range(procs)]


def in_window(
    target: Any, args: list[tuple[Any, ...]], seconds: float, probe: Callable[[], object]
) -> tuple[list[Any], list[object]]:
    """One process per argument tuple; once each has said it is ready (connected, first
    calls answered or given up on), all measure together for ``seconds`` from one start.
    Returns what each process sent back and what ``probe()`` returned at the window's
    start and end."""
    with _processes(target, args) as pipes:
        for p in pipes:
            p.recv()
        start = time.monotonic() + 0.05
        for p in pipes:
            p.send((start, start + seconds))
        probes = []
        for at in (start, start + seconds):
            time.sleep(max(0.0, at - time.monotonic()))
            probes.append(probe())
        results = [p.recv() for p in pipes]
        for p in pipes:
            p.send("close")
    return results, probes


@contextmanager
def _processes(target: Any, args: list[tuple[Any, ...]]) -> Iterator[list[Connection]]:
    """Fork one process per argument tuple, each given a pipe end; joined (or killed) at
    the end, so nothing outlives a measurement."""
    pipes, children = [], []
    try:
        for a in args:
            ours, theirs = CTX.Pipe()
            child = CTX.Process(target=target, args=(*a, theirs), daemon=True)
            child.start()
            theirs.close()
            pipes.append(ours)
            children.append(child)
        for p in pipes:
            if not p.poll(120):
                raise TimeoutError("a load-generator process did not answer within 120 s")
        yield pipes
    finally:
        for child in children:
            child.join(30)
            if child.is_alive():
                child.kill()
                child.join(5)


# -- 1 MiB streams -----------------------------------------------------------------------


def _recv_record(sock: socket.socket, view: memoryview) -> int:
    """Receive one whole record into ``view``; returns its length."""
    head = bytearray(4)
    n = 0
    while True:
        _recv_exact(sock, memoryview(head))
        marker = int.from_bytes(head, "big")
        length = marker & ~LAST
        _recv_exact(sock, view[n : n + length])
        n += length
        if marker & LAST:
            return n


def _recv_exact(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("server closed the connection")
        got += k


def _stream_process(
    addr: Addr, call: bytes, offset_at: int, calls: int, wrap: int, window: int,
    commit: bytes | None, pipe: Connection,
) -> None:  # fmt: skip
    step = 1 << 20
    sock = _connect(addr)
    sock.settimeout(120)
    record = bytearray(struct.pack(">I", LAST | len(call)) + call)
    view = memoryview(bytearray(step + (1 << 16)))
    sent_at: dict[int, float] = {}
    latencies, errors, nbytes, sent = array.array("d"), 0, 0, 0
    pipe.send("ready")
    pipe.recv()
    t0 = time.monotonic()
    for done in range(calls):
        while sent < calls and sent - done < window:
            struct.pack_into(">I", record, 4, sent + 1)
            struct.pack_into(">Q", record, 4 + offset_at, sent % wrap * step)
            sent_at[sent + 1] = time.monotonic()
            sock.sendall(record)
            sent += 1
        n = _recv_record(sock, view)
        xid = int.from_bytes(view[:4], "big")
        latencies.append(time.monotonic() - sent_at.pop(xid, t0))
        count = io_count(view[:n], commit is not None)
        errors += count != step
        nbytes += max(count, 0)
    if commit is not None:
        sock.sendall(struct.pack(">I", LAST | len(commit)) + commit)
        errors += nfs_status(view[: _recv_record(sock, view)])[0] != 0
    seconds = time.monotonic() - t0
    pipe.send((nbytes, seconds, latencies.tobytes(), errors))
    sock.close()


def stream(
    addr: Addr, call: bytes, offset_at: int, calls: int, wrap: int, window: int,
    commit: bytes | None, probe: Callable[[], object] = lambda: None,
) -> Stream:  # fmt: skip
    """``calls`` READs (or WRITEs, then ``commit``) of 1 MiB with ``window`` in flight.

    ``call`` is the record of the first; its offset (a uhyper at ``offset_at``) advances
    by 1 MiB per call, back to 0 after ``wrap`` calls (the file's size in MiB)."""
    args = [(addr, call, offset_at, calls, wrap, window, commit)]
    with _processes(_stream_process, args) as (pipe,):
        pipe.recv()
        probes = [probe()]
        pipe.send("go")
        nbytes, seconds, lat, errors = pipe.recv()
        probes.append(probe())
    return Stream(nbytes, seconds, list(array.array("d", lat)), errors, probes)


# -- idle connections ----------------------------------------------------------------------


def _idle_process(addr: Addr, record: bytes, n: int, pipe: Connection) -> None:
    sel = selectors.DefaultSelector()
    clients = []
    for i in range(n):
        sock = _connect(addr)
        sock.setblocking(False)
        client = _Client(sock, record, i << 20)
        sel.register(sock, selectors.EVENT_READ, client)
        clients.append(client)
        client.send()
    answered = _settle(sel, clients, quiet=3.0)
    time.sleep(0.5)  # a close right after the last answers has arrived by now
    pipe.send((answered, sum(_still_open(c) for c in clients)))
    pipe.recv()  # until released
    for c in clients:
        c.sock.close()


def _still_open(client: _Client) -> bool:
    if client.closed:
        return False
    try:
        return client.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True  # open, nothing to read
    except OSError:
        return False  # reset


@contextmanager
def hold_idle(addr: Addr, null_call: bytes, n: int) -> Iterator[tuple[int, int]]:
    """``n`` connections, each answered one NULL, held open; yields how many were answered
    and how many the server keeps open."""
    with _processes(_idle_process, [(addr, null_call, n)]) as (pipe,):
        answered, still_open = pipe.recv()
        try:
            yield int(answered), int(still_open)
        finally:
            pipe.send("release")

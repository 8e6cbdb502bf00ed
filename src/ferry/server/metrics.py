"""Server metrics: what the server counts, behind one small interface the core calls.

The ``Dispatcher`` and the IO adapters call a ``Metrics`` at a few points: a call starts
and ends (given the call as the dispatcher decoded and answered it, an ``Outcome``:
program, procedure, RPC and program status, READ/WRITE byte count; and the sizes of the
record and the reply), a duplicate-cache lookup, a connection opens, closes or is
refused, a timeout cuts one off. Nothing is parsed here again, and the protocol core
learns nothing about metrics and imports no metrics library.

``Metrics`` itself does nothing, and the dispatcher skips even the clock when it gets no
enabled one, so a server without ``--metrics`` pays nothing. ``PrometheusMetrics`` counts
with prometheus-client, imported only when metrics are asked for. Labels come from fixed
tables (unknown programs and procedures are ``other``): a client cannot grow the number of
series by sending made-up numbers.

``exporting`` serves ``/metrics`` over HTTP: from a thread of the server process when one
process serves calls; from a forked exporter process reading prometheus-client's
multiprocess files (in ``<state dir>/metrics``) when several do (prefork, process, async
``--workers N``), so the server processes never fork while a thread runs. See
docs/metrics.md for every metric.
"""

from __future__ import annotations

import contextlib
import http.server
import logging
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from ferry.errors import ConfigError
from ferry.nfs3.const import (
    MOUNT_PROGRAM,
    NFS_PROGRAM,
    MountProc,
    Mountstat3,
    NfsProc,
    Nfsstat3,
)
from ferry.rpc.dispatch import DENIED, Outcome
from ferry.rpc.message import AcceptStat, RejectStat
from ferry.rpc.portmap import PMAP_PROGRAM, PmapProc
from ferry.segment import Part
from ferry.server.config import parse_address
from ferry.server.listen import bind_listener
from ferry.server.workers import fork_child

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("ferry.metrics")

LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
"""Seconds: from a cached GETATTR (tens of microseconds) to a COMMIT of a large file."""

TIMEOUT_KINDS = ("idle", "record", "send")
DRC_OUTCOMES = {"new": "miss", "hit": "hit", "in-progress": "in_progress"}
"""``ferry.rpc.drc.Lookup`` values -> the ``outcome`` label."""

OTHER = "other"
PROGRAMS: dict[int, tuple[str, dict[int, str]]] = {
    NFS_PROGRAM: ("nfs", {p.value: p.name for p in NfsProc}),  # RFC 1813 section 3
    MOUNT_PROGRAM: ("mount", {p.value: p.name for p in MountProc}),  # RFC 1813 section 5
    PMAP_PROGRAM: ("portmap", {p.value: p.name for p in PmapProc}),  # RFC 1833 section 3
}
"""Program number -> (label, procedure number -> label)."""
_PROCEDURES = {prog: frozenset(procs) for prog, (_, procs) in PROGRAMS.items()}


class Metrics:
    """The hooks the core calls; this default counts nothing (``enabled`` is False)."""

    enabled: ClassVar[bool] = False

    def call_started(self) -> float:
        """A call is about to run; returns a token for ``call_done`` (its start time)."""
        return 0.0

    def call_done(
        self, token: float, call: Outcome, received: int, reply: Sequence[Part] | None
    ) -> None:
        """A call (``received`` bytes) ended with ``reply`` (None: no reply owed, e.g. a
        dropped retransmission); ``call`` is what the dispatcher decoded and answered."""

    def call_deferred(self, token: float) -> None:
        """A call tried on the event loop would have waited: it starts again on a thread."""

    def drc_lookup(self, outcome: str) -> None:
        """The duplicate request cache was asked about a call (a ``drc.Lookup`` value)."""

    def connection_opened(self) -> None:
        """A connection was accepted and will be served."""

    def connection_closed(self) -> None:
        """A connection counted by ``connection_opened`` is gone."""

    def connection_rejected(self) -> None:
        """A connection was refused (the ``max_connections`` cap)."""

    def timeout(self, kind: str) -> None:
        """A connection was cut off by the ``idle``, ``record`` or ``send`` timeout."""

    def exited(self, pid: int) -> None:
        """Worker process ``pid`` is gone (called in the process that supervised it)."""


NO_METRICS = Metrics()


# -- labels ---------------------------------------------------------------------------------


def status_label(prog: int, proc: int, code: int, status: int) -> str:
    """The ``status`` label: the program's status if it has one, else the RPC outcome."""
    if code == AcceptStat.SUCCESS and status >= 0:
        if prog == NFS_PROGRAM:
            return _status_name(Nfsstat3, status, "NFS3")
        return _status_name(Mountstat3, status, "MNT3")
    if code in AcceptStat._value2member_map_:
        return AcceptStat(code).name
    if code - DENIED in RejectStat._value2member_map_:
        return RejectStat(code - DENIED).name
    return "DROPPED"


def _status_name(kind: type[Nfsstat3] | type[Mountstat3], code: int, prefix: str) -> str:
    """RFC 1813 spelling: NFS3_OK, NFS3ERR_NOENT, MNT3ERR_ACCES; unknown codes by number."""
    if code == 0:
        return f"{prefix}_OK"
    if code in kind._value2member_map_:
        return f"{prefix}ERR_{kind(code).name}"
    return f"{prefix}ERR_{code}"


# -- Prometheus -----------------------------------------------------------------------------


class _Series:
    """The metric children of one (program, procedure, status): made once, then reused."""

    __slots__ = ("calls", "latency", "received", "sent", "data")

    def __init__(self, m: PrometheusMetrics, prog: str, proc: str, status: str) -> None:
        self.calls = m.calls.labels(prog, proc, status)
        self.latency = m.latency.labels(prog, proc)
        self.received = m.received.labels(prog)
        self.sent = m.sent.labels(prog)
        self.data = None
        if prog == "nfs" and status == "NFS3_OK" and proc in ("READ", "WRITE"):
            self.data = m.data.labels("read" if proc == "READ" else "write")


class PrometheusMetrics(Metrics):
    """Counts into prometheus-client metrics registered in ``registry``.

    A call costs a dictionary lookup for its label set and a few counter updates; label
    children are made once per (program, procedure, status) and kept."""

    enabled: ClassVar[bool] = True

    def __init__(self, registry: CollectorRegistry, multiprocess_dir: Path | None = None) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.multiprocess_dir = multiprocess_dir
        """prometheus-client's files, when several processes count (else None)."""
        self.calls = Counter(
            "ferry_rpc_calls", "RPC calls answered, by program, procedure and status "
            "(the NFS/MOUNT status, else the RPC accept or reject status)",
            ["program", "procedure", "status"], registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "ferry_rpc_call_duration_seconds", "Time to run a call and encode its reply",
            ["program", "procedure"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self.received = Counter(
            "ferry_rpc_received_bytes", "Bytes of call records (without record marks)",
            ["program"], registry=registry,
        )  # fmt: skip
        self.sent = Counter(
            "ferry_rpc_sent_bytes", "Bytes of replies (without record marks)", ["program"],
            registry=registry,
        )  # fmt: skip
        self.data = Counter(
            "ferry_nfs_data_bytes", "File data returned by READ and written by WRITE",
            ["direction"], registry=registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "ferry_rpc_calls_in_flight", "Calls being run now", registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.open = Gauge(
            "ferry_connections_open", "TCP connections open now", registry=registry,
            multiprocess_mode="livesum",
        )  # fmt: skip
        self.accepted = Counter(
            "ferry_connections", "TCP connections accepted and served", registry=registry
        )
        self.rejected = Counter(
            "ferry_connections_rejected", "TCP connections refused over max_connections",
            registry=registry,
        )  # fmt: skip
        self.timeouts = Counter(
            "ferry_connection_timeouts", "Connections cut off by a timeout", ["kind"],
            registry=registry,
        )  # fmt: skip
        self.drc = Counter(
            "ferry_drc_lookups", "Duplicate request cache lookups of non-idempotent calls",
            ["outcome"], registry=registry,
        )  # fmt: skip
        for kind in TIMEOUT_KINDS:  # present at 0 from the start, so rates work at once
            self.timeouts.labels(kind)
        for outcome in DRC_OUTCOMES.values():
            self.drc.labels(outcome)
        for direction in ("read", "write"):
            self.data.labels(direction)
        self._series: dict[tuple[int, int, int, int], _Series] = {}
        self._lock = threading.Lock()

    def call_started(self) -> float:
        self.in_flight.inc()
        return time.perf_counter()

    def call_deferred(self, token: float) -> None:
        self.in_flight.dec()

    def call_done(
        self, token: float, call: Outcome, received: int, reply: Sequence[Part] | None
    ) -> None:
        seconds = time.perf_counter() - token
        self.in_flight.dec()
        prog, proc = call.prog, call.proc
        procs = _PROCEDURES.get(prog)
        if procs is None:  # unknown numbers share one key: a client cannot grow the table
            prog = proc = -1
        elif proc not in procs:
            proc = -1
        key = (prog, proc, call.code, call.status)
        series = self._series.get(key) or self._new_series(key)
        series.calls.inc()
        series.latency.observe(seconds)
        series.received.inc(received)
        if reply is not None:
            series.sent.inc(sum(map(len, reply)))
            if series.data is not None:
                series.data.inc(call.data)

    def _new_series(self, key: tuple[int, int, int, int]) -> _Series:
        """Make (once) the children for a label set never seen before."""
        prog, proc, code, status = key
        pname, procs = PROGRAMS.get(prog, (OTHER, {}))
        label = status_label(prog, proc, code, status)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(self, pname, procs.get(proc, OTHER), label)
        return series

    def drc_lookup(self, outcome: str) -> None:
        self.drc.labels(DRC_OUTCOMES.get(outcome, outcome)).inc()

    def connection_opened(self) -> None:
        self.accepted.inc()
        self.open.inc()

    def connection_closed(self) -> None:
        self.open.dec()

    def connection_rejected(self) -> None:
        self.rejected.inc()

    def timeout(self, kind: str) -> None:
        self.timeouts.labels(kind).inc()

    def exited(self, pid: int) -> None:
        """Drop a dead worker's live gauges (open connections, calls in flight): the sum
        is of live processes; its counters stay in the totals."""
        if self.multiprocess_dir is not None:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, str(self.multiprocess_dir))  # type: ignore[no-untyped-call]


# -- the /metrics endpoint ------------------------------------------------------------------


def _bind(host: str, port: int) -> socket.socket:
    return bind_listener(host, port, "metrics", backlog=16)  # errors worded as for NFS


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _http_server(sock: socket.socket, registry: CollectorRegistry) -> _HttpServer:
    """A ``/metrics`` HTTP server on a socket already listening (bind errors come first)."""
    from prometheus_client.exposition import MetricsHandler

    server = _HttpServer(sock.getsockname()[:2], MetricsHandler.factory(registry), False)
    server.socket.close()
    server.socket = sock
    return server


@contextlib.contextmanager
def exporting(address: str, state_dir: Path, multiprocess: bool) -> Iterator[Metrics]:
    """Serve ``/metrics`` on ``address`` while the block runs; yields the ``Metrics`` for
    the server's processes. With ``address`` empty: ``NO_METRICS``, nothing served."""
    if not address:
        yield NO_METRICS
        return
    host, port = parse_address(address)
    sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    try:
        if multiprocess:
            with _multiprocess(sock, state_dir / "metrics") as metrics:
                _announce(shown, sock)
                yield metrics
        else:
            with _in_process(sock) as metrics:
                _announce(shown, sock)
                yield metrics
    finally:
        sock.close()


def _announce(host: str, sock: socket.socket) -> None:
    print(f"ferry: metrics on http://{host}:{sock.getsockname()[1]}/metrics", flush=True)


@contextlib.contextmanager
def _in_process(sock: socket.socket) -> Iterator[Metrics]:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    metrics = PrometheusMetrics(registry)
    server = _http_server(sock, registry)
    thread = threading.Thread(target=server.serve_forever, name="ferry-metrics", daemon=True)
    thread.start()
    try:
        yield metrics
    finally:
        server.shutdown()
        thread.join(5)


@contextlib.contextmanager
def _multiprocess(sock: socket.socket, path: Path) -> Iterator[Metrics]:
    """prometheus-client's multiprocess mode: every process writes its own files in
    ``path`` (emptied first: files of an earlier run would be summed in); a forked
    exporter process sums them on each scrape."""
    try:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)
        path.mkdir(parents=True)
    except OSError as exc:
        raise ConfigError(f"metrics directory {path} is not usable: {exc}") from exc
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    from prometheus_client import CollectorRegistry, values

    if values.ValueClass is values.MutexValue:  # imported before the variable was set
        values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    metrics = PrometheusMetrics(CollectorRegistry(), path)  # exposed by the exporter only
    pid = _fork_exporter(sock, path)
    try:
        yield metrics
    finally:
        _stop(pid)


def _fork_exporter(sock: socket.socket, path: Path) -> int:
    """Fork the process that answers scrapes (``fork_child``: it dies with the server
    process); it runs until SIGTERM or SIGINT."""
    return fork_child(lambda: _export(sock, path), what="metrics exporter")


def _export(sock: socket.socket, path: Path) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(path))  # type: ignore[no-untyped-call]
    server = _http_server(sock, registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def _stop(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == 0:
                time.sleep(0.01)
                continue
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)

"""``ferry serve --metrics``: what /metrics reports after known traffic.

In-process tests run the async server with ``ferry.server.metrics.exporting`` (the code path of
``ferry serve``, one process) and scrape it over HTTP on loopback; each asserts how much
counters moved, so they do not depend on each other. Subprocess tests run ``python -m
ferry serve --metrics`` for every server model, the multi-process ones included
(prometheus-client's multiprocess mode). Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

_HERE = Path(__file__).resolve().parent
for _p in (_HERE / "protocol", _HERE / "server"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from modelserver import VARIANTS, start  # noqa: E402
from rawclient import (  # noqa: E402
    RawClient,
    local_config,
    nfs_create,
    nfs_getattr,
    nfs_lookup,
    nfs_read,
    nfs_remove,
    nfs_write,
    parse_reply,
)

from ferry.errors import ConfigError  # noqa: E402
from ferry.nfs3.const import NFS_PROGRAM, Nfsstat3  # noqa: E402
from ferry.server import metrics as metricsmod  # noqa: E402
from ferry.server.aio import AsyncServer, Limits  # noqa: E402
from ferry.server.app import build_app  # noqa: E402
from ferry.server.config import ServerConfig, from_dict, parse_address  # noqa: E402
from ferry.xdr import Packer  # noqa: E402

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
WAIT = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def calls(samples: Samples, proc: str, status: str, program: str = "nfs") -> float:
    return value(samples, "ferry_rpc_calls_total", program=program, procedure=proc, status=status)


class CountingClient(RawClient):
    """A raw client that adds up the record bytes it sends and receives."""

    sent = 0
    received = 0

    def send_record(self, data: bytes) -> None:
        self.sent += len(data)
        super().send_record(data)

    def recv_record(self) -> bytes:
        data = super().recv_record()
        self.received += len(data)
        return data


@dataclass
class Served:
    port: int
    metrics_port: int
    root: Path

    def scrape(self) -> Samples:
        return scrape(self.metrics_port)

    def client(self) -> CountingClient:
        return CountingClient(self.port)

    def until(self, check: Callable[[Samples], bool]) -> Samples:
        """Scrape until ``check`` holds (connection events reach the loop a bit later)."""
        deadline = time.monotonic() + WAIT
        while True:
            samples = self.scrape()
            if check(samples) or time.monotonic() > deadline:
                return samples
            time.sleep(0.02)


@contextmanager
def served(tmp_path: Path, limits: Limits | None = None) -> Iterator[Served]:
    """The async server of ``ferry serve`` (one process) with /metrics, in a thread."""
    root = tmp_path / "export"
    root.mkdir()
    config = local_config(root, tmp_path / "state", root_squash=False)
    mport = free_port()
    with metricsmod.exporting(f"127.0.0.1:{mport}", tmp_path / "state", False) as metrics:
        app = build_app(config, metrics=metrics)
        loop = asyncio.new_event_loop()
        server = AsyncServer(app.dispatcher(0), limits, metrics=metrics)
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        port = asyncio.run_coroutine_threadsafe(server.listen("127.0.0.1", 0), loop).result(WAIT)
        try:
            yield Served(port, mport, root)
        finally:
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(WAIT)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(WAIT)
            loop.close()
            app.close()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Served]:
    with served(tmp_path) as s:
        yield s


def mounted(s: Served) -> tuple[CountingClient, bytes]:
    c = s.client()
    return c, c.mount(str(s.root.resolve()))


def test_calls_statuses_latency_and_bytes(srv: Served) -> None:
    (srv.root / "f.bin").write_bytes(bytes(range(256)) * 40)  # 10,240 bytes
    c, root = mounted(srv)
    before = srv.scrape()
    c.sent = c.received = 0
    c.call(NFS_PROGRAM, 3, 0)  # NULL
    assert nfs_getattr(c, root)[0] == Nfsstat3.OK
    assert nfs_lookup(c, root, "missing")[0] == Nfsstat3.NOENT
    assert nfs_lookup(c, root, "missing")[0] == Nfsstat3.NOENT
    status, fh, _ = nfs_lookup(c, root, "f.bin")
    assert status == Nfsstat3.OK and fh is not None
    assert nfs_read(c, fh, 0, 4096)[1] == (bytes(range(256)) * 16)
    assert nfs_read(c, fh, 10000, 4096)[1] == bytes(range(256))[10000 % 256 :]  # 240 bytes
    assert nfs_write(c, fh, b"x" * 1000)[0] == Nfsstat3.OK
    assert c.call(NFS_PROGRAM, 3, 1, b"\0\0").stat == 4  # GARBAGE_ARGS: truncated handle
    assert c.call(NFS_PROGRAM, 3, 99).stat == 3  # PROC_UNAVAIL
    assert c.call(NFS_PROGRAM, 3, 12345678).stat == 3  # labelled "other", not the number
    after = srv.scrape()
    c.close()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    def calls_moved(proc: str, status: str) -> float:
        return calls(after, proc, status) - calls(before, proc, status)

    assert calls_moved("NULL", "SUCCESS") == 1
    assert calls_moved("GETATTR", "NFS3_OK") == 1
    assert calls_moved("LOOKUP", "NFS3ERR_NOENT") == 2
    assert calls_moved("LOOKUP", "NFS3_OK") == 1
    assert calls_moved("READ", "NFS3_OK") == 2
    assert calls_moved("WRITE", "NFS3_OK") == 1
    assert calls_moved("GETATTR", "GARBAGE_ARGS") == 1
    assert calls_moved("other", "PROC_UNAVAIL") == 2
    hist = "ferry_rpc_call_duration_seconds"
    assert moved(f"{hist}_count", program="nfs", procedure="LOOKUP") == 3
    assert moved(f"{hist}_count", program="nfs", procedure="GETATTR") == 2
    assert moved(f"{hist}_bucket", program="nfs", procedure="LOOKUP", le="+Inf") == 3
    assert 0 < moved(f"{hist}_sum", program="nfs", procedure="LOOKUP") < WAIT
    assert moved("ferry_nfs_data_bytes_total", direction="read") == 4096 + 240
    assert moved("ferry_nfs_data_bytes_total", direction="write") == 1000
    assert moved("ferry_rpc_received_bytes_total", program="nfs") == c.sent
    assert moved("ferry_rpc_sent_bytes_total", program="nfs") == c.received
    assert value(after, "ferry_rpc_calls_in_flight") == 0


def test_mount_status_is_counted(srv: Served) -> None:
    c = srv.client()
    p = Packer()
    p.pack_string("/not/exported")
    reply = c.call(100005, 3, 1, p.get_buffer())
    c.close()
    assert reply.ok().unpack_uint() != 0
    samples = srv.scrape()
    assert (
        sum(
            v
            for (name, labels), v in samples.items()
            if name == "ferry_rpc_calls_total"
            and ("procedure", "MNT") in labels
            and dict(labels)["status"].startswith("MNT3ERR_")
        )
        == 1
    )


def test_connection_gauge_goes_up_and_down(srv: Served) -> None:
    before = srv.scrape()
    clients = [srv.client() for _ in range(3)]
    for c in clients:
        c.call(NFS_PROGRAM, 3, 0)  # served, so surely counted
    up = srv.until(lambda s: value(s, "ferry_connections_open") == 3)
    assert value(up, "ferry_connections_open") == 3
    total = value(up, "ferry_connections_total") - value(before, "ferry_connections_total")
    assert total == 3
    for c in clients:
        c.close()
    down = srv.until(lambda s: value(s, "ferry_connections_open") == 0)
    assert value(down, "ferry_connections_open") == 0
    assert value(down, "ferry_connections_total") == value(up, "ferry_connections_total")


def test_connection_over_the_cap_is_counted_as_rejected(tmp_path: Path) -> None:
    with served(tmp_path, Limits(max_connections=2)) as s:
        held = [s.client() for _ in range(2)]
        for c in held:
            c.call(NFS_PROGRAM, 3, 0)
        extra = s.client()
        with pytest.raises(OSError):  # reset or EOF: the server refused it
            extra.call(NFS_PROGRAM, 3, 0)
        extra.close()
        samples = s.until(lambda x: value(x, "ferry_connections_rejected_total") == 1)
        for c in held:
            c.close()
    assert value(samples, "ferry_connections_rejected_total") == 1
    assert value(samples, "ferry_connections_open") == 2


def test_timeouts_are_counted_by_kind(tmp_path: Path) -> None:
    limits = Limits(idle_timeout=0.4, record_timeout=0.1)  # the half record: record first
    with served(tmp_path, limits) as s:
        idle = socket.create_connection(("127.0.0.1", s.port), WAIT)
        slow = socket.create_connection(("127.0.0.1", s.port), WAIT)
        slow.sendall(b"\x80\x00\x00\x40" + b"\0" * 8)  # 12 of 68 bytes, then nothing
        samples = s.until(
            lambda x: (
                value(x, "ferry_connection_timeouts_total", kind="idle") >= 1
                and value(x, "ferry_connection_timeouts_total", kind="record") >= 1
            )
        )
        idle.close()
        slow.close()
    assert value(samples, "ferry_connection_timeouts_total", kind="idle") == 1
    assert value(samples, "ferry_connection_timeouts_total", kind="record") == 1
    assert value(samples, "ferry_connection_timeouts_total", kind="send") == 0


def test_retransmitted_remove_is_a_drc_hit(srv: Served) -> None:
    (srv.root / "doomed").write_bytes(b"x")
    c, root = mounted(srv)
    p = Packer()
    p.pack_opaque(root)
    p.pack_string("doomed")
    call = c.call_bytes(NFS_PROGRAM, 3, 12, p.get_buffer())
    before = srv.scrape()
    c.send_record(call)
    first = c.recv_record()
    c.close()
    again = srv.client()  # a client resends on a new connection
    again.send_record(call)
    second = again.recv_record()
    again.close()
    assert parse_reply(first).ok().unpack_uint() == Nfsstat3.OK
    assert second == first  # replayed, not run again (which would be NOENT)
    after = srv.scrape()

    def moved(outcome: str) -> float:
        name = "ferry_drc_lookups_total"
        return value(after, name, outcome=outcome) - value(before, name, outcome=outcome)

    assert (moved("miss"), moved("hit"), moved("in_progress")) == (1, 1, 0)
    assert calls(after, "REMOVE", "NFS3_OK") - calls(before, "REMOVE", "NFS3_OK") == 2


def test_create_then_remove_twice_counts_noent(srv: Served) -> None:
    """A REMOVE that is *not* a retransmission (new xid) runs and fails with NOENT."""
    c, root = mounted(srv)
    assert nfs_create(c, root, "tmp")[0] == Nfsstat3.OK
    assert nfs_remove(c, root, "tmp") == Nfsstat3.OK
    assert nfs_remove(c, root, "tmp") == Nfsstat3.NOENT
    c.close()
    samples = srv.scrape()
    assert calls(samples, "REMOVE", "NFS3ERR_NOENT") == 1
    assert calls(samples, "CREATE", "NFS3_OK") == 1


def test_without_metrics_the_dispatcher_has_no_observer(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    app = build_app(local_config(root, tmp_path / "state"))
    try:
        assert app.dispatcher(0).observer is None
    finally:
        app.close()


# -- configuration ---------------------------------------------------------------------------


def test_metrics_address_parsing() -> None:
    assert parse_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_address("[::1]:9100") == ("::1", 9100)
    assert parse_address(":9100") == ("127.0.0.1", 9100)
    for bad in ("9100", "host:", "host:x", "host:70000"):
        with pytest.raises(ConfigError, match="ADDR:PORT"):
            parse_address(bad)


def test_metrics_config_key(tmp_path: Path) -> None:
    export = {"path": str(tmp_path)}
    cfg = from_dict({"server": {"metrics": "127.0.0.1:9100"}, "export": [export]})
    assert cfg.metrics == "127.0.0.1:9100"
    assert ServerConfig(exports=[]).metrics == ""
    with pytest.raises(ConfigError, match="metrics"):
        from_dict({"server": {"metrics": "nowhere"}, "export": [export]})


def test_metrics_port_in_use_is_a_config_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        with (
            pytest.raises(ConfigError, match="metrics"),
            metricsmod.exporting(address, tmp_path, False),
        ):
            pass


# -- ferry serve --metrics, every model --------------------------------------------------------


@pytest.mark.parametrize("variant", ["async", "serial", "thread", "prefork", "process", "async-2"])
def test_serve_with_metrics_every_model(tmp_path: Path, variant: str) -> None:
    export = tmp_path / "export"
    export.mkdir()
    mport = free_port()
    args = (*VARIANTS[variant], "--metrics", f"127.0.0.1:{mport}")
    server = start(export, tmp_path / "state", args, tmp_path / "serve.log")
    try:
        c = RawClient(server.port)
        root = c.mount(str(export.resolve()))
        assert nfs_getattr(c, root)[0] == Nfsstat3.OK
        assert nfs_lookup(c, root, "missing")[0] == Nfsstat3.NOENT
        c.close()
        deadline = time.monotonic() + WAIT
        while True:  # the connection's end reaches the server (and its gauge) a bit later
            samples = scrape(mport)
            settled = value(samples, "ferry_connections_open") == 0
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    finally:
        status = server.stop()
    log = server.stderr()
    assert status == 0 and "Traceback" not in log, log[-3000:]
    assert calls(samples, "GETATTR", "NFS3_OK") == 1
    assert calls(samples, "LOOKUP", "NFS3ERR_NOENT") == 1
    assert calls(samples, "MNT", "MNT3_OK", program="mount") == 1
    assert value(samples, "ferry_connections_total") == 1
    assert value(samples, "ferry_connections_open") == 0

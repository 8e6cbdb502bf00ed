"""The link emulator (``ferry.testing.proxy``): its delay, rate, loss and reordering are measured
against what was configured, its decisions repeat under a seed, and Ferry's client reads a
file intact through a lossy link. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import hashlib
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from rawclient import local_config, serve_in_thread

import ferry
from ferry.cli.proxy import parse_duration, parse_fraction, parse_hostport, parse_rate
from ferry.client.aio import RpcOptions
from ferry.testing.proxy import LinkSpec, Proxy, running

SRC = Path(__file__).resolve().parents[1] / "src"
TIMEOUT = 5.0  # for any single socket wait


# -- peers -----------------------------------------------------------------------------------


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(TIMEOUT)
        for _ in range(100_000):
            try:
                data = self.request.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            self.request.sendall(data)


class _Sink(socketserver.BaseRequestHandler):
    """Reads until EOF, notes when the last byte came, answers with the byte count."""

    def handle(self) -> None:
        self.request.settimeout(TIMEOUT)
        total, last = 0, time.monotonic()
        for _ in range(1_000_000):
            data = self.request.recv(1 << 16)
            if not data:
                break
            total, last = total + len(data), time.monotonic()
        self.server.last_byte = last  # type: ignore[attr-defined]
        self.request.sendall(str(total).encode())


@contextmanager
def tcp_server(handler: type[socketserver.BaseRequestHandler]) -> Iterator[socketserver.TCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@contextmanager
def udp_sink() -> Iterator[tuple[int, list[int]]]:
    """A UDP socket that records the sequence number (first 4 bytes) of every datagram."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.3)
    seen: list[int] = []

    def receive() -> None:
        for _ in range(100_000):
            try:
                seen.append(int.from_bytes(sock.recv(2048)[:4], "big"))
            except TimeoutError:
                return
            except OSError:
                return

    thread = threading.Thread(target=receive)
    thread.start()
    try:
        yield sock.getsockname()[1], seen
    finally:
        thread.join(TIMEOUT)
        sock.close()


def send_datagrams(port: int, count: int) -> None:
    """``count`` numbered datagrams, paced so no kernel buffer on loopback overflows."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(count):
            s.sendto(i.to_bytes(4, "big") + bytes(60), ("127.0.0.1", port))
            if i % 50 == 49:
                time.sleep(0.002)


def udp_run(spec: LinkSpec, count: int) -> tuple[list[int], Proxy]:
    with udp_sink() as (sink_port, seen), running(spec, ("127.0.0.1", sink_port), udp=True) as p:
        send_datagrams(p.port, count)
        time.sleep(spec.delay + 0.1)
    return seen, p


def round_trips(port: int, count: int, size: int = 64) -> list[float]:
    times = []
    with socket.create_connection(("127.0.0.1", port), TIMEOUT) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            start = time.monotonic()
            s.sendall(bytes(size))
            got = 0
            while got < size:
                chunk = s.recv(size - got)
                assert chunk, "connection closed"
                got += len(chunk)
            times.append(time.monotonic() - start)
    return times


# -- units -----------------------------------------------------------------------------------


def test_units() -> None:
    assert parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("500us") == pytest.approx(0.0005)
    assert parse_duration("1.5s") == 1.5
    assert parse_rate("100mbit") == 100e6
    assert parse_rate("2.5gbit") == 2.5e9
    assert parse_rate("64kbit") == 64e3
    assert parse_fraction("1%") == pytest.approx(0.01)
    assert parse_fraction("0.25") == 0.25
    assert parse_hostport("[::1]:2049") == ("::1", 2049)
    assert parse_hostport("127.0.0.1:0") == ("127.0.0.1", 0)
    for bad, parse in [("20", parse_duration), ("5mb", parse_rate), ("150%", parse_fraction)]:
        with pytest.raises(ValueError):
            parse(bad)
    with pytest.raises(ValueError):
        LinkSpec(reorder=0.6)


# -- delay and rate --------------------------------------------------------------------------


def test_delay_doubles_into_the_round_trip() -> None:
    with tcp_server(_Echo) as echo, running(LinkSpec(delay=0.02), echo.server_address) as p:
        times = round_trips(p.port, 15)
    assert statistics.median(times) == pytest.approx(0.040, rel=0.10)
    assert min(times) >= 0.040 * 0.98


def test_jitter_spreads_but_keeps_order() -> None:
    spec = LinkSpec(delay=0.01, jitter=0.005, seed=3)
    with tcp_server(_Echo) as echo, running(spec, echo.server_address) as p:
        times = sorted(round_trips(p.port, 30))
    # Never early: that would be the proxy's fault. Late can also be a loaded machine's
    # scheduling (seen in CI), so the bound is on all but the slowest three of 30.
    assert times[0] >= 0.010 and times[-4] <= 0.032, times
    assert statistics.pstdev(times) > 0.001  # the data itself is checked by round_trips


def test_rate_limits_a_transfer() -> None:
    size, rate = 3 << 20, 50e6
    with (
        tcp_server(_Sink) as sink,
        running(LinkSpec(rate=rate), sink.server_address) as p,
        socket.create_connection(("127.0.0.1", p.port), TIMEOUT) as s,
    ):
        start = time.monotonic()
        s.sendall(bytes(size))
        s.shutdown(socket.SHUT_WR)
        s.settimeout(TIMEOUT)
        assert s.recv(64) == str(size).encode()
    elapsed = sink.last_byte - start  # type: ignore[attr-defined]
    assert elapsed == pytest.approx(size * 8 / rate, rel=0.10)


def transfer_rate(port: int, size: int) -> float:
    """Bits per second of one ``size``-byte upload to a _Sink on ``port`` (until it counted)."""
    with socket.create_connection(("127.0.0.1", port), TIMEOUT) as s:
        block, start = bytes(1 << 20), time.monotonic()
        for _ in range(size >> 20):
            s.sendall(block)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(TIMEOUT)
        assert s.recv(64) == str(size).encode()
        return size * 8 / (time.monotonic() - start)


def test_own_overhead_is_small() -> None:
    """With no delay and no rate limit the proxy must not be the bottleneck at the rates
    the benchmarks use (<= 1 Gbit/s), nor add a noticeable delay. Run with -s to see it."""
    with tcp_server(_Sink) as sink, running(LinkSpec(), sink.server_address) as p:
        direct = max(transfer_rate(sink.server_address[1], 64 << 20) for _ in range(2))
        proxied = max(transfer_rate(p.port, 64 << 20) for _ in range(2))
    with tcp_server(_Echo) as echo, running(LinkSpec(), echo.server_address) as p:
        rtt_direct = statistics.median(round_trips(echo.server_address[1], 200))
        rtt_proxied = statistics.median(round_trips(p.port, 200))
    print(
        f"\nproxy overhead: throughput {proxied / 1e9:.2f} Gbit/s "
        f"(direct {direct / 1e9:.2f}); RTT {rtt_proxied * 1e6:.0f} us "
        f"(direct {rtt_direct * 1e6:.0f} us, +{(rtt_proxied - rtt_direct) * 1e6:.0f} us)"
    )
    assert proxied > 1e9
    assert rtt_proxied - rtt_direct < 0.001


# -- loss, reordering, determinism ------------------------------------------------------------


def test_udp_loss_rate() -> None:
    seen, p = udp_run(LinkSpec(loss=0.10, seed=7), 2000)
    assert p.stats.datagrams == 2000
    assert len(seen) == 2000 - p.stats.dropped  # nothing lost anywhere else
    assert 0.08 <= p.stats.dropped / 2000 <= 0.12
    assert seen == sorted(seen)  # no reordering asked for, none happened


def test_udp_reorder_rate() -> None:
    seen, p = udp_run(LinkSpec(reorder=0.10, seed=11), 2000)
    assert sorted(seen) == list(range(2000))
    late = sum(1 for a, b in zip(seen, seen[1:], strict=False) if b < a)
    assert late == p.stats.reordered
    assert 0.08 <= late / 2000 <= 0.12


def test_seed_decides_everything() -> None:
    spec = LinkSpec(loss=0.05, reorder=0.05, seed=42)
    first, _ = udp_run(spec, 600)
    again, _ = udp_run(spec, 600)
    other, _ = udp_run(LinkSpec(loss=0.05, reorder=0.05, seed=43), 600)
    assert first == again
    assert first != other


def test_tcp_loss_cuts_connections() -> None:
    """Each echo is one chunk up and one down; every cut resets the client's connection."""
    spec, rounds = LinkSpec(loss=0.05, seed=5), 300
    resets = 0
    with tcp_server(_Echo) as echo, running(spec, echo.server_address) as p:
        for _ in range(rounds):
            try:
                round_trips(p.port, 1)
            except (ConnectionError, AssertionError):
                resets += 1
        deadline = time.monotonic() + TIMEOUT
        while p.stats.connections > rounds and time.monotonic() < deadline:
            time.sleep(0.01)
    assert resets == p.stats.cuts
    assert 0.03 <= p.stats.cuts / p.stats.chunks <= 0.07


def test_tcp_loss_as_stalls() -> None:
    spec = LinkSpec(loss=0.2, tcp_loss="stall", stall=0.05, seed=2)
    with tcp_server(_Echo) as echo, running(spec, echo.server_address) as p:
        times = round_trips(p.port, 40)
    assert p.stats.cuts == 0 and p.stats.stalls > 0
    # Every stall held its chunk 0.05 s (up and down may both stall); a loaded machine only
    # adds time, so the bound below is exact from beneath and loose from above.
    assert 0.05 * p.stats.stalls <= sum(times) + 0.001 * len(times)
    assert sum(times) < 0.05 * p.stats.stalls + 2.0


# -- end to end ------------------------------------------------------------------------------


def test_client_reads_through_a_lossy_link(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    data = hashlib.sha256(b"ferry").digest() * (1 << 16)  # 2 MiB
    (root / "f.bin").write_bytes(data)
    spec = LinkSpec(delay=0.001, loss=0.03, seed=1)
    options = RpcOptions(timeout=2.0, reconnect_tries=10)
    config = local_config(root, tmp_path / "state", root_squash=False)
    with serve_in_thread(config) as srv, running(spec, ("127.0.0.1", srv.port)) as p:
        url = f"nfs://127.0.0.1{root}/?nfsport={p.port}&mountport={p.port}"
        with ferry.connect(url, rsize=32 * 1024, options=options) as c:
            got = c.read_file("f.bin")
            reconnects = c.stats.reconnects
    assert got == data
    assert p.stats.cuts >= 1 and reconnects >= 1


# -- the command line ------------------------------------------------------------------------


def test_cli_proxy_starts_forwards_and_stops() -> None:
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    with tcp_server(_Echo) as echo:
        to = f"127.0.0.1:{echo.server_address[1]}"
        args = ["proxy", "--listen", "127.0.0.1:0", "--to", to, "--delay", "5ms", "--seed", "1"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "ferry", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith("ferry: proxy 127.0.0.1:"), line
            port = int(line.split()[2].rsplit(":", 1)[1])
            assert statistics.median(round_trips(port, 5)) >= 0.0095
        finally:
            proc.terminate()
            _, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0 and "Traceback" not in err


def test_cli_rejects_bad_units() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferry", "proxy", "--listen", ":0", "--to", ":1", "--rate", "5mb"],
        capture_output=True, text=True, env={"PYTHONPATH": str(SRC)}, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "bad rate '5mb'" in result.stderr and "Traceback" not in result.stderr

"""Floods against every server model, beyond tests/server/test_models.py (stalled clients,
slowloris, non-reading clients, 300 connections): half-open records, records declaring
huge lengths, and thousands of calls pipelined on one connection. A well-behaved client
keeps being served (for serial: once the flood is cut off), and the server's descriptors and
memory come back to where they were. Limits reached and the good client's latency are
recorded in build/hardening/floods-<model>.json.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hardening_util import LONG, percentiles, record_figures
from harness import CAP, RECORD, start_model, stop_checked
from modelserver import ModelServer
from rawclient import RawClient, nfs_getattr, parse_reply

from ferry.nfs3.const import NFS_PROGRAM, Nfsstat3
from ferry.rpc.record import frame_bytes
from ferry.xdr import Packer

MODELS = ("serial", "thread", "process", "prefork", "async")
PREFORK_WORKERS = 3  # harness.VARIANTS["prefork"]
MAX_RECORD = 4 * 1024 * 1024 + 64 * 1024  # ServerConfig default max_record_size
PIPELINED = 10_000 if LONG else 2_000
MARGIN = 2.0
FAST = 0.5  # the good client's worst call while another connection floods (not serial)
RSS_SLACK_KIB = 24 * 1024


@pytest.fixture(params=MODELS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ModelServer]:
    srv = start_model(tmp_path, str(request.param))
    try:
        yield srv
    finally:
        stop_checked(srv)


def good_round(port: int, root: bytes) -> float:
    """A fresh connection, NULL and GETATTR of the root: seconds taken."""
    start = time.monotonic()
    c = RawClient(port, timeout=30)
    try:
        assert c.call(NFS_PROGRAM, 3, 0).xid == c.xid
        assert nfs_getattr(c, root)[0] == Nfsstat3.OK
    finally:
        c.close()
    return time.monotonic() - start


def closed_after(socks: list[socket.socket], within: float) -> list[float]:
    """Seconds until the server closed each socket (inf if it did not within ``within``)."""
    start = time.monotonic()
    left = dict(enumerate(socks))
    times = [float("inf")] * len(socks)
    for s in socks:
        s.setblocking(False)
    while left and time.monotonic() - start < within:
        for i, s in list(left.items()):
            try:
                if s.recv(1 << 16) == b"":
                    times[i] = time.monotonic() - start
                    del left[i]
            except BlockingIOError:
                pass
            except OSError:  # reset: refused over the cap, or cut off abortively
                times[i] = time.monotonic() - start
                del left[i]
        time.sleep(0.02)
    return times


def connect_all(port: int, n: int, first: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        with contextlib.suppress(OSError):  # refused at once over the cap
            s.sendall(first)
        socks.append(s)
    return socks


def settle(server: ModelServer, fds: int, rss_kib: int) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        server.fd_count() > fds + 2 or server.rss_kib() > rss_kib + RSS_SLACK_KIB
    ):
        time.sleep(0.1)
    now = {"fds": server.fd_count(), "rss_kib": server.rss_kib()}
    assert now["fds"] <= fds + 2, f"descriptors {now['fds']}, {fds} before: {server.fd_report()}"
    assert now["rss_kib"] <= rss_kib + RSS_SLACK_KIB, f"RSS {now['rss_kib']} vs {rss_kib}"
    return now


def during(server: ModelServer, root: bytes, flood: threading.Thread) -> list[float]:
    """The good client's latencies while ``flood`` runs: it must stay fast."""
    lat: list[float] = []
    deadline = time.monotonic() + 30
    while flood.is_alive() and time.monotonic() < deadline:
        lat.append(good_round(server.port, root))
        assert lat[-1] < FAST, f"good client slowed to {lat[-1]:.2f} s"
        time.sleep(0.02)
    return lat


def test_floods(server: ModelServer, request: pytest.FixtureRequest) -> None:
    model = request.node.callspec.params["server"]
    serial = model == "serial"
    c = RawClient(server.port)
    try:
        root = c.mount(str(server.export))
    finally:
        c.close()
    for _ in range(3):
        good_round(server.port, root)
    server.wait_settled()
    fds, rss = server.fd_count(), server.rss_kib()
    figures: dict[str, object] = {"model": model, "baseline": {"fds": fds, "rss_kib": rss}}

    # 1. Half-open records: a header promising 1000 bytes, 10 sent, then nothing. Serial and
    #    prefork hold them one per worker until the record timeout; send fewer than workers.
    #    The others take them up to the connection cap, past which every new connection, the
    #    good client's too, is refused (test_models.py); leave the good client room.
    n = {"serial": 1, "prefork": PREFORK_WORKERS - 1}.get(model, CAP - 4)
    socks = connect_all(server.port, n, struct.pack(">I", 0x80000000 | 1000) + b"\0" * 10)
    box: dict[str, list[float]] = {}
    t = threading.Thread(target=lambda: box.update(cut=closed_after(socks, RECORD + 3 * MARGIN)))
    t.start()
    try:
        lat = [] if serial else during(server, root, t)
        t.join(RECORD + 4 * MARGIN)
    finally:
        for s in socks:
            s.close()
    cut = box["cut"]
    assert max(cut) < RECORD + MARGIN, f"half-open records kept for {max(cut):.2f} s"
    if serial:
        lat = [good_round(server.port, root)]
    figures["half_open"] = {
        "connections": n,
        "cut_off_max_s": round(max(cut), 3),
        "refused_at_once": sum(1 for x in cut if x < RECORD / 2),
        "good_client": percentiles(lat),
    }
    figures["after_half_open"] = settle(server, fds, rss)

    # 2. Huge declared lengths: 2**31-1, one byte over the record limit, and a non-final
    #    fragment over it. Each must be closed at once, without buffering what it declares.
    headers = [0x80000000 | 0x7FFFFFFF, 0x80000000 | (MAX_RECORD + 1), MAX_RECORD + 1]
    socks = connect_all(server.port, 0, b"")
    start = time.monotonic()
    for i in range(20):
        socks += connect_all(server.port, 1, struct.pack(">I", headers[i % 3]) + b"\0" * 64)
    peak_rss = server.rss_kib()
    cut = closed_after(socks, RECORD + MARGIN)
    for s in socks:
        s.close()
    assert max(cut) < RECORD / 2, f"oversized records kept open {max(cut):.2f} s"
    figures["huge_lengths"] = {
        "connections": len(socks),
        "closed_within_max_s": round(max(cut), 3),
        "rss_kib_during": peak_rss,
        "seconds": round(time.monotonic() - start, 3),
        "good_client_after": round(good_round(server.port, root) * 1000, 3),
    }
    figures["after_huge_lengths"] = settle(server, fds, rss)

    # 3. Thousands of calls in flight on one connection: sent in one stream while the replies
    #    are read on another thread; every call answered once.
    flood = RawClient(server.port, timeout=60)
    p = Packer()
    p.pack_opaque(root)
    getattr_args = p.get_buffer()
    calls = []
    for i in range(PIPELINED):
        args = (1, getattr_args) if i % 2 else (0, b"")
        calls.append(frame_bytes(flood.call_bytes(NFS_PROGRAM, 3, *args)))
    want = {flood.xid - i for i in range(PIPELINED)}
    got: list[int] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(PIPELINED):
                reply = parse_reply(flood.recv_record())
                assert (reply.reply_stat, reply.stat) == (0, 0)
                got.append(reply.xid)
        except BaseException as exc:
            errors.append(exc)

    rt = threading.Thread(target=reader)
    start = time.monotonic()
    rt.start()
    sender = threading.Thread(target=lambda: flood.sock.sendall(b"".join(calls)))
    sender.start()
    try:
        lat = [] if serial else during(server, root, rt)
        rt.join(60)
        sender.join(10)
    finally:
        took = time.monotonic() - start
        flood.close()
    assert not errors, errors[0]
    assert sorted(got) == sorted(want), f"{len(got)} replies to {PIPELINED} calls"
    if serial:
        lat = [good_round(server.port, root)]
    figures["pipelined"] = {
        "calls": PIPELINED,
        "seconds": round(took, 3),
        "calls_per_second": round(PIPELINED / took),
        "good_client": percentiles(lat),
    }
    figures["after_pipelined"] = settle(server, fds, rss)
    record_figures(f"floods-{model}", figures)

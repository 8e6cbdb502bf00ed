"""The serial model on its default limits: one client cannot keep the others waiting.

The lecture's first denial of service: a client that connects and sends nothing, or starts
a record and stalls, holds a serial server. The defaults are minutes (idle 300 s, record
60 s), so instead the connection in service yields as soon as another client is waiting:
at once when it is idle, within ``Limits.waiting_grace`` (2 s) when it is mid-record.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import stop_checked
from modelserver import ModelServer, start

import ferry
from helpers import peers

SOON = 5.0  # seconds a second client may wait (the grace is 2 s)
_NULL = struct.pack(">10I", 1, 0, 2, 100003, 3, 0, 0, 0, 0, 0)
_NULL_RECORD = struct.pack(">I", 0x80000000 | len(_NULL)) + _NULL


@pytest.fixture
def serial(tmp_path: Path) -> Iterator[ModelServer]:
    """``ferry serve --model serial`` with every limit at its default."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "hello.txt").write_bytes(b"hello")
    server = start(export, tmp_path / "state", ("--model", "serial"), tmp_path / "srv.log")
    try:
        yield server
    finally:
        stop_checked(server)


def null_call_seconds(port: int) -> float:
    """How long a new client's NULL call takes to be answered."""
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=SOON + 60) as s:
        s.sendall(_NULL_RECORD)
        reply = s.recv(100)
    assert len(reply) >= 28 and reply[4:8] == _NULL[:4], reply
    return time.monotonic() - began


def served_then(port: int, stall: bytes) -> socket.socket:
    """A client that gets one call answered (so it holds the server), then sends ``stall``."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(_NULL_RECORD)
    assert len(s.recv(100)) >= 28
    s.sendall(stall)
    return s


def closed_by_server(s: socket.socket) -> bool:
    s.settimeout(SOON)
    try:
        return s.recv(100) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_an_idle_client_yields_to_a_waiting_one(serial: ModelServer) -> None:
    with contextlib.closing(served_then(serial.port, b"")) as idle:
        took = null_call_seconds(serial.port)
        assert took < SOON, f"second client waited {took:.1f} s behind an idle one"
        assert closed_by_server(idle)
    assert "another client is waiting" in serial.stderr()


def test_a_stalled_record_yields_to_a_waiting_one(serial: ModelServer) -> None:
    half = _NULL_RECORD[:12]
    with contextlib.closing(served_then(serial.port, half)) as stalled:
        took = null_call_seconds(serial.port)
        assert took < SOON, f"second client waited {took:.1f} s behind a stalled record"
        assert closed_by_server(stalled)


def test_a_lone_idle_client_keeps_its_connection(serial: ModelServer) -> None:
    """Nobody waits: the connection stays (the idle timeout is minutes)."""
    with contextlib.closing(served_then(serial.port, b"")) as lone:
        time.sleep(1.5)
        lone.sendall(_NULL_RECORD)
        lone.settimeout(5)
        assert len(lone.recv(100)) >= 28


@pytest.mark.interop
def test_nfs_ls_is_answered_while_a_ferry_client_idles(serial: ModelServer) -> None:
    """The issue's report: nfs-ls from a second client while another client sits idle.
    The idle Ferry client then carries on (it reconnects)."""
    url = f"nfs://127.0.0.1:{serial.port}{serial.export}"
    with ferry.connect(url) as idle:
        assert "hello.txt" in idle.listdir("")
        began = time.monotonic()
        listing = peers.nfs_ls(
            peers.libnfs_url("127.0.0.1", str(serial.export), "", serial.port, serial.port),
            timeout=60,
        )
        took = time.monotonic() - began
        assert [e.name for e in listing if e.name == "hello.txt"] == ["hello.txt"]
        assert took < SOON, f"nfs-ls waited {took:.1f} s behind an idle client"
        assert idle.read_file("hello.txt") == b"hello"

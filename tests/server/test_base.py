"""Unit tests of the parts every model shares: config keys for models and limits, the
registry, partial sends, the shared MOUNT table, and the blocking loop over a socketpair."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from ferry.errors import ConfigError
from ferry.rpc.dispatch import Dispatcher
from ferry.rpc.record import frame_bytes
from ferry.server import config as cfgmod
from ferry.server.blocking import _advance, serve_connection
from ferry.server.connection import Limits
from ferry.server.models import MODELS
from ferry.server.shared import FileMountTable


def test_registry_matches_config_names() -> None:
    assert tuple(MODELS) == cfgmod.MODELS
    assert all(cls.name == name for name, cls in MODELS.items())


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"model": "fibers"}, "model 'fibers' is not one of"),
        ({"model": "thread", "workers": 2}, "workers applies to the prefork and async"),
        ({"model": "prefork", "workers": 1000}, "workers must be between"),
        ({"send_timeout": -1}, "send_timeout must not be negative"),
        ({"max_in_flight": 0}, "max_in_flight must be at least 1"),
    ],
)
def test_bad_model_settings(server: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cfgmod.from_dict({"server": server, "export": [{"path": "/srv"}]})


def test_memory_backend_needs_one_process() -> None:
    export = [{"path": "/mem", "backend": "memory"}]
    for server in ({"model": "prefork"}, {"model": "process"}, {"model": "async", "workers": 2}):
        with pytest.raises(ConfigError, match="memory backend lives in one process"):
            cfgmod.from_dict({"server": server, "export": export})
    cfg = cfgmod.from_dict({"server": {"model": "thread", "record_timeout": 5}, "export": export})
    assert (cfg.model, cfg.record_timeout) == ("thread", 5.0)


def test_advance_over_partial_sends() -> None:
    views = [memoryview(b"abcd"), memoryview(b"ef"), memoryview(b"ghi")]
    assert [bytes(v) for v in _advance(views, 5)] == [b"f", b"ghi"]
    assert [bytes(v) for v in _advance(views, 6)] == [b"ghi"]
    assert _advance(views, 9) == []


def test_file_mount_table(tmp_path: Path) -> None:
    path = tmp_path / "mounts.json"
    a, b = FileMountTable(path, reset=True), FileMountTable(path)
    a.add("10.0.0.1", "/x")
    b.add("10.0.0.2", "/y")
    a.add("10.0.0.1", "/x")
    assert b.entries() == [("10.0.0.1", "/x"), ("10.0.0.2", "/y")]
    b.remove("10.0.0.1", "/x")
    a.remove_host("10.0.0.2")
    assert a.entries() == []
    path.write_text("{damaged")
    assert a.entries() == []
    assert FileMountTable(path, reset=True).entries() == []


def test_serve_connection_answers_then_closes_on_eof() -> None:
    server, client = socket.socketpair()
    dispatcher = Dispatcher([])
    thread = threading.Thread(target=serve_connection, args=(server, dispatcher, Limits()))
    thread.start()
    try:
        client.sendall(frame_bytes(b"\0\0\0\x07" + b"\0\0\0\0" * 9))  # a call to no program
        client.shutdown(socket.SHUT_WR)
        client.settimeout(5)
        data = b""
        while chunk := client.recv(4096):
            data += chunk
        assert data[4:8] == b"\0\0\0\x07"  # the xid comes back (PROG_UNAVAIL or similar)
    finally:
        thread.join(5)
        client.close()
    assert not thread.is_alive()


def test_serve_connection_times_out_a_silent_peer() -> None:
    server, client = socket.socketpair()
    limits = Limits(idle_timeout=0.2)
    thread = threading.Thread(target=serve_connection, args=(server, Dispatcher([]), limits))
    thread.start()
    thread.join(5)
    try:
        assert not thread.is_alive()
        client.settimeout(1)
        assert client.recv(1) == b""
    finally:
        client.close()

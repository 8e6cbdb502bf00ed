"""A server asked to stop exits promptly in every model, whatever its clients are doing.

The cause of a serial server that once outlived its SIGTERM by 15 s: CPython runs a
signal's Python handler only between bytecodes of the main thread. When the signal is
noted at C level while the main thread is not inside its blocking call, i.e. in the
instants between the Stopper's last check and ``epoll_wait`` (measured: 2 in 20,000 stops
sent at random moments) or by another thread (a UDP or metrics thread), the wait is not
interrupted and sleeps on: for the serial accept loop, whose wait has no timeout, forever.
Delivering the signal to another thread of the process reproduces that state every time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import start_model, stop_checked
from modelserver import VARIANTS, start
from rawclient import local_config

from ferry.server.app import build_app
from ferry.server.blocking import serve_connection
from ferry.server.connection import Limits
from ferry.server.skeleton import accept_loop
from ferry.server.stopping import Stopper

PROMPT = 3.0  # seconds within which a stop must be acted on
_NULL = struct.pack(">10I", 1, 0, 2, 100003, 3, 0, 0, 0, 0, 0)


@contextlib.contextmanager
def installed_stopper() -> Iterator[Stopper]:
    """A Stopper in this (pytest's main) thread; pytest's handlers come back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield Stopper().install()
    finally:
        signal.set_wakeup_fd(-1)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def term_from_another_thread(after: float, unblock: socket.socket | None = None) -> float:
    """Run a thread that, ``after`` seconds from now, takes a SIGTERM itself (so its C-level
    handler runs there, not in the main thread); PROMPT + 2 seconds later it wakes the main
    thread's wait another way (``unblock``: connect to it if listening, else close it), so a
    failing test ends. Returns the time the signal was sent."""
    sent = time.monotonic() + after

    def run() -> None:
        time.sleep(after)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
        time.sleep(PROMPT + 2)
        if unblock is not None:
            with contextlib.suppress(OSError):
                if unblock.type == socket.SOCK_STREAM and _listening(unblock):
                    socket.create_connection(unblock.getsockname()[:2], timeout=1).close()
                else:
                    unblock.shutdown(socket.SHUT_RDWR)

    threading.Thread(target=run, daemon=True).start()
    return sent


def _listening(sock: socket.socket) -> bool:
    return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))


def test_accept_loop_stops_on_a_signal_taken_by_another_thread() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with contextlib.closing(listener), installed_stopper() as stop:
        sent = term_from_another_thread(0.3, listener)
        accept_loop([listener], stop, lambda sock, peer: sock.close())
        took = time.monotonic() - sent
    assert stop.requested
    assert took < PROMPT, f"the accept loop noticed the stop only after {took:.1f} s"


@pytest.mark.parametrize("state", ["idle", "mid-record"])
def test_a_connection_stops_on_a_signal_taken_by_another_thread(tmp_path: Path, state: str) -> None:
    """On the default limits (idle 300 s, record 60 s) a held connection does not delay
    the stop."""
    export = tmp_path / "export"
    export.mkdir()
    app = build_app(local_config(export, tmp_path / "state"))
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname()[:2])
    server_end, peer = listener.accept()
    with contextlib.closing(listener), contextlib.closing(client), installed_stopper() as stop:
        if state == "mid-record":
            client.sendall(struct.pack(">I", 0x80000000 | len(_NULL)) + _NULL[:8])
        sent = term_from_another_thread(0.3, client)
        serve_connection(server_end, app.dispatcher(0), Limits(), peer, stop)
        took = time.monotonic() - sent
    app.close()
    assert took < PROMPT, f"the connection noticed the stop only after {took:.1f} s"


@pytest.mark.parametrize("variant", ["serial", "thread"])
def test_a_server_stops_when_a_thread_of_it_takes_the_signal(tmp_path: Path, variant: str) -> None:
    """``--udp`` gives these models a thread beside the main one; a SIGTERM that lands
    there (kill(2) of a thread id delivers it to that thread) still stops the server."""
    server = start_model(tmp_path, variant, extra=("--udp",))
    try:
        threads = [int(t) for t in os.listdir(f"/proc/{server.pid}/task")]
        other = next(t for t in threads if t != server.pid)
        os.kill(other, signal.SIGTERM)
        start_wait = time.monotonic()
        while server.proc.poll() is None and time.monotonic() - start_wait < PROMPT:
            time.sleep(0.05)
        assert server.proc.poll() is not None, f"{variant} still running {PROMPT} s after SIGTERM"
    finally:
        stop_checked(server)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("state", ["idle", "mid-record"])
def test_every_model_stops_promptly_while_a_client_holds_a_connection(
    tmp_path: Path, variant: str, state: str
) -> None:
    """On the default limits, with a client connected idle or stalled mid-record."""
    export = tmp_path / "export"
    export.mkdir()
    server = start(export, tmp_path / "state", VARIANTS[variant], tmp_path / "srv.log")
    client = socket.create_connection(("127.0.0.1", server.port))
    try:
        client.sendall(struct.pack(">I", 0x80000000 | len(_NULL)) + _NULL)
        client.settimeout(10)
        assert len(client.recv(100)) >= 24  # served: the connection is in a worker's hands
        if state == "mid-record":
            client.sendall(struct.pack(">I", 0x80000000 | len(_NULL)) + _NULL[:8])
        time.sleep(0.2)
        began = time.monotonic()
        stop_checked(server)  # fails if it does not exit within 15 s
        took = time.monotonic() - began
        assert took < PROMPT, f"{variant} took {took:.1f} s to stop"
    finally:
        client.close()
        if server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait(5)

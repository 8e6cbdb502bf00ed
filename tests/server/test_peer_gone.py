"""``peer_gone``: the process model's check before forking for an accepted connection."""

from __future__ import annotations

import socket
import struct
import time

from ferry.server.skeleton import peer_gone


def accepted(action: str) -> tuple[socket.socket, socket.socket]:
    """(server side, client side) of a loopback connection after the client's ``action``."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        if action == "close":
            client.close()
        elif action == "reset":
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
        elif action == "send":
            client.sendall(b"\x80\0\0\x04data")
        conn, _ = listener.accept()
    time.sleep(0.05)  # the FIN / RST has arrived
    return conn, client


def test_open_and_silent_or_sending_is_served() -> None:
    for action in ("nothing", "send"):
        conn, client = accepted(action)
        try:
            assert not peer_gone(conn)
            if action == "send":
                assert conn.recv(8) == b"\x80\0\0\x04data"  # the peek consumed nothing
        finally:
            conn.close()
            client.close()


def test_closed_or_reset_is_not() -> None:
    for action in ("close", "reset"):
        conn, client = accepted(action)
        try:
            assert peer_gone(conn)
        finally:
            conn.close()
            client.close()

"""The thread-per-connection model: one process, a thread for each connection, capped.

Connections past ``max_connections`` are accepted and reset at once, so a flood costs a
descriptor for a moment, never a thread. Threads share the process's ``App``, whose parts
are thread-safe (the backend's own locks, the MOUNT table's lock). On shutdown every
connection is shut down for reading, so each thread finishes the call in hand and exits.
With ``--udp``, ``UDP_THREADS`` threads answer datagrams.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from ferry.rpc.dispatch import Address
from ferry.server.skeleton import ServerModel, ServerSpec

STACK_SIZE = 512 * 1024  # the dispatcher's call depth is small: keep per-thread memory small
_JOIN_SECONDS = 5.0
UDP_THREADS = 4  # datagrams answered at once; more wait in the socket buffer


class ThreadServer(ServerModel):
    name = "thread"
    udp_threads = UDP_THREADS

    def __init__(self, spec: ServerSpec) -> None:
        super().__init__(spec)
        self.active: dict[socket.socket, threading.Thread] = {}
        self.lock = threading.Lock()
        threading.stack_size(STACK_SIZE)

    def open_connections(self) -> int:
        return len(self.active)  # only this (the accepting) thread adds

    def spawn(self, sock: socket.socket, peer: Address) -> None:
        thread = threading.Thread(target=self._serve, args=(sock, peer), name=f"ferry-conn-{peer}")
        with self.lock:
            self.active[sock] = thread
        thread.start()

    def _serve(self, sock: socket.socket, peer: Address) -> None:
        try:
            self.serve_one(sock, peer, None)  # signals reach the main thread: finish() ends us
        finally:
            with self.lock:
                self.active.pop(sock, None)

    def finish(self) -> None:
        with self.lock:
            active = list(self.active.items())
        for sock, _ in active:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + _JOIN_SECONDS
        for _, thread in active:
            thread.join(max(deadline - time.monotonic(), 0.0))

"""The thread-per-connection model: one process, a thread for each connection, capped.

Connections past ``max_connections`` are accepted and reset at once, so a flood costs a
descriptor for a moment, never a thread. Threads share the process's ``App``, whose parts
are thread-safe (the backend's own locks, the MOUNT table's lock). On shutdown every
connection is shut down for reading, so each thread finishes the call in hand and exits.
With ``--udp``, ``UDP_THREADS`` threads answer datagrams.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time

from ferry.rpc.dispatch import Address, Dispatcher
from ferry.server.base import ServerModel, Stopper, accept_loop, refuse, serve_connection
from ferry.server.udp import DatagramThreads

log = logging.getLogger("ferry.server")

STACK_SIZE = 512 * 1024  # the dispatcher's call depth is small: keep per-thread memory small
_JOIN_SECONDS = 5.0
UDP_THREADS = 4  # datagrams answered at once; more wait in the socket buffer


class ThreadServer(ServerModel):
    name = "thread"

    def run(self) -> None:
        self.active: dict[socket.socket, threading.Thread] = {}
        self.lock = threading.Lock()
        stop = Stopper().install()
        threading.stack_size(STACK_SIZE)
        with self.spec.open_app() as app:
            dispatcher = app.dispatcher(self.spec.port)
            with DatagramThreads(self.spec.udp(0), dispatcher, UDP_THREADS):
                try:
                    accept_loop(
                        self.spec.listeners, stop, lambda s, a: self._spawn(s, a, dispatcher)
                    )
                finally:
                    self._stop_all()

    def _spawn(self, sock: socket.socket, peer: Address, dispatcher: Dispatcher) -> None:
        with self.lock:
            if len(self.active) >= self.spec.limits.max_connections:
                log.warning("refusing %s: %d connections open", peer, len(self.active))
                refuse(sock)
                self.spec.metrics.connection_rejected()
                return
            thread = threading.Thread(
                target=self._serve, args=(sock, peer, dispatcher), name=f"ferry-conn-{peer}"
            )
            self.active[sock] = thread
        thread.start()

    def _serve(self, sock: socket.socket, peer: Address, dispatcher: Dispatcher) -> None:
        try:
            serve_connection(sock, dispatcher, self.spec.limits, peer, metrics=self.spec.metrics)
        finally:
            with self.lock:
                self.active.pop(sock, None)

    def _stop_all(self) -> None:
        with self.lock:
            active = list(self.active.items())
        for sock, _ in active:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + _JOIN_SECONDS
        for _, thread in active:
            thread.join(max(deadline - time.monotonic(), 0.0))

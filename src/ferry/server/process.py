"""The process-per-connection model: the parent accepts, a forked child serves each
connection and exits with it; at most ``max_connections`` children at once.

Connections past the cap are accepted and reset at once: a flood never forks; nor does a
connection whose client has already closed it (a connect-and-close flood, drained from the
backlog after the clients went away). The parent reaps children at least twice a second.
Each child builds its own ``App`` (a SQLite connection must not cross a fork) from the
state the parent prepared: the handle key on disk, the run's write verifier, the shared
MOUNT table file and duplicate request cache.

UDP has no connections to fork for: with ``--udp`` one more child, kept running (and
restarted, at most once a second, if it dies), answers datagrams from a few threads.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Iterator

from ferry.rpc.dispatch import Address
from ferry.server.skeleton import ServerModel, ServerSpec, peer_gone
from ferry.server.stopping import Stopper, wait_for_stop
from ferry.server.udp import DatagramThreads
from ferry.server.workers import fork_child, reap, terminate

log = logging.getLogger("ferry.server")

UDP_THREADS = 4


class ProcessServer(ServerModel):
    name = "process"
    ticks = True

    def __init__(self, spec: ServerSpec) -> None:
        super().__init__(spec)
        self.children: set[int] = set()
        self.udp_pid = 0
        self.udp_started = -1.0

    @classmethod
    def shares_state(cls, workers: int) -> bool:
        return True

    @contextlib.contextmanager
    def serving(self, slot: int) -> Iterator[None]:
        """The parent holds no ``App``, only its children (and the UDP child)."""
        try:
            self._keep_udp()
            yield
        finally:
            terminate(self.children | ({self.udp_pid} if self.udp_pid else set()))

    def open_connections(self) -> int:
        self.tick()
        return len(self.children)

    def tick(self) -> None:
        gone = reap(self.children)
        for pid in gone:
            self.spec.metrics.exited(pid)  # a killed child's open connection: not for ever
        if self.udp_pid in gone:
            log.warning("udp process %d exited; restarting it", self.udp_pid)
            self.udp_pid = 0
        self._keep_udp()

    def spawn(self, sock: socket.socket, peer: Address) -> None:
        if not peer_gone(sock):  # a fork costs far more than this peek: floods close at once
            self.children.add(fork_child(lambda: self._child(sock, peer)))
        sock.close()

    def _child(self, sock: socket.socket, peer: Address) -> None:
        for listener in self.spec.listeners:
            listener.close()
        stop = Stopper().install()
        with self.spec.open_app() as app:
            self._dispatcher = app.dispatcher(self.spec.port)
            self.serve_one(sock, peer, stop)

    def _keep_udp(self) -> None:
        """Fork the UDP child if there should be one and it is not running."""
        if not self.spec.datagrams or self.udp_pid:
            return
        if time.monotonic() - self.udp_started >= 1.0:  # one that dies at once: no fork bomb
            self.udp_started = time.monotonic()
            self.udp_pid = fork_child(self._udp)

    def _udp(self) -> None:
        spec = self.spec
        for listener in spec.listeners:
            listener.close()
        stop = Stopper().install()
        with (
            spec.open_app() as app,
            DatagramThreads(spec.udp(0), app.dispatcher(spec.port), UDP_THREADS),
        ):
            wait_for_stop(stop)

"""The process-per-connection model: the parent accepts, a forked child serves each
connection and exits with it; at most ``max_connections`` children at once.

Connections past the cap are accepted and reset at once: a flood never forks; nor does a
connection whose client has already closed it (a connect-and-close flood, drained from the
backlog after the clients went away). The parent
reaps children at least twice a second. Each child builds its own ``App`` (a SQLite
connection must not cross a fork) from the state the parent prepared: the handle key on
disk, the run's write verifier, the shared MOUNT table file and duplicate request cache.

UDP has no connections to fork for: with ``--udp`` one more child, kept running (and
restarted, at most once a second, if it dies), answers datagrams from a few threads.
"""

from __future__ import annotations

import logging
import socket
import time

from ferry.rpc.dispatch import Address
from ferry.server.base import (
    ServerModel,
    Stopper,
    accept_loop,
    fork_child,
    peer_gone,
    reap,
    refuse,
    serve_connection,
    terminate,
    wait_for_stop,
)
from ferry.server.udp import DatagramThreads

log = logging.getLogger("ferry.server")

UDP_THREADS = 4


class ProcessServer(ServerModel):
    name = "process"

    @classmethod
    def shares_state(cls, workers: int) -> bool:
        return True

    def run(self) -> None:
        self.children: set[int] = set()
        self.udp_pid = 0
        self.udp_started = -1.0
        stop = Stopper().install()
        try:
            self._keep_udp()
            accept_loop(self.spec.listeners, stop, self._spawn, self._tick)
        finally:
            terminate(self.children | ({self.udp_pid} if self.udp_pid else set()))

    def _tick(self) -> None:
        if self.udp_pid in reap(self.children):
            log.warning("udp process %d exited; restarting it", self.udp_pid)
            self.udp_pid = 0
        self._keep_udp()

    def _keep_udp(self) -> None:
        """Fork the UDP child if there should be one and it is not running."""
        if not self.spec.datagrams or self.udp_pid:
            return
        if time.monotonic() - self.udp_started >= 1.0:  # one that dies at once: no fork bomb
            self.udp_started = time.monotonic()
            self.udp_pid = fork_child(self._udp)

    def _spawn(self, sock: socket.socket, peer: Address) -> None:
        self._tick()
        if peer_gone(sock):  # a fork costs far more than this peek: floods close at once
            sock.close()
            return
        if len(self.children) >= self.spec.limits.max_connections:
            log.warning("refusing %s: %d connection processes", peer, len(self.children))
            refuse(sock)
            self.spec.metrics.connection_rejected()
            return
        self.children.add(fork_child(lambda: self._child(sock, peer)))
        sock.close()

    def _child(self, sock: socket.socket, peer: Address) -> None:
        spec = self.spec
        for listener in spec.listeners:
            listener.close()
        stop = Stopper().install()
        with spec.open_app() as app:
            dispatcher = app.dispatcher(spec.port)
            serve_connection(sock, dispatcher, spec.limits, peer, stop, spec.metrics)

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

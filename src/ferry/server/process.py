"""The process-per-connection model: the parent accepts, a forked child serves each
connection and exits with it; at most ``max_connections`` children at once.

Connections past the cap are accepted and reset at once: a flood never forks. The parent
reaps children at least twice a second. Each child builds its own ``App`` (a SQLite
connection must not cross a fork) from the state the parent prepared: the handle key on
disk, the run's write verifier, the shared MOUNT table file.
"""

from __future__ import annotations

import logging
import socket

from ferry.rpc.dispatch import Address
from ferry.server.base import (
    ServerModel,
    Stopper,
    accept_loop,
    fork_child,
    reap,
    refuse,
    serve_connection,
    terminate,
)

log = logging.getLogger("ferry.server")


class ProcessServer(ServerModel):
    name = "process"

    @classmethod
    def shares_state(cls, workers: int) -> bool:
        return True

    def run(self) -> None:
        self.children: set[int] = set()
        stop = Stopper().install()
        try:
            accept_loop(self.spec.listeners, stop, self._spawn, lambda: reap(self.children))
        finally:
            terminate(self.children)

    def _spawn(self, sock: socket.socket, peer: Address) -> None:
        reap(self.children)
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

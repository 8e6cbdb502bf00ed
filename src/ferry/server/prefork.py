"""The pre-forked model: N worker processes made up front, each a serial server accepting
on the shared listening socket; the parent only restarts workers that die.

N bounds both the processes and the connections served at once; further connections wait
in the listen backlog until a worker is free. Every worker builds its own ``App`` after
the fork from the state the parent prepared (handle key file, write verifier, MOUNT
table file, the shared duplicate request cache). With ``--udp`` each worker also answers
datagrams from a thread, on its own socket of the port's ``SO_REUSEPORT`` group.
"""

from __future__ import annotations

import os
import socket

from ferry.rpc.dispatch import Address
from ferry.server.base import ServerModel, Stopper, accept_loop, serve_connection, supervise
from ferry.server.udp import DatagramThreads


def default_workers() -> int:
    return max(4, 2 * (os.cpu_count() or 1))


class PreforkServer(ServerModel):
    name = "prefork"
    default_workers = default_workers()

    @classmethod
    def shares_state(cls, workers: int) -> bool:
        return True

    def run(self) -> None:
        supervise(self.spec.workers, self._worker, Stopper().install())

    def _worker(self, slot: int) -> None:
        spec, stop = self.spec, Stopper().install()
        with spec.open_app() as app:
            dispatcher = app.dispatcher(spec.port)

            def handle(sock: socket.socket, peer: Address) -> None:
                serve_connection(sock, dispatcher, spec.limits, peer, stop, spec.metrics)

            with DatagramThreads(spec.udp(slot), dispatcher):
                accept_loop(spec.listeners, stop, handle)

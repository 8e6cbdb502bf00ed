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
from ferry.server.config import ServerConfig
from ferry.server.skeleton import ServerModel
from ferry.server.stopping import Stopper
from ferry.server.workers import supervise


def default_workers() -> int:
    return max(4, 2 * (os.cpu_count() or 1))


class PreforkServer(ServerModel):
    name = "prefork"

    @classmethod
    def default_workers(cls, config: ServerConfig) -> int:
        return default_workers()

    @classmethod
    def shares_state(cls, workers: int) -> bool:
        return True

    def run(self) -> None:
        supervise(self.spec.workers, self.serve, Stopper().install(), self.spec.metrics.exited)

    def spawn(self, sock: socket.socket, peer: Address) -> None:
        self.serve_one(sock, peer, self.stop)  # inline: the other workers accept meanwhile

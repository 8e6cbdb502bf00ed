"""The serial model: one process, one connection at a time (the lecture's first server).

Its only defence is time: a client that stalls holds the whole server until one of the
``Limits`` timeouts cuts it off; everyone else waits in the listen backlog meanwhile.
With ``--udp`` one thread beside it answers datagrams, one at a time too.
"""

from __future__ import annotations

import socket

from ferry.rpc.dispatch import Address
from ferry.server.base import ServerModel, Stopper, accept_loop, serve_connection
from ferry.server.udp import DatagramThreads


class SerialServer(ServerModel):
    name = "serial"

    def run(self) -> None:
        spec, stop = self.spec, Stopper().install()
        with spec.open_app() as app:
            dispatcher = app.dispatcher(spec.port)

            def handle(sock: socket.socket, peer: Address) -> None:
                serve_connection(sock, dispatcher, spec.limits, peer, stop, spec.metrics)

            with DatagramThreads(spec.udp(0), dispatcher):
                accept_loop(spec.listeners, stop, handle)

"""The serial model: one process, one connection at a time (the lecture's first server).

Everyone else waits in the listen backlog behind the connection in service, so that one
yields as soon as a client is waiting (a connection pending on a listener): closed at once
when idle, cut off after ``Limits.waiting_grace`` (2 s) when mid-record or mid-reply. With
nobody waiting, the usual ``Limits`` timeouts apply (docs/server-models.md).
With ``--udp`` one thread beside it answers datagrams, one at a time too.
"""

from __future__ import annotations

import socket

from ferry.rpc.dispatch import Address
from ferry.server.skeleton import ServerModel


class SerialServer(ServerModel):
    name = "serial"

    def spawn(self, sock: socket.socket, peer: Address) -> None:
        self.serve_one(sock, peer, self.stop, waiting_room=self.spec.listeners)

"""Listening sockets for everything Ferry serves (NFS and MOUNT, portmap, UDP, metrics):
resolved, created with SO_REUSEADDR, bound; a failure is one ConfigError line naming what
was to listen there (``ferry: error: metrics port 9100 on 127.0.0.1 is already in use``).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from ferry.errors import ConfigError

__all__ = ["bind_listener", "listen_error", "passive_socket"]


def passive_socket(host: str, port: int, kind: socket.SocketKind) -> tuple[socket.socket, Any]:
    """An unbound socket of ``kind`` for listening on ``host``, with SO_REUSEADDR set, and
    the address to bind; a host that does not resolve is a ConfigError."""
    try:
        infos = socket.getaddrinfo(host, port, type=kind, flags=socket.AI_PASSIVE)
        family, sock_kind, proto, _, addr = infos[0]
        sock = socket.socket(family, sock_kind, proto)
    except OSError as exc:
        udp = " (UDP)" if kind == socket.SOCK_DGRAM else ""
        raise ConfigError(f"cannot listen on {host}{udp}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}: {exc.strerror or exc}") from exc
    return sock, addr


def bind_listener(host: str, port: int, what: str, backlog: int = 256) -> socket.socket:
    """A listening TCP socket (SO_REUSEADDR); errors become a ConfigError naming ``what``."""
    sock, addr = passive_socket(host, port, socket.SOCK_STREAM)
    try:
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise listen_error(exc, host, port, what) from exc
    return sock


def listen_error(exc: OSError, host: str, port: int, what: str) -> ConfigError:
    """One line for a failed bind or listen on ``what``'s port (NFS, portmapper, metrics)."""
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(f"{what} port {port} on {host} is already in use")
    if exc.errno == errno.EACCES:
        return ConfigError(f"no permission to listen on {what} port {port}")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"cannot listen on {host}: {exc.strerror}")
    return ConfigError(f"cannot listen on {host}:{port}: {exc}")

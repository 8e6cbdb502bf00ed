"""A loopback TCP relay that can terminate TLS and keeps what clients sent, for tests of
clients of HTTP services (S3): put TLS in front of a plain server, or look at the request
headers a client really sent.

Plain Python threads, one pair per connection; ``stop`` closes the listener and every
connection. ``tls_cert`` makes a self-signed certificate for 127.0.0.1 with ``openssl``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from pathlib import Path

from helpers import peers


def tls_cert(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files of a self-signed certificate for IP 127.0.0.1."""
    openssl = peers.need_tool("openssl", "openssl")
    cert, key = directory / "cert.pem", directory / "key.pem"
    peers.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        timeout=60,
    )  # fmt: skip
    return cert, key


class TcpProxy:
    """Relays 127.0.0.1:``port`` to ``target_port``; with ``tls`` (cert, key) it speaks TLS
    to its clients. ``sent`` holds the first ``keep`` bytes each client sent."""

    def __init__(self, target_port: int, tls: tuple[Path, Path] | None = None,
                 keep: int = 1 << 16) -> None:  # fmt: skip
        self.target_port = target_port
        self.keep = keep
        self.sent: list[bytes] = []
        self._ctx: ssl.SSLContext | None = None
        if tls is not None:
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        self._listener = socket.create_server((peers.LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stopped = False
        threading.Thread(target=self._accept, daemon=True, name="tcpproxy").start()

    @property
    def url(self) -> str:
        return f"{'https' if self._ctx else 'http'}://{peers.LOOPBACK}:{self.port}"

    def _accept(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            if self._ctx is not None:
                client.settimeout(10)
                client = self._ctx.wrap_socket(client, server_side=True)
                client.settimeout(None)
            upstream = socket.create_connection((peers.LOOPBACK, self.target_port), timeout=10)
            upstream.settimeout(None)
        except OSError:  # a client that refused our certificate, or no server behind
            client.close()
            return
        with self._lock:
            self._socks += [client, upstream]
            self.sent.append(b"")
            slot = len(self.sent) - 1
        threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()
        self._pump(client, upstream, slot)

    def _pump(self, src: socket.socket, dst: socket.socket, slot: int | None) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                if slot is not None and len(self.sent[slot]) < self.keep:
                    self.sent[slot] += data[: self.keep - len(self.sent[slot])]
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        self._stopped = True
        self._listener.close()
        with self._lock:
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

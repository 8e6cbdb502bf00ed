"""The one skeleton every server model fills in: what a model is given (``ServerSpec``), the
accept loop, the connection cap (``accounting.over_cap``: refusal, log line, metric) and
the spawn hook.

A model only decides *how an admitted connection is run* (``ServerModel.spawn``): inline
(serial), in a thread, in a forked child; prefork and the async model with workers run the
same skeleton in several processes (``ferry.server.workers.supervise``). Protocol work is
the ``Dispatcher``'s, the connection's state and defences the ``ServerConnection``'s, the
blocking IO ``ferry.server.blocking``'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import selectors
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from typing import ClassVar

from ferry.nfs3.mount import MountRegistry
from ferry.rpc.dispatch import Address, Dispatcher
from ferry.rpc.drc import ReplyCache
from ferry.server.accounting import over_cap
from ferry.server.app import NON_IDEMPOTENT, App, build_app
from ferry.server.blocking import serve_connection
from ferry.server.config import ServerConfig
from ferry.server.connection import Limits
from ferry.server.malloc import keep_freed_buffers
from ferry.server.metrics import NO_METRICS, Metrics
from ferry.server.shared_drc import SharedReplyCache
from ferry.server.stopping import Shutdown, Stopper
from ferry.server.udp import DatagramThreads

__all__ = ["ServerModel", "ServerSpec", "accept_loop", "peer_gone", "refuse"]

log = logging.getLogger("ferry.server")


@dataclasses.dataclass(slots=True)
class ServerSpec:
    """Everything a model needs, prepared once in the first process before any fork.

    ``app`` is the protocol side already built in this process (single-process models), or
    ``None`` when each worker process builds its own from ``config`` (a SQLite connection or
    thread must never cross a fork). ``write_verifier``, ``keys``, ``mount_table`` and ``drc``
    are what workers of one server run share: the same verifier and handle keys everywhere
    (a worker restarted later included), one MOUNT table for DUMP, one duplicate request
    cache (made here, before any fork, when workers build their own ``App``; it lives in
    shared memory, see ``ferry.server.shared_drc``).
    """

    config: ServerConfig
    listeners: list[socket.socket]
    port: int
    limits: Limits
    workers: int
    write_verifier: bytes
    mount_table: MountRegistry
    app: App | None = None
    datagrams: list[list[socket.socket]] = dataclasses.field(default_factory=list)
    """Per worker slot, its UDP sockets (NFS port, portmapper port); empty without UDP."""
    metrics: Metrics = NO_METRICS
    """Made before any fork; in several processes it writes prometheus multiprocess files."""
    drc: ReplyCache | None = None
    keys: tuple[bytes, ...] = ()
    """The handle keys read at start (``App.keys``); empty: each ``App`` reads its own."""

    def __post_init__(self) -> None:
        if self.app is None and self.drc is None and self.config.drc_entries > 0:
            lock = self.config.resolved_state_dir() / "drc.lock"
            self.drc = SharedReplyCache(
                NON_IDEMPOTENT, lock, self.config.drc_entries, self.config.drc_bytes
            )

    def udp(self, slot: int) -> list[socket.socket]:
        """The UDP sockets of worker ``slot`` (none without ``--udp``)."""
        return self.datagrams[slot] if self.datagrams else []

    @contextlib.contextmanager
    def open_app(self) -> Iterator[App]:
        """This process's ``App``: the prebuilt one, or a new one closed on exit."""
        if self.app is not None:
            yield self.app
            return
        app = build_app(
            self.config,
            self.write_verifier,
            table=self.mount_table,
            metrics=self.metrics,
            drc=self.drc,
            keys=self.keys,
        )
        try:
            yield app
        finally:
            app.close()


class ServerModel:
    """How connections are run; ``run`` serves until SIGTERM or SIGINT.

    The skeleton (``serve``): install the Stopper, hold this process's ``App`` and UDP
    threads (``serving``), accept on every listener, refuse what is over the cap
    (``admit``), hand the rest to ``spawn``; on shutdown, ``finish``. A model fills in
    ``spawn`` and, if connections outlive it, ``open_connections``."""

    name: ClassVar[str]
    udp_threads: ClassVar[int] = 1
    """Threads per UDP socket in a process of this model (``--udp``)."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.stop = Stopper()
        self._dispatcher: Dispatcher | None = None
        keep_freed_buffers()  # before any fork: workers inherit it

    @classmethod
    def default_workers(cls, config: ServerConfig) -> int:
        """Worker processes when ``workers`` is not set (0), for ``config``'s exports."""
        return 1

    @classmethod
    def shares_state(cls, workers: int) -> bool:
        """True when calls are served by more than one process (state must be shared)."""
        return False

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT: by default, the skeleton in this process."""
        self.serve(0)

    def serve(self, slot: int) -> None:
        """The skeleton, in this process (worker ``slot``)."""
        self.stop = Stopper().install()
        with self.serving(slot):
            try:
                accept_loop(
                    self.spec.listeners, self.stop, self.admit, self.tick if self.ticks else None
                )
            finally:
                self.finish()

    @contextlib.contextmanager
    def serving(self, slot: int) -> Iterator[None]:
        """What this process holds while it accepts: its ``App`` and UDP threads."""
        with self.spec.open_app() as app:
            self._dispatcher = app.dispatcher(self.spec.port)
            with DatagramThreads(self.spec.udp(slot), self._dispatcher, self.udp_threads):
                yield

    @property
    def dispatcher(self) -> Dispatcher:
        assert self._dispatcher is not None, "only while serving"
        return self._dispatcher

    def admit(self, sock: socket.socket, peer: Address) -> None:
        """An accepted connection: refused over the cap, else spawned."""
        if over_cap(self.open_connections(), self.spec.limits, self.spec.metrics, peer):
            refuse(sock)
        else:
            self.spawn(sock, peer)

    def spawn(self, sock: socket.socket, peer: Address) -> None:
        """Run an admitted connection (``serve_one``): inline, in a thread, in a child.
        (The async model's loop accepts and spawns by itself.)"""
        raise NotImplementedError

    def serve_one(
        self,
        sock: socket.socket,
        peer: Address,
        stop: Stopper | None,
        waiting_room: Sequence[socket.socket] = (),
    ) -> None:
        """Serve ``sock`` until it ends: ``serve_connection`` with this process's dispatcher
        and this server's limits and metrics."""
        spec = self.spec
        serve_connection(sock, self.dispatcher, spec.limits, peer, stop, spec.metrics, waiting_room)

    def open_connections(self) -> int:
        """Connections served beside the accept loop now (counted against the cap)."""
        return 0

    ticks: ClassVar[bool] = False
    """Whether ``tick`` must run at least twice a second while accepting."""

    def tick(self) -> None:
        """Periodic work beside accepting (reaping children), when ``ticks``."""

    def finish(self) -> None:
        """On shutdown, before this process's ``App`` closes: end the connections."""


def refuse(sock: socket.socket) -> None:
    """Close a connection over the cap at once (the peer sees EOF)."""
    with contextlib.suppress(OSError):
        sock.close()


def peer_gone(sock: socket.socket) -> bool:
    """Whether the client already closed or reset ``sock`` (a flood's connect-and-close,
    or a client that gave up while the connection waited in the backlog): nothing is left
    to serve, so nothing is worth forking a process for."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # open, nothing sent yet
    except OSError:
        return True  # reset


def accept_loop(
    listeners: Sequence[socket.socket],
    stop: Stopper,
    handle: Callable[[socket.socket, Address], None],
    tick: Callable[[], None] | None = None,
) -> None:
    """Accept on every listener and pass each connection to ``handle`` until shutdown.

    Listeners are non-blocking, so several processes may wait on the same socket: the
    losers of a race just go back to waiting. ``tick`` (if given) runs at least every
    half second, e.g. to reap children."""
    with selectors.DefaultSelector() as sel:
        for listener in listeners:
            listener.setblocking(False)
            sel.register(listener, selectors.EVENT_READ)
        sel.register(stop, selectors.EVENT_READ)
        with contextlib.suppress(Shutdown):
            while not stop.requested:
                with stop.waiting():
                    events = sel.select(0.5 if tick is not None else None)
                for key, _ in events:
                    if key.fileobj is stop:
                        stop.woken()
                    elif not stop.requested:
                        _accept_one(key.fileobj, handle)  # type: ignore[arg-type]
                if tick is not None:
                    tick()


def _accept_one(listener: socket.socket, handle: Callable[[socket.socket, Address], None]) -> None:
    try:
        sock, addr = listener.accept()
    except (BlockingIOError, InterruptedError, ConnectionAbortedError):
        return  # another worker took it, or the peer gave up
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            log.warning("cannot accept: %s", exc.strerror)
            time.sleep(0.05)  # the backlog stays full until descriptors are freed
            return
        raise
    sock.setblocking(True)
    handle(sock, addr)

"""What every server model shares: limits, listening sockets, shutdown, the blocking
per-connection loop, and forking and supervising worker processes.

A model only decides *how a connection is run* (inline, in a thread, in a forked child, in
a pre-forked worker, on an event loop). Protocol work is the ``Dispatcher``'s; record
marking is the ``RecordReader``'s and ``frame``'s. The blocking loop here reads with
``recv_into`` straight into the reader's buffer and answers with one ``sendmsg`` of the
framed reply buffers (scatter-gather, no join); a READ's data left in its file (a
``FileSegment``) follows its header, sent with ``MSG_MORE``, by ``sendfile``: never copied.

Defences of the blocking loop (the lecture's ``alarm()``, done as deadlines on ``poll``):

* ``idle_timeout``: no byte at all for that long (a client that connects and never sends);
* ``record_timeout``: a record begun must be complete within that long, however the bytes
  trickle in (slowloris: half a record, then a byte every so often);
* ``send_timeout``: a reply must be taken by the peer within that long (a client that
  pipelines calls and never reads its replies).

A connection that trips one is closed abortively (RST, send queue dropped), so its kernel
buffers are freed at once. ``0`` disables a timeout. The serial model also yields to a
waiting client (``Limits.waiting_grace``), and every wait wakes for a stop (``Stopper``).
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import errno
import logging
import os
import select
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from types import FrameType
from typing import ClassVar

from ferry.errors import RecordError
from ferry.nfs3.mount import MountRegistry
from ferry.rpc.dispatch import TCP_SENDFILE, Address, Dispatcher
from ferry.rpc.drc import ReplyCache
from ferry.rpc.record import DEFAULT_MAX_RECORD, RecordReader, frame
from ferry.segment import FileSegment, Part, SegmentShrank, close_segments
from ferry.server.app import NON_IDEMPOTENT, App, build_app
from ferry.server.config import ServerConfig
from ferry.server.malloc import keep_freed_buffers
from ferry.server.metrics import NO_METRICS, Metrics
from ferry.server.shared_drc import SharedReplyCache

log = logging.getLogger("ferry.server")

_IOV_MAX = 1024  # Linux's limit on buffers per sendmsg
_MSG_MORE = getattr(socket, "MSG_MORE", 0)  # Linux: hold a header back for the data after it
_NO_SENDFILE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # file system cannot: copy
LINGER_ABORT = struct.pack("ii", 1, 0)


@dataclasses.dataclass(slots=True)
class Limits:
    """Per-connection defences against slow or hostile clients (seconds; 0 disables)."""

    max_record: int = DEFAULT_MAX_RECORD
    max_in_flight: int = 64
    idle_timeout: float = 300.0
    max_connections: int = 1024
    record_timeout: float = 60.0
    send_timeout: float = 60.0
    waiting_grace: float = 2.0
    """Serial model: once another client waits, the connection in service is closed when
    idle and gets at most this long to finish the record or reply in hand."""

    @classmethod
    def from_config(cls, config: ServerConfig) -> Limits:
        return cls(
            max_record=config.max_record_size,
            max_in_flight=config.max_in_flight,
            idle_timeout=config.idle_timeout,
            max_connections=config.max_connections,
            record_timeout=config.record_timeout,
            send_timeout=config.send_timeout,
        )


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


def abort(sock: socket.socket) -> None:
    """Close a connection at once with a reset, dropping what the kernel still holds for it
    (a peer that does not read must not pin our send buffers)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
    sock.close()


# -- what a model is given ----------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class ServerSpec:
    """Everything a model needs, prepared once in the first process before any fork.

    ``app`` is the protocol side already built in this process (single-process models), or
    ``None`` when each worker process builds its own from ``config`` (a SQLite connection or
    thread must never cross a fork). ``write_verifier``, ``mount_table`` and ``drc`` are what
    workers of one server run share: the same verifier everywhere, one MOUNT table for DUMP,
    one duplicate request cache (made here, before any fork, when workers build their own
    ``App``; it lives in shared memory, see ``ferry.server.shared_drc``).
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
        )
        try:
            yield app
        finally:
            app.close()


class ServerModel(abc.ABC):
    """How connections are run; ``run`` serves until SIGTERM or SIGINT."""

    name: ClassVar[str]
    default_workers: ClassVar[int] = 1

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        keep_freed_buffers()  # before any fork: workers inherit it

    @classmethod
    def shares_state(cls, workers: int) -> bool:
        """True when calls are served by more than one process (state must be shared)."""
        return False

    @abc.abstractmethod
    def run(self) -> None: ...


# -- shutdown -------------------------------------------------------------------------------


class Shutdown(Exception):
    """Raised in the main thread by SIGTERM/SIGINT while it is blocked waiting."""


_early_stop = False


def defer_signals() -> None:
    """Until a model installs its own handlers, note SIGTERM/SIGINT instead of dying: a
    stop sent right after the start-up banner is then a clean stop, not a kill."""

    def note(signum: int, frame: FrameType | None) -> None:
        global _early_stop
        _early_stop = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, note)


def stop_requested_early() -> bool:
    return _early_stop


class Stopper:
    """Graceful shutdown for blocking loops: a signal only *requests* a stop, and interrupts
    the main thread only while it waits (accept, recv, send, waitpid), never mid-call.

    CPython runs the Python handler between bytecodes of the main thread, so a signal noted
    at C level just before the main thread blocks (or by another thread) would not end the
    wait. Every wait therefore also watches ``fileno()``, the read end of a socket pair that
    ``signal.set_wakeup_fd`` makes the C handler write to: the self-pipe trick."""

    _wake: ClassVar[tuple[socket.socket, socket.socket] | None] = None

    def __init__(self) -> None:
        self.requested = False
        self._waiting = False

    def install(self) -> Stopper:
        """Handle SIGTERM/SIGINT in this process (main thread only). A forked process
        installs its own: the wake-up pair is made anew, never shared across a fork."""
        old, Stopper._wake = Stopper._wake, socket.socketpair()
        for end in Stopper._wake:
            end.setblocking(False)
        signal.set_wakeup_fd(Stopper._wake[1].fileno(), warn_on_full_buffer=False)
        if old is not None:
            for end in old:
                end.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.requested = self.requested or stop_requested_early()
        return self

    def fileno(self) -> int:
        """Readable once a signal has arrived (see the class docstring)."""
        assert Stopper._wake is not None, "Stopper.install() first"
        return Stopper._wake[0].fileno()

    def woken(self) -> bool:
        """After ``fileno()`` turned readable: empty it; True if that signal asked for a
        stop (its handler has run by now: this is a Python call)."""
        assert Stopper._wake is not None
        with contextlib.suppress(BlockingIOError):
            while Stopper._wake[0].recv(256):
                pass
        return self.requested

    def sleep(self, seconds: float | None) -> None:
        """Wait up to ``seconds`` (None: for ever) or until a signal arrives."""
        poller = select.poll()
        poller.register(self, select.POLLIN)
        if poller.poll(None if seconds is None else seconds * 1000):
            self.woken()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        if self._waiting:
            raise Shutdown

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        self._waiting = True
        try:
            if self.requested:
                raise Shutdown
            yield
        finally:
            self._waiting = False


_NOT_STOPPING = contextlib.nullcontext()


# -- the blocking per-connection loop -------------------------------------------------------


class Timeout(Exception):
    """A connection overstayed one of its limits; ``kind`` is idle, record or send."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind} timeout{detail}")
        self.kind = kind


class BlockingConnection:
    """One connection served with blocking waits: one call at a time, in order.

    Every wait is one ``poll`` of the socket, of the Stopper's wake-up descriptor (a stop
    is never slept through) and, for the serial model, of the listening sockets: a
    connection pending there is another client waiting, and the one in service yields
    (closed once idle, its record or reply cut off after ``Limits.waiting_grace``)."""

    def __init__(
        self,
        sock: socket.socket,
        dispatcher: Dispatcher,
        limits: Limits,
        peer: Address,
        stop: Stopper | None = None,
        waiting_room: Sequence[socket.socket] = (),
    ) -> None:
        self.sock = sock
        self.dispatcher = dispatcher
        self.limits = limits
        self.peer = peer
        self.stop = stop
        self.reader = RecordReader(limits.max_record)
        self.record_started: float | None = None
        self.waiter_since: float | None = None
        """When another client was first seen waiting (serial model only)."""
        sock.setblocking(False)
        self._fd = sock.fileno()
        self._events = select.POLLIN
        self._poll = select.poll()
        self._poll.register(self._fd, self._events)
        if stop is not None:
            self._poll.register(stop, select.POLLIN)
        self._room = [listener.fileno() for listener in waiting_room]
        for fd in self._room:
            self._poll.register(fd, select.POLLIN)

    def run(self) -> None:
        """Serve calls until EOF; raises Timeout, RecordError, OSError or Shutdown."""
        stop = self.stop
        while stop is None or not stop.requested:
            with stop.waiting() if stop is not None else _NOT_STOPPING:
                n = self._receive()
            if n == 0:
                return
            self.reader.buffer_updated(n)
            answered = self._answer()
            if not self.reader.incomplete:
                self.record_started = None
            elif self.record_started is None or answered:  # time spent answering is ours
                self.record_started = time.monotonic()

    def _receive(self) -> int:
        """Bytes received into the reader's buffer; 0 at EOF, and 0 when the connection is
        idle while another client waits (it is closed as at EOF; its client may come back)."""
        idle = _after(self.limits.idle_timeout)
        while True:
            if self.waiter_since is not None and self.record_started is None:
                log.info("closing idle connection from %s: another client is waiting", self.peer)
                return 0
            deadline, kind = idle, "idle"
            if self.record_started is not None and self.limits.record_timeout > 0:
                record = self.record_started + self.limits.record_timeout
                if deadline is None or record < deadline:
                    deadline, kind = record, "record"
            if self._wait(select.POLLIN, deadline, kind):
                try:
                    return self.sock.recv_into(self.reader.get_buffer())
                except BlockingIOError:
                    continue

    def _wait(self, events: int, deadline: float | None, kind: str, detail: str = "") -> bool:
        """Until the socket is ready for ``events`` (True), or another client is first seen
        waiting (False: the deadlines change). Timeout(kind) past ``deadline`` (or the
        waiting grace), Shutdown when a stop is requested."""
        if self.waiter_since is not None and self.limits.waiting_grace > 0:
            grace = self.waiter_since + self.limits.waiting_grace
            if deadline is None or grace < deadline:
                deadline, detail = grace, " (another client is waiting)"
        if events != self._events:
            self._poll.modify(self._fd, events)
            self._events = events
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise Timeout(kind, detail)
            ready = dict(self._poll.poll(None if left is None else left * 1000))
            if self.stop is not None and self.stop.fileno() in ready and self.stop.woken():
                raise Shutdown
            if self._fd in ready:
                return True
            if any(fd in ready for fd in self._room):
                self.waiter_since = time.monotonic()
                for fd in self._room:
                    self._poll.unregister(fd)
                self._room = []
                return False

    def _answer(self) -> bool:
        """Dispatch every complete record received; True if any was."""
        answered = False
        while (record := self.reader.next_record()) is not None:
            answered = True
            reply = self.dispatcher.handle_parts(record, self.peer, TCP_SENDFILE)
            if reply is not None:
                with self.stop.waiting() if self.stop is not None else _NOT_STOPPING:
                    self._send(frame(reply))
        return answered

    def _send(self, parts: Sequence[Part]) -> None:
        """Send a framed reply: buffers with sendmsg, file segments with sendfile (the
        buffers before one go with MSG_MORE, so its header and data leave together)."""
        deadline = _after(self.limits.send_timeout)
        try:
            views: list[memoryview] = []
            for part in parts:
                if isinstance(part, FileSegment):
                    self._sendmsg(views, deadline, _MSG_MORE)
                    views = []
                    self._sendfile(part, deadline)
                elif len(part):
                    views.append(memoryview(part).cast("B"))
            self._sendmsg(views, deadline)
        finally:
            close_segments(parts)

    def _sendmsg(self, views: list[memoryview], deadline: float | None, flags: int = 0) -> None:
        while views:
            try:
                sent = self.sock.sendmsg(views[:_IOV_MAX], (), flags)
            except BlockingIOError:
                self._wait_writable(deadline)
                continue
            views = _advance(views, sent)

    def _sendfile(self, segment: FileSegment, deadline: float | None) -> None:
        """All of ``segment``, or SegmentShrank if the file ended first (the record, whose
        mark counted those bytes, can then only be cut off with the connection)."""
        out, pos, end = self._fd, segment.offset, segment.offset + segment.count
        while pos < end:
            try:
                sent = os.sendfile(out, segment.fd, pos, end - pos)
            except BlockingIOError:
                self._wait_writable(deadline)
                continue
            except OSError as exc:
                if pos > segment.offset or exc.errno not in _NO_SENDFILE:
                    raise
                self._sendmsg([memoryview(segment.read())], deadline)  # e.g. a FUSE file
                return
            if sent == 0:
                raise SegmentShrank(end - pos)
            pos += sent

    def _wait_writable(self, deadline: float | None) -> None:
        while not self._wait(select.POLLOUT, deadline, "send", _NOT_READING):
            pass


_NOT_READING = " (the client does not read its replies)"


def _after(seconds: float) -> float | None:
    """The deadline ``seconds`` from now; None for 0 (no limit)."""
    return time.monotonic() + seconds if seconds > 0 else None


def _advance(views: list[memoryview], sent: int) -> list[memoryview]:
    """The buffers still to send after ``sent`` bytes went out."""
    i = 0
    while i < len(views) and sent >= len(views[i]):
        sent -= len(views[i])
        i += 1
    rest = views[i:]
    if rest and sent:
        rest[0] = rest[0][sent:]
    return rest


def serve_connection(
    sock: socket.socket,
    dispatcher: Dispatcher,
    limits: Limits,
    peer: Address = None,
    stop: Stopper | None = None,
    metrics: Metrics = NO_METRICS,
    waiting_room: Sequence[socket.socket] = (),
) -> None:
    """Serve one accepted connection until EOF, a timeout, a bad record or shutdown, then
    close it. Never raises except for a crash in this adapter itself. ``waiting_room``:
    the listeners whose pending connections this one yields to (the serial model)."""
    if peer is None:
        with contextlib.suppress(OSError):
            peer = sock.getpeername()
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn = BlockingConnection(sock, dispatcher, limits, peer, stop, waiting_room)
    clean = False
    metrics.connection_opened()
    try:
        conn.run()
        clean = True
    except Timeout as exc:
        metrics.timeout(exc.kind)
        log.info("closing connection from %s: %s", peer, exc)
    except (RecordError, SegmentShrank) as exc:
        log.info("closing connection from %s: %s", peer, exc)
    except Shutdown:
        log.debug("closing connection from %s: shutting down", peer)
    except OSError as exc:
        log.debug("connection from %s failed: %s", peer, exc)
    finally:
        metrics.connection_closed()
        if clean:
            sock.close()
        else:
            abort(sock)


# -- accepting --------------------------------------------------------------------------


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


# -- worker processes -------------------------------------------------------------------


def fork_child(body: Callable[[], None]) -> int:
    """Fork; the child runs ``body`` and exits (never returning), the parent gets its pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        body()
    except BaseException:
        log.exception("worker %d crashed", os.getpid())
        code = 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise AssertionError("unreachable")  # pragma: no cover


def reap(children: set[int]) -> list[int]:
    """Collect every child that has exited, without blocking; returns their pids (which
    may include children not in ``children``)."""
    done: list[int] = []
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return done
        if pid == 0:
            return done
        children.discard(pid)
        done.append(pid)


def wait_for_stop(stop: Stopper) -> None:
    """Block until SIGTERM or SIGINT (for a process whose work happens in threads)."""
    with contextlib.suppress(Shutdown):
        while not stop.requested:
            with stop.waiting():
                stop.sleep(None)


def terminate(children: set[int], grace: float = 5.0) -> None:
    """SIGTERM every child, wait up to ``grace`` seconds, then SIGKILL the rest."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while children and time.monotonic() < deadline:
            reap(children)
            time.sleep(0.01)
        if not children:
            return
    log.error("workers %s did not exit", sorted(children))


def supervise(count: int, worker: Callable[[int], None], stop: Stopper) -> None:
    """Run ``count`` forked copies of ``worker``, restarting any that dies, until shutdown.

    Each gets its slot number (0 to count - 1); a restarted worker gets the slot of the one
    it replaces, so it can take over per-slot resources such as its UDP sockets."""
    slots: dict[int, tuple[int, float]] = {}  # pid -> (slot, start time)

    def start(slot: int) -> None:
        pid = fork_child(lambda: worker(slot))
        slots[pid] = (slot, time.monotonic())
        log.debug("worker %d started (slot %d)", pid, slot)

    previous = signal.signal(signal.SIGCHLD, _child_exited)  # wakes stop.sleep below
    try:
        for slot in range(count):
            start(slot)
        with contextlib.suppress(Shutdown):
            while not stop.requested:
                with stop.waiting():
                    stop.sleep(None)
                for pid, status in _exited():
                    slot, started = slots.pop(pid, (-1, 0.0))
                    if slot < 0:
                        continue
                    log.warning("worker %d exited (status %#x); restarting it", pid, status)
                    while (left := started + 1.0 - time.monotonic()) > 0:
                        with stop.waiting():  # a worker that dies at once must not fork-bomb
                            stop.sleep(left)
                    start(slot)
    finally:
        signal.signal(signal.SIGCHLD, previous)
        terminate(set(slots))


def _child_exited(signum: int, frame: FrameType | None) -> None:
    """Nothing: the signal's byte on the Stopper's wake-up descriptor is what counts."""


def _exited() -> Iterator[tuple[int, int]]:
    """(pid, status) of every child that has exited, without blocking."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        yield pid, status

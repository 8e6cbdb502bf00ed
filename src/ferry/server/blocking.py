"""The blocking IO adapter around ``ServerConnection``: one connection, one call at a time.

Used by the serial, prefork, process and thread models. It reads with ``recv_into``
straight into the connection's record buffer and answers with one ``sendmsg`` of the
framed reply buffers (scatter-gather, no join); a READ's data left in its file (a
``FileSegment``) follows its header, sent with ``MSG_MORE``, by ``sendfile``: never copied.
The deadlines and what to do when they pass are the connection's (the lecture's
``alarm()``, done as the timeout of ``poll``). Every wait also watches the Stopper's wake-up
descriptor (a stop is never slept through) and, for the serial model, the listening
sockets: a connection pending there is another client waiting, and this one yields.
A connection cut off by a limit is closed abortively (RST, send queue dropped), so its
kernel buffers are freed at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Sequence

from ferry.errors import RecordError
from ferry.rpc.dispatch import TCP_SENDFILE, Address, Dispatcher
from ferry.segment import FileSegment, Part, SegmentShrank, close_segments
from ferry.server.accounting import cut_off
from ferry.server.connection import Limits, ServerConnection, Timeout
from ferry.server.metrics import NO_METRICS, Metrics
from ferry.server.stopping import Shutdown, Stopper

__all__ = ["abort", "serve_connection"]

log = logging.getLogger("ferry.server")

_IOV_MAX = 1024  # Linux's limit on buffers per sendmsg
_MSG_MORE = getattr(socket, "MSG_MORE", 0)  # Linux: hold a header back for the data after it
_NO_SENDFILE = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)  # file system cannot: copy
LINGER_ABORT = struct.pack("ii", 1, 0)
_NOT_STOPPING = contextlib.nullcontext()


def abort(sock: socket.socket) -> None:
    """Close a connection at once with a reset, dropping what the kernel still holds for it
    (a peer that does not read must not pin our send buffers)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
    sock.close()


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
    state = ServerConnection(limits, time.monotonic(), max_in_flight=1)  # not nested below:
    conn = BlockingConnection(sock, dispatcher, state, peer, stop, waiting_room)  # thin stacks
    clean = False
    metrics.connection_opened()
    try:
        conn.run()
        clean = True
    except (Timeout, RecordError, SegmentShrank) as exc:
        cut_off(peer, exc, metrics)
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


class BlockingConnection:
    """``ServerConnection`` driven by blocking waits: one call at a time, in order."""

    def __init__(
        self,
        sock: socket.socket,
        dispatcher: Dispatcher,
        conn: ServerConnection,
        peer: Address,
        stop: Stopper | None = None,
        waiting_room: Sequence[socket.socket] = (),
    ) -> None:
        self.sock = sock
        self.dispatcher = dispatcher
        self.peer = peer
        self.stop = stop
        self.conn = conn
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
        """Serve calls until EOF (or yielding to a waiting client); raises Timeout,
        RecordError, SegmentShrank, OSError or Shutdown."""
        conn, stop = self.conn, self.stop
        while stop is None or not stop.requested:
            while (record := conn.next_call()) is not None:
                reply = self.dispatcher.handle_parts(record, self.peer, TCP_SENDFILE)
                if reply is not None:
                    with stop.waiting() if stop is not None else _NOT_STOPPING:
                        self._send(conn.send(reply))
                conn.call_done(time.monotonic())
            with stop.waiting() if stop is not None else _NOT_STOPPING:
                if not self._receive():
                    return

    def _receive(self) -> bool:
        """Receive bytes into the connection; False when it is finished (EOF, or idle while
        another client waits: closed as at EOF, its client may come back)."""
        conn = self.conn
        while True:
            why = conn.finished()
            if why is not None:
                if why == "yield":
                    log.info(
                        "closing idle connection from %s: another client is waiting", self.peer
                    )
                return False
            if not self._wait(select.POLLIN):
                continue
            try:
                n = self.sock.recv_into(conn.get_buffer())
            except BlockingIOError:
                continue
            if n == 0:
                conn.eof_received()
                return False
            conn.buffer_updated(n, time.monotonic())
            return True

    def _wait(self, events: int) -> bool:
        """Until the socket is ready for ``events`` (True), or another client is first seen
        waiting (False: the connection's deadlines change). Raises the connection's Timeout
        once its deadline passes, Shutdown when a stop is requested."""
        if events != self._events:
            self._poll.modify(self._fd, events)
            self._events = events
        conn = self.conn
        while True:
            deadline = conn.deadline()
            left = None
            if deadline is not None:
                now = time.monotonic()
                left = deadline - now
                if left <= 0:
                    if (expired := conn.expired(now)) is not None:
                        raise expired
                    left = 0.0
            ready = dict(self._poll.poll(None if left is None else left * 1000))
            if self.stop is not None and self.stop.fileno() in ready and self.stop.woken():
                raise Shutdown
            if self._fd in ready:
                return True
            if any(fd in ready for fd in self._room):
                conn.client_waiting(time.monotonic())
                for fd in self._room:
                    self._poll.unregister(fd)
                self._room = []
                return False

    def _send(self, parts: Sequence[Part]) -> None:
        """Send a framed reply: buffers with sendmsg, file segments with sendfile (the
        buffers before one go with MSG_MORE, so its header and data leave together)."""
        try:
            views: list[memoryview] = []
            for part in parts:
                if isinstance(part, FileSegment):
                    self._sendmsg(views, _MSG_MORE)
                    views = []
                    self._sendfile(part)
                elif len(part):
                    views.append(memoryview(part).cast("B"))
            self._sendmsg(views)
        finally:
            close_segments(parts)
        if self.conn.write_blocked:
            self.conn.resume_writing(time.monotonic())

    def _sendmsg(self, views: list[memoryview], flags: int = 0) -> None:
        while views:
            try:
                sent = self.sock.sendmsg(views[:_IOV_MAX], (), flags)
            except BlockingIOError:
                self._wait_writable()
                continue
            views = _advance(views, sent)

    def _sendfile(self, segment: FileSegment) -> None:
        """All of ``segment``, or SegmentShrank if the file ended first (the record, whose
        mark counted those bytes, can then only be cut off with the connection)."""
        out, pos, end = self._fd, segment.offset, segment.offset + segment.count
        while pos < end:
            try:
                sent = os.sendfile(out, segment.fd, pos, end - pos)
            except BlockingIOError:
                self._wait_writable()
                continue
            except OSError as exc:
                if pos > segment.offset or exc.errno not in _NO_SENDFILE:
                    raise
                self._sendmsg([memoryview(segment.read())])  # e.g. a FUSE file
                return
            if sent == 0:
                raise SegmentShrank(end - pos)
            pos += sent

    def _wait_writable(self) -> None:
        """The socket's send buffer is full: the send deadline runs until the reply is out."""
        self.conn.pause_writing(time.monotonic())
        while not self._wait(select.POLLOUT):
            pass


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

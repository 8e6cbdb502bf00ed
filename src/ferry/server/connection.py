"""One server connection's state and defences, sans-IO: every server model runs this object.

Like h11's ``Connection``, it never touches a socket, a thread or a clock: an IO adapter
feeds it the bytes it received (``get_buffer`` / ``buffer_updated``, or ``receive_data``),
takes complete calls out (``next_call``), frames each reply (``send``) and says when a
call is done (``call_done``); ``now`` (seconds, any monotonic clock) is passed in. The
adapter asks it whether to read (``reading``), whether to close (``finished``) and for
the next deadline (``deadline``); when that passes, ``expired(now)`` tells why the
connection must be cut off. The blocking loop (``ferry.server.blocking``) and the asyncio
protocol (``ferry.server.aio``) are short adapters around it.

The defences (``Limits``; seconds, 0 disables):

* ``idle_timeout``: no byte received and no call in progress for that long (a client that
  connects and never sends);
* ``record_timeout``: a record begun must be complete within that long while we read,
  however the bytes trickle in (slowloris). The clock stops while reading is paused (our
  slowness is not the client's) and starts again when reading resumes;
* ``send_timeout``: once the peer stops taking our replies (writing blocked), it has that
  long to take them again (a client that pipelines calls and never reads);
* ``max_in_flight``: calls taken and not yet answered; at the limit, or while writing is
  blocked, reading pauses: backpressure instead of unbounded buffering;
* ``max_record``: a record over it is refused before it is buffered (``RecordError``);
* ``waiting_grace`` (the serial model, ``client_waiting``): once another client waits, an
  idle connection finishes at once and a busy one gets this long.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ferry.rpc.record import DEFAULT_MAX_RECORD, P, RecordReader, frame
from ferry.server.config import ServerConfig

__all__ = ["Limits", "ServerConnection", "Timeout"]

_NOT_READING = " (the client does not read its replies)"
_WAITING = " (another client is waiting)"


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


class Timeout(Exception):
    """A connection overstayed one of its limits; ``kind`` is idle, record or send."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind} timeout{detail}")
        self.kind = kind


class ServerConnection:
    """The state of one RPC-over-TCP connection on the server side (see the module)."""

    __slots__ = (
        "limits",
        "max_in_flight",
        "reader",
        "in_flight",
        "write_blocked",
        "eof",
        "_active",
        "_record_since",
        "_blocked_since",
        "_waiter_since",
    )

    def __init__(self, limits: Limits, now: float, max_in_flight: int = 0) -> None:
        """``max_in_flight`` overrides the limit's (1 for a loop that answers in order)."""
        self.limits = limits
        self.max_in_flight = max_in_flight or limits.max_in_flight
        self.reader = RecordReader(limits.max_record)
        self.in_flight = 0
        self.write_blocked = False
        self.eof = False
        self._active = now  # the last byte received or call answered
        self._record_since: float | None = None  # a record is incomplete, we read, since
        self._blocked_since: float | None = None  # the peer stopped taking replies at
        self._waiter_since: float | None = None  # another client was first seen waiting at

    # -- receiving ------------------------------------------------------------------------

    def get_buffer(self) -> memoryview:
        """Where the next received bytes go (the record reader's own buffer: no copy)."""
        return self.reader.get_buffer()

    def buffer_updated(self, n: int, now: float) -> None:
        """``n`` bytes (n > 0) were written into the last ``get_buffer()``."""
        self.reader.buffer_updated(n)
        self._active = now
        self._watch_record(now)

    def receive_data(self, data: bytes | bytearray | memoryview, now: float) -> None:
        """Received ``data`` (copied in); ``b""`` means the peer closed its side (EOF)."""
        if not data:
            self.eof_received()
            return
        self.reader.receive_data(data)
        self._active = now
        self._watch_record(now)

    def eof_received(self) -> None:
        """The peer closed its side: answer what it sent, then finish."""
        self.eof = True
        self.reader.eof_received()
        self._record_since = None

    # -- calls and replies ----------------------------------------------------------------

    @property
    def reading(self) -> bool:
        """Whether the adapter should read: not at EOF, below the in-flight limit, and the
        peer takes our replies."""
        return not self.eof and self.in_flight < self.max_in_flight and not self.write_blocked

    def next_call(self) -> bytes | bytearray | None:
        """The next complete call record to dispatch, or None (none yet, or the in-flight
        limit reached, or writing blocked). RecordError for an oversized record (after the
        calls before it): the connection must then be cut off."""
        if self.in_flight >= self.max_in_flight or self.write_blocked:
            return None
        record = self.reader.next_record()
        if record is not None:
            self.in_flight += 1
            if self.in_flight >= self.max_in_flight:
                self._record_since = None  # reading pauses: the record clock stops
        return record

    def send(self, message: Sequence[P]) -> list[P]:
        """The reply ``message`` framed for the wire (record marking), to send as-is."""
        return frame(message)

    def call_done(self, now: float, count: int = 1) -> None:
        """A call taken with ``next_call`` (``count`` of them) is answered (its reply handed
        to the transport or sent) or dropped."""
        self.in_flight -= count
        self._active = now
        self._watch_record(now)

    def pause_writing(self, now: float) -> None:
        """The peer stopped taking our replies (the transport's buffer is full)."""
        if not self.write_blocked:
            self.write_blocked = True
            self._blocked_since = now
            self._record_since = None

    def resume_writing(self, now: float) -> None:
        """The peer takes our replies again."""
        if self.write_blocked:
            self.write_blocked = False
            self._blocked_since = None
            self._watch_record(now)

    def client_waiting(self, now: float) -> None:
        """Another client waits for this one to finish (the serial model): yield."""
        if self._waiter_since is None:
            self._waiter_since = now

    def finished(self) -> str | None:
        """Why the adapter should now close the connection gracefully, or None: ``"eof"``
        once the peer closed and every call is answered, ``"yield"`` when another client
        waits and this one is idle (no call in progress, no record begun)."""
        if self.in_flight or self.reader.ready:
            return None
        if self.eof:
            return "eof"
        if self._waiter_since is not None and not self.reader.incomplete:
            return "yield"
        return None

    # -- deadlines --------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When ``expired`` must next be asked (None: nothing can expire now)."""
        limits = self.limits
        when: float | None = None
        if limits.idle_timeout > 0 and self.in_flight == 0:
            when = self._active + limits.idle_timeout
        if self._record_since is not None and limits.record_timeout > 0:
            when = _earlier(when, self._record_since + limits.record_timeout)
        if self._blocked_since is not None and limits.send_timeout > 0:
            when = _earlier(when, self._blocked_since + limits.send_timeout)
        if self._waiter_since is not None and limits.waiting_grace > 0:
            when = _earlier(when, self._waiter_since + limits.waiting_grace)
        return when

    def expired(self, now: float) -> Timeout | None:
        """The limit this connection overstayed at ``now`` (cut it off abortively), or None
        (ask again at the new ``deadline()``)."""
        limits = self.limits
        if _past(self._blocked_since, limits.send_timeout, now):
            return Timeout("send", _NOT_READING)
        if _past(self._record_since, limits.record_timeout, now):
            return Timeout("record")
        if _past(self._waiter_since, limits.waiting_grace, now):
            busy = "send" if self.write_blocked else "record" if self.reader.incomplete else ""
            return Timeout(busy or "idle", _WAITING)
        if self.in_flight == 0 and _past(self._active, limits.idle_timeout, now):
            return Timeout("idle")
        return None

    def _watch_record(self, now: float) -> None:
        """Run the record clock while a record is incomplete and we read; else stop it."""
        if not self.reader.incomplete or not self.reading:
            self._record_since = None
        elif self._record_since is None:
            self._record_since = now


def _past(since: float | None, limit: float, now: float) -> bool:
    """Whether a clock started at ``since`` (None: not running) ran past ``limit`` (0: none)."""
    return since is not None and limit > 0 and now >= since + limit


def _earlier(a: float | None, b: float) -> float:
    return b if a is None or b < a else a

"""When a thread that must stay responsive may run a call itself: a tripwire on slow calls.

A hop to a worker thread and back costs tens of microseconds, more than a call answered
from a cache. So a call that is usually quick may run in the thread that received it: the
server's event loop (``ferry.server.inline``) or a call thread waiting on a remote store
(``ferry.backends._deadline``). The risk is a call that is slow for once (a cold inode, a
stuck disk, a store failing over): while it runs, the thread that ran it serves no one.

The tripwire bounds that risk to one call at a time. Each call run this way is bracketed
by ``begin``/``end`` (or, for the one thread that runs calls one after another, the event
loop, timed in its *lane*: ``enter``, ``lap`` between calls, ``leave`` after the last,
which it times too: one clock read per call); once one has run longer than ``trip``
seconds (seen when it ends, or by a watcher thread four times a second while it still
runs), the tripwire is *tripped*:
``clear()`` answers False and callers send their calls to worker threads until no watched
call has been slow for ``quiet`` seconds. Calls sent to the workers meanwhile may be
watched too, with a longer limit of their own (a worker also waits for the GIL and its
turn, which is no sign of a slow store), so a call stuck there keeps the wire tripped.

Layer: runtime, like ``ferry.workpool``; imports nothing of Ferry.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time

log = logging.getLogger("ferry.tripwire")

WATCH_EVERY = 0.25
"""Seconds between the watcher's looks at the calls still running."""


class Tripwire:
    """Trips when a watched call runs longer than ``trip`` seconds; clear again once none
    has for ``quiet`` seconds. The line logged on tripping names ``name`` and says what
    happens ``then``, at ``level`` on ``logger``."""

    def __init__(
        self,
        trip: float,
        quiet: float,
        name: str,
        *,
        then: str = "calls go to worker threads",
        logger: logging.Logger = log,
        level: int = logging.WARNING,
    ) -> None:
        self.trip, self.quiet = trip, quiet
        self.name, self.then, self.logger, self.level = name, then, logger, level
        self.until = 0.0
        """Until when (``time.monotonic``) the wire stays tripped."""
        self.trips = 0
        """How many times a slow call tripped the wire (a metric)."""
        self._running: dict[int, tuple[float, float]] = {}  # token -> (began, limit)
        self.busy_since = 0.0
        """When the lane's current call began (0: the lane is idle)."""
        self._serial = itertools.count()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._watching = False

    def clear(self) -> bool:
        """Whether calls may run in the caller's thread now (hot: one clock read)."""
        return time.monotonic() >= self.until

    def begin(self, limit: float = 0.0) -> int:
        """A watched call begins, to trip the wire if it runs longer than ``limit`` seconds
        (0: ``trip``); pass the token to ``end`` when it returns or raises."""
        if not self._watching:
            self._start_watching()
        token = next(self._serial)
        self._running[token] = (time.monotonic(), limit or self.trip)
        return token

    def end(self, token: int) -> None:
        """The call of ``token`` returned: trip the wire if it was slow."""
        began, limit = self._running.pop(token)
        now = time.monotonic()
        if now - began > limit:
            self._tripped(now, now - began)

    def enter(self) -> float:
        """The lane's thread starts running calls: returns now, when its first began."""
        if not self._watching:
            self._start_watching()
        self.busy_since = now = time.monotonic()
        return now

    def lap(self, began: float) -> float:
        """The lane's call begun at ``began`` returned: trip the wire if it was slow;
        returns now, when the next one begins."""
        now = time.monotonic()
        if now - began > self.trip:
            self._tripped(now, now - began)
        self.busy_since = now
        return now

    def leave(self, began: float = 0.0) -> None:
        """The lane's thread runs no more calls for now; ``began``, if given: when its last
        call began, to trip the wire if it was slow (``lap`` and ``leave`` in one call)."""
        if began:
            now = time.monotonic()
            if now - began > self.trip:
                self._tripped(now, now - began)
        self.busy_since = 0.0

    def close(self) -> None:
        """Stop the watcher."""
        self._closed.set()

    def _tripped(self, now: float, took: float) -> None:
        if now >= self.until:
            self.trips += 1
            self.logger.log(
                self.level,
                "%s: a call has waited over %gs (%.3gs): %s until none has been slow for %gs",
                self.name, self.trip, took, self.then, self.quiet,
            )  # fmt: skip
        self.until = now + self.quiet

    def _start_watching(self) -> None:
        with self._lock:
            if self._watching:
                return
            self._watching = True
        threading.Thread(target=self._watch, name=f"{self.name}-trip", daemon=True).start()

    def _watch(self) -> None:
        """Trip the wire while a watched call runs too long (it may never return)."""
        while not self._closed.wait(WATCH_EVERY):
            now = time.monotonic()
            late = [now - began for began, limit in list(self._running.values())
                    if now - began > limit]  # fmt: skip
            since = self.busy_since
            if since and now - since > self.trip:
                late.append(now - since)
            if late:
                self._tripped(now, max(late))

"""Bounded waits on a remote store: a call that takes too long answers JUKEBOX, not a hang.

libcephfs and object-store clients can block for minutes when a daemon dies (an MDS
request waits for failover, an OSD read for recovery) and their C code cannot be
interrupted. ``Deadline.run`` therefore hands each call to worker threads and waits at
most ``timeout`` seconds; past that the NFS client gets NFS3ERR_JUKEBOX ("try again
later", RFC 1813 section 2.6) and retries, while the stuck call finishes or stays stuck
on its worker.

Two rules keep stuck calls from piling up and from holding up the rest:

* The workers are a ``WorkPool``: a store call stuck for longer than a moment no longer
  counts against the pool, so calls on other files still find a thread.
* Calls name the object they touch (``key``: a file id, and whether for data or
  metadata). While a call on an object has outlived ``timeout`` and still runs, further
  calls on that object answer JUKEBOX at once instead of joining it: a client retrying
  a READ of a file on a frozen OSD every few seconds adds no stuck thread, and a stuck
  object costs one thread per call that was waiting when it stuck, not one per retry.

A call that timed out while still queued is never started.

**Inline calls.** The hop to a worker thread and back costs more than a libcephfs call
answered from its cache (~40-50 µs against ~10 µs of CPU). Calls the caller marks
``inline`` (metadata reads: GETATTR, LOOKUP) therefore run in the caller's own thread
while the store answers promptly: not while a call has outlived ``timeout`` and still
runs, nor while the store is *suspect*: a ``Tripwire`` (``ferry.tripwire``, the same
guard the server's event loop runs its inline calls under) trips once an inline call
has run ``trip`` seconds, and every call goes through the workers (bounded) until no
inline call has been slow for ``quiet`` seconds. The inline calls already running when
the store stalled are the price: they are not bounded by ``timeout`` (their threads are
replaced, so the server goes on; their clients time out and send them again, and those
are bounded).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Hashable
from typing import TypeVar

from ferry.errors import NfsError
from ferry.tripwire import Tripwire
from ferry.vocab import Nfsstat3
from ferry.workpool import WorkPool

T = TypeVar("T")
log = logging.getLogger("ferry.backends")


class Deadline:
    """Runs calls on worker threads, each awaited for at most ``timeout`` seconds.

    ``timeout <= 0`` runs calls directly in the caller's thread (no bound, no thread hop).
    ``workers`` threads are kept free for new calls; at most ``limit`` run at once.
    """

    def __init__(
        self,
        timeout: float,
        workers: int = 16,
        name: str = "store",
        limit: int = 256,
        trip: float = 1.0,
        quiet: float = 30.0,
    ) -> None:
        self.timeout = timeout
        self._name = name
        self._pool = WorkPool(workers, limit=limit, name=name) if timeout > 0 else None
        self._stuck: dict[Hashable, int] = {}  # key -> calls past timeout, still running
        self._lock = threading.Lock()
        self._wire = Tripwire(
            trip, quiet, name, then=f"every call is bounded ({timeout:g}s)", logger=log
        )

    def run(self, fn: Callable[[], T], key: Hashable = None, inline: bool = False) -> T:
        """``fn()``'s result or exception; NfsError(JUKEBOX) if it takes longer than allowed,
        or at once while an earlier call on ``key`` is stuck. ``inline``: run it in this
        thread if the store is not suspect (see the module's docstring)."""
        pool = self._pool
        if pool is None:
            return fn()
        if inline and not self._stuck and self._wire.clear():
            token = self._wire.begin()
            try:
                return fn()
            finally:
                self._wire.end(token)
        if key is not None and self._stuck.get(key):
            raise NfsError(Nfsstat3.JUKEBOX, f"{self._name}: an earlier call on it still waits")
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()

        def job() -> None:
            if not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the waiting caller
                fut.set_exception(exc)

        pool.submit(job)
        try:
            return fut.result(self.timeout)
        except concurrent.futures.TimeoutError:
            if not fut.cancel() and key is not None:  # it runs: hold calls on key off
                self._hold(key, fut)
            raise NfsError(
                Nfsstat3.JUKEBOX, f"{self._name} did not answer within {self.timeout:g}s"
            ) from None

    def _hold(self, key: Hashable, fut: concurrent.futures.Future[T]) -> None:
        with self._lock:
            self._stuck[key] = self._stuck.get(key, 0) + 1

        def release(_: object) -> None:
            with self._lock:
                left = self._stuck.pop(key, 1) - 1
                if left:
                    self._stuck[key] = left

        fut.add_done_callback(release)

    @property
    def suspect_until(self) -> float:
        """Until when (``time.monotonic``) every call goes through the workers."""
        return self._wire.until

    @property
    def stuck(self) -> int:
        """Calls that outlived the timeout and still run."""
        with self._lock:
            return sum(self._stuck.values())

    def close(self) -> None:
        """Let idle workers exit; stuck ones stay until their call returns (they are daemons)."""
        pool, self._pool = self._pool, None  # later calls run in the caller's thread
        self._wire.close()
        if pool is not None:
            pool.shutdown(timeout=0)

"""Bounded waits on a remote store: a call that takes too long answers JUKEBOX, not a hang.

libcephfs and object-store clients can block for minutes when a daemon dies (an MDS
request waits for failover, an OSD write for recovery) and their C code cannot be
interrupted. ``Deadline.run`` therefore hands each call to a small pool of daemon threads
and waits at most ``timeout`` seconds; past that the NFS client gets NFS3ERR_JUKEBOX
("try again later", RFC 1813 section 2.6) and retries, while the stuck call finishes or
stays stuck on its worker. When every worker is stuck, calls queue and time out too.
A call that timed out while still queued is never started.

Daemon threads: a worker stuck in C must not keep the server process from exiting.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from ferry.errors import NfsError
from ferry.nfs3.const import Nfsstat3

T = TypeVar("T")
_Job = tuple[Callable[[], object], "concurrent.futures.Future[object]"] | None


class Deadline:
    """Runs calls on ``workers`` daemon threads, each awaited for at most ``timeout`` seconds.

    ``timeout <= 0`` runs calls directly in the caller's thread (no bound, no thread hop).
    """

    def __init__(self, timeout: float, workers: int = 16, name: str = "store") -> None:
        self.timeout = timeout
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        if timeout > 0:
            for i in range(workers):
                t = threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()``'s result or exception; NfsError(JUKEBOX) if it takes longer than allowed."""
        if not self._threads:
            return fn()
        fut: concurrent.futures.Future[object] = concurrent.futures.Future()
        self._jobs.put((fn, fut))
        try:
            return fut.result(self.timeout)  # type: ignore[return-value]
        except concurrent.futures.TimeoutError:
            fut.cancel()  # still queued: never start it
            raise NfsError(
                Nfsstat3.JUKEBOX, f"{self._name} did not answer within {self.timeout:g}s"
            ) from None

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, fut = job
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn())
            except BaseException as exc:  # handed to the waiting caller
                fut.set_exception(exc)

    def close(self) -> None:
        """Let idle workers exit; stuck ones stay until their call returns (they are daemons)."""
        for _ in self._threads:
            self._jobs.put(None)
        self._threads = []

"""Worker threads that do not let blocked jobs starve the others.

A server's calls run on a fixed number of threads; when a store stops answering, the calls
waiting on it hold their threads, and every other call (a MOUNT, a GETATTR served from
cache, a READ of another file) queues behind them. ``WorkPool`` keeps ``size`` threads
free to take new jobs: a job that has run longer than ``stall`` seconds while others wait
in the queue no longer counts against the pool, and a new thread takes its place (up to
``limit`` threads in all). The thread of the stuck job exits when the job returns. This
is what the Go runtime does for a goroutine blocked in a system call (its processor is
handed to another thread), and what lets NFS servers with a thread per call (knfsd,
NFS-Ganesha) survive a hung export only if they were started with many threads.

The fast path is one ``SimpleQueue`` put and get per job. A watcher thread runs only
while jobs wait for a thread: it looks every ``stall / 4`` seconds for stuck jobs.
Threads are daemons: a thread stuck in C must not keep the process from exiting.

Layer: runtime, shared by the server (``server.aio``) and the backends
(``backends._deadline``), hence at the top of the package; imports nothing of Ferry.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable

log = logging.getLogger("ferry.workpool")

Job = Callable[[], object]


class _Worker:
    """One thread's state: when its current job started (0: idle), whether it was replaced."""

    __slots__ = ("started", "replaced", "thread")

    def __init__(self) -> None:
        self.started = 0.0
        self.replaced = False
        self.thread: threading.Thread | None = None


class WorkPool:
    """``size`` threads always free for new jobs, up to ``limit`` threads when jobs block."""

    def __init__(
        self, size: int, *, limit: int | None = None, stall: float = 0.5, name: str = "worker"
    ) -> None:
        if size < 1:
            raise ValueError("a work pool needs at least one thread")
        self.size = size
        self.limit = max(size, limit if limit is not None else 8 * size)
        self.stall = stall
        self.name = name
        self.replaced = 0
        """Threads started in place of stuck ones so far (a metric)."""
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._idle = 0  # threads waiting for a job (changed under the lock)
        self._serial = itertools.count()
        self._backlog = threading.Event()
        self._closed = False
        with self._lock:
            for _ in range(size):
                self._start_worker()
        threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True).start()

    @property
    def threads(self) -> int:
        """Threads running now (free, busy or stuck)."""
        return len(self._workers)

    def submit(self, job: Job) -> None:
        """Run ``job()`` on a worker thread; its exceptions are logged, never raised."""
        self._jobs.put(job)
        if not self._idle:  # no thread free to take it: have the watcher look
            self._backlog.set()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let the threads finish their jobs and exit; wait at most ``timeout`` seconds (a
        thread stuck in a job stays behind, as a daemon)."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
        self._backlog.set()
        for _ in workers:
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for w in workers:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join(max(0.0, deadline - time.monotonic()))

    # -- threads ---------------------------------------------------------------------------

    def _start_worker(self) -> None:
        """Start one worker thread (the caller holds the lock)."""
        w = _Worker()
        name = f"{self.name}-{next(self._serial)}"
        w.thread = threading.Thread(target=self._run, args=(w,), name=name, daemon=True)
        self._workers.append(w)
        self._idle += 1
        w.thread.start()

    def _run(self, w: _Worker) -> None:
        jobs, lock = self._jobs, self._lock
        try:
            while (job := jobs.get()) is not None:
                with lock:
                    self._idle -= 1
                    if not self._idle and jobs.qsize():  # the last free thread is taken
                        self._backlog.set()
                w.started = time.monotonic()
                try:
                    job()
                except BaseException:  # a job's own errors are its business; keep the thread
                    log.exception("%s: job failed", self.name)
                del job  # not kept while idle: a call's record is freed (or reused) at once
                w.started = 0.0
                if w.replaced:  # another thread took our place while we were stuck
                    with lock:
                        self._workers.remove(w)
                    return
                with lock:
                    self._idle += 1
        except BaseException:
            log.exception("%s: worker crashed", self.name)
        with lock:
            if w in self._workers:
                self._workers.remove(w)
                self._idle -= 1

    def _watch(self) -> None:
        """While jobs wait for a thread, replace the threads whose jobs are stuck."""
        while True:
            self._backlog.wait()
            if self._closed:
                return
            self._backlog.clear()
            while self._jobs.qsize() and not self._closed:
                self._replace_stuck()
                time.sleep(self.stall / 4)

    def _replace_stuck(self) -> None:
        now = time.monotonic()
        with self._lock:
            for w in list(self._workers):
                if len(self._workers) >= self.limit:
                    return
                if w.started and not w.replaced and now - w.started > self.stall:
                    w.replaced = True
                    self.replaced += 1
                    self._start_worker()

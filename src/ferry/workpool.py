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

The fast path hands a job straight to one parked thread: each idle thread waits on a
lock of its own, the last one parked is woken first (its stack and caches are warm), and
only it wakes. (A ``SimpleQueue`` that all idle threads wait on wakes a second one with
every job, which goes back to sleep: with 8 threads that doubled the CPU of a hand-off
and its reply, 7 -> 15-33 µs.) Jobs that find no parked thread wait in a queue that a
thread looks at before it parks. A watcher thread runs only while jobs wait there: it
looks every ``stall / 4`` seconds for stuck jobs.
Threads are daemons: a thread stuck in C must not keep the process from exiting.

Layer: runtime, shared by the server (``server.aio``) and the backends
(``backends._deadline``), hence at the top of the package; imports nothing of Ferry.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("ferry.workpool")

Job = Callable[[], object]


class _Worker:
    """One thread's state: its next job and the lock it parks on while it has none, when
    its current job started (0: idle), whether it was replaced."""

    __slots__ = ("job", "wake", "started", "replaced", "thread")

    def __init__(self) -> None:
        self.job: Job | None = None
        self.wake = threading.Lock()
        self.wake.acquire()  # held while parked: ``submit`` releases it with a job
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
        self._jobs: collections.deque[Job] = collections.deque()  # jobs no thread took yet
        self._parked: list[_Worker] = []  # idle threads, the last parked on top
        self._lock = threading.Lock()  # guards both, and the list of workers
        self._workers: list[_Worker] = []
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
        with self._lock:
            if self._parked:
                w = self._parked.pop()
                w.job = job
            else:  # every thread busy: the first to finish takes it, or the watcher looks
                self._jobs.append(job)
                self._backlog.set()
                return
        w.wake.release()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Let the threads finish their jobs (queued ones included) and exit; wait at most
        ``timeout`` seconds (a thread stuck in a job stays behind, as a daemon)."""
        with self._lock:
            self._closed = True
            workers = list(self._workers)
            parked, self._parked = self._parked, []
        self._backlog.set()
        for w in parked:
            w.wake.release()  # no job: it exits
        deadline = time.monotonic() + timeout
        for w in workers:
            if w.thread is not None and w.thread is not threading.current_thread():
                w.thread.join(max(0.0, deadline - time.monotonic()))

    # -- threads ---------------------------------------------------------------------------

    def _start_worker(self) -> None:
        """Start one worker thread (the caller holds the lock); it first takes a queued job
        or parks."""
        w = _Worker()
        name = f"{self.name}-{next(self._serial)}"
        w.thread = threading.Thread(target=self._run, args=(w,), name=name, daemon=True)
        self._workers.append(w)
        w.thread.start()

    def _run(self, w: _Worker) -> None:
        try:
            while (job := self._next(w)) is not None:
                w.started = time.monotonic()
                try:
                    job()
                except BaseException:  # a job's own errors are its business; keep the thread
                    log.exception("%s: job failed", self.name)
                del job  # not kept while idle: a call's record is freed (or reused) at once
                w.started = 0.0
        except BaseException:
            log.exception("%s: worker crashed", self.name)
        with self._lock:
            if w in self._workers:
                self._workers.remove(w)
            if w in self._parked:
                self._parked.remove(w)

    def _next(self, w: _Worker) -> Job | None:
        """The thread's next job: a queued one, else one handed to it while parked; None
        when it should exit (the pool shut down, or another thread took its place while
        it was stuck)."""
        with self._lock:
            if w.replaced:
                return None
            if self._jobs:
                return self._jobs.popleft()
            if self._closed:
                return None
            self._parked.append(w)
        w.wake.acquire()
        job, w.job = w.job, None
        return job

    def _watch(self) -> None:
        """While jobs wait for a thread, replace the threads whose jobs are stuck."""
        while True:
            self._backlog.wait()
            if self._closed:
                return
            self._backlog.clear()
            while self._jobs and not self._closed:
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

"""Worker processes: fork one, reap the dead, supervise a fixed number (restarting any that
dies, never faster than once a second per slot), terminate them all on shutdown.

Used by the prefork model, the async model with ``--workers N`` and the process model.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType

from ferry.server.stopping import Shutdown, Stopper

__all__ = ["die_with_parent", "fork_child", "reap", "supervise", "terminate", "usable_cpus"]

log = logging.getLogger("ferry.server")

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask: ``taskset``, cpusets), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity call on this platform
        return os.cpu_count() or 1


def fork_child(body: Callable[[], None], what: str = "worker") -> int:
    """Fork; the child runs ``body`` and exits (never returning), the parent gets its pid
    (``what``: the child, as a crash is logged).

    The child dies with its parent (``die_with_parent``): a server whose supervising
    process was killed must not leave workers serving unsupervised on its port."""
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        die_with_parent(parent)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        body()
    except BaseException:
        log.exception("%s %d crashed", what, os.getpid())
        code = 1
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise AssertionError("unreachable")  # pragma: no cover


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` (the thread that forked it)
    ends (Linux ``PR_SET_PDEATHSIG``), or exit now if it already has. Elsewhere, nothing:
    the parent's own shutdown still stops its children."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG): %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != parent:  # it died before the prctl: nobody would signal us
        os._exit(1)


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


def supervise(
    count: int,
    worker: Callable[[int], None],
    stop: Stopper,
    exited: Callable[[int], object] = lambda pid: None,
) -> None:
    """Run ``count`` forked copies of ``worker``, restarting any that dies, until shutdown.

    Each gets its slot number (0 to count - 1); a restarted worker gets the slot of the one
    it replaces, so it can take over per-slot resources such as its UDP sockets.
    ``exited(pid)`` runs for each worker that is gone (died, or stopped at shutdown), before
    its replacement starts: e.g. to drop its live gauges from the metrics."""
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
                    exited(pid)
                    log.warning("worker %d exited (status %#x); restarting it", pid, status)
                    while (left := started + 1.0 - time.monotonic()) > 0:
                        with stop.waiting():  # a worker that dies at once must not fork-bomb
                            stop.sleep(left)
                    start(slot)
    finally:
        signal.signal(signal.SIGCHLD, previous)
        terminate(set(slots))
        for pid in slots:
            exited(pid)


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

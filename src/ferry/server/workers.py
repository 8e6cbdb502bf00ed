"""Worker processes: fork one, reap the dead, supervise a fixed number (restarting any that
dies, never faster than once a second per slot), terminate them all on shutdown.

Used by the prefork model, the async model with ``--workers N`` and the process model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from types import FrameType

from ferry.server.stopping import Shutdown, Stopper

__all__ = ["fork_child", "reap", "supervise", "terminate"]

log = logging.getLogger("ferry.server")


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

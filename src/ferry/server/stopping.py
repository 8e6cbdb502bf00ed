"""Graceful shutdown for every server model: SIGTERM or SIGINT *requests* a stop, and every
blocking wait (accept, recv, send, waitpid) wakes for it, never sleeping through one.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
from collections.abc import Iterator
from types import FrameType
from typing import ClassVar

__all__ = ["Shutdown", "Stopper", "defer_signals", "stop_requested_early", "wait_for_stop"]


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


def wait_for_stop(stop: Stopper) -> None:
    """Block until SIGTERM or SIGINT (for a process whose work happens in threads)."""
    with contextlib.suppress(Shutdown):
        while not stop.requested:
            with stop.waiting():
                stop.sleep(None)

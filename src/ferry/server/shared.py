"""State shared by the worker processes of one server run.

The MOUNT table behind DUMP is a small JSON file in the state directory, read and
rewritten whole under an ``flock`` (shared for reading, exclusive for changes). MNT and
UMNT are rare (once per client mount), so a file and a lock beat a manager process: no
extra process to supervise, nothing to reconnect after a worker restart, and the lock
dies with the process holding it. The parent truncates the file when the server starts,
so DUMP reports the mounts of this run, like the in-memory table of a single process.

The other shared state needs no mechanism here: handle keys are a file in the state
directory written before any fork; file ids come from the backend (the local backend's
SQLite map is opened per process, WAL mode lets them share it); the write verifier is
made once in the parent and handed to every worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

Entries = list[tuple[str, str]]


class FileMountTable:
    """A ``MountRegistry`` every process of one server sees the same way."""

    def __init__(self, path: Path, reset: bool = False) -> None:
        self.path = path
        if reset:
            with self._locked(fcntl.LOCK_EX) as fd:
                os.ftruncate(fd, 0)

    def add(self, host: str, path: str) -> None:
        self._change(lambda e: e if (host, path) in e else [*e, (host, path)])

    def remove(self, host: str, path: str) -> None:
        self._change(lambda e: [x for x in e if x != (host, path)])

    def remove_host(self, host: str) -> None:
        self._change(lambda e: [x for x in e if x[0] != host])

    def entries(self) -> Entries:
        with self._locked(fcntl.LOCK_SH) as fd:
            return _read(fd)

    def _change(self, edit: Callable[[Entries], Entries]) -> None:
        with self._locked(fcntl.LOCK_EX) as fd:
            before = _read(fd)
            after = edit(before)
            if after != before:
                data = json.dumps(after).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)

    @contextlib.contextmanager
    def _locked(self, mode: int) -> Iterator[int]:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode)
            yield fd
        finally:
            os.close(fd)  # releases the lock


def _read(fd: int) -> Entries:
    size = os.fstat(fd).st_size
    raw = os.pread(fd, size, 0) if size else b""
    try:
        items = json.loads(raw) if raw else []
    except ValueError:
        return []  # advisory data: a damaged table is an empty one
    return [(str(h), str(p)) for h, p in items]

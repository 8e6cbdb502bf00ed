"""The data path of the S3 backend: spool files for writes, read-ahead windows for reads.

An object is written whole, so NFS WRITEs (any offset, any order) land in a local spool
file holding the file's entire data; ``flush`` hands it to an upload function and drops
it. A spool that is being flushed is marked gone, and a writer that finds it so starts a
new one, so no WRITE lands in a file that is already on its way out.

A spool remembers the version of the object it started from (its ETag) and, in
``Edits``, which bytes this server wrote and which sizes it set since: when another
server stored the object meanwhile, ``Edits.replay`` puts just those changes over the
current object, so a COMMIT never brings back bytes another server replaced.

Spool files live in a directory of their own per backend instance under the spool root
(the server's state directory), locked (``flock``) while the instance lives: a server
that starts removes every directory whose lock nobody holds, i.e. what a killed server
left. Uncommitted data is not recovered: NFS clients resend it when the write verifier
changes, as after any server restart.

Reads of objects without a spool go through ``ReadAhead``: one ranged GET fetches at
least ``size`` bytes, and the following sequential READs are answered from that window.
Windows are tagged with the object's ETag, so a changed object is never served stale.
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import fcntl
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

Fill = Callable[[str], str]
"""Writes an object's current data into the spool file at the given path (or leaves it
empty, for an empty object) and returns the ETag of that version."""

_LOCK = ".lock"
_COPY = 1 << 20


@dataclasses.dataclass
class _Writes:
    """Disjoint written ranges [start, end), sorted."""

    starts: list[int] = dataclasses.field(default_factory=list)
    ends: list[int] = dataclasses.field(default_factory=list)

    def add(self, start: int, end: int) -> None:
        i = bisect.bisect_left(self.ends, start)  # the first range that ends at or after start
        j = bisect.bisect_right(self.starts, end)  # past the last that starts by end
        if i < j:
            start, end = min(start, self.starts[i]), max(end, self.ends[j - 1])
        self.starts[i:j], self.ends[i:j] = [start], [end]


class Edits:
    """What this server changed in a spool, in order: written ranges (merged while no size
    change comes between them) and size changes."""

    def __init__(self) -> None:
        self.steps: list[_Writes | int] = []

    def write(self, offset: int, length: int) -> None:
        if length <= 0:
            return
        if not self.steps or not isinstance(self.steps[-1], _Writes):
            self.steps.append(_Writes())
        last = self.steps[-1]
        assert isinstance(last, _Writes)
        last.add(offset, offset + length)

    def resize(self, size: int) -> None:
        self.steps.append(size)

    def replay(self, spool: str, target: str) -> None:
        """Make the file ``target`` (another version of the object) take these changes,
        copying the written bytes from ``spool``."""
        src, dst = os.open(spool, os.O_RDONLY), os.open(target, os.O_RDWR)
        try:
            size = os.fstat(src).st_size
            for step in self.steps:
                if isinstance(step, int):
                    os.ftruncate(dst, step)
                    continue
                for start, end in zip(step.starts, step.ends, strict=True):
                    for off in range(start, min(end, size), _COPY):
                        os.pwrite(dst, os.pread(src, min(_COPY, min(end, size) - off), off), off)
        finally:
            os.close(src)
            os.close(dst)


@dataclasses.dataclass
class Spool:
    path: str
    base: str
    """ETag of the object version the spool started from."""
    size: int
    mtime_ns: int = 0
    dirty: bool = False
    gone: bool = False
    edits: Edits = dataclasses.field(default_factory=Edits)
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class Spools:
    """Spool files by file id, in a directory of this instance's own under ``root``."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.removed = remove_abandoned(self.root)
        self._dir, self._lock_fd = _own_directory(self.root)
        self._items: dict[int, Spool] = {}
        self._lock = threading.Lock()

    @property
    def directory(self) -> str:
        return self._dir

    def __contains__(self, fid: int) -> bool:
        return fid in self._items

    def get(self, fid: int) -> Spool | None:
        return self._items.get(fid)

    def fids(self) -> list[int]:
        return list(self._items)

    def scratch(self) -> str:
        """A new empty file next to the spools (for a merge); the caller removes it."""
        fd, path = tempfile.mkstemp(prefix="merge-", dir=self._dir)
        os.close(fd)
        return path

    def _open(self, fid: int, fill: Fill) -> Spool:
        spool = self._items.get(fid)
        if spool is not None:
            return spool
        fd, path = tempfile.mkstemp(prefix="spool-", dir=self._dir)
        os.close(fd)
        try:
            base = fill(path)
        except BaseException:
            os.unlink(path)
            raise
        with self._lock:
            spool = self._items.get(fid)
            if spool is not None:  # another thread made one meanwhile
                os.unlink(path)
                return spool
            spool = self._items[fid] = Spool(path, base, os.path.getsize(path))
        return spool

    def write(self, fid: int, fill: Fill, offset: int, data: memoryview) -> None:
        """Write ``data`` at ``offset`` into the spool of ``fid`` (made from ``fill``)."""

        def edit(fd: int, spool: Spool) -> int:
            os.pwrite(fd, data, offset)
            spool.edits.write(offset, len(data))
            return max(spool.size, offset + len(data)) if len(data) else spool.size

        self._change(fid, fill, edit)

    def resize(self, fid: int, fill: Fill, size: int) -> None:
        def edit(fd: int, spool: Spool) -> int:
            os.ftruncate(fd, size)
            spool.edits.resize(size)
            return size

        self._change(fid, fill, edit)

    def _change(self, fid: int, fill: Fill, edit: Callable[[int, Spool], int]) -> None:
        for _ in range(100):
            spool = self._open(fid, fill)
            with spool.lock:
                if spool.gone:
                    continue  # flushed meanwhile: start a new spool
                fd = os.open(spool.path, os.O_RDWR)
                try:
                    spool.size = edit(fd, spool)
                finally:
                    os.close(fd)
                spool.mtime_ns, spool.dirty = time.time_ns(), True
                return
        raise OSError("spool kept being flushed under a writer")

    def read(self, fid: int, offset: int, count: int) -> tuple[bytes, int] | None:
        """(data, file size) from the spool of ``fid``; None if it has none."""
        spool = self._items.get(fid)
        if spool is None:
            return None
        with spool.lock:
            if spool.gone:
                return None
            with open(spool.path, "rb") as f:
                return os.pread(f.fileno(), count, offset), spool.size

    def flush(self, fid: int, upload: Callable[[Spool], str]) -> tuple[int, str] | None:
        """Upload the spool of ``fid`` if it holds unsaved data (``upload`` returns the new
        ETag), then drop it; returns (time of its last change, ETag) if it was uploaded.
        If ``upload`` raises, the spool stays for the next try."""
        spool = self._items.get(fid)
        if spool is None:
            return None
        with spool.lock:
            if spool.gone:
                return None
            etag = upload(spool) if spool.dirty else None
            self._retire(fid, spool)
            return (spool.mtime_ns, etag) if etag is not None else None

    def drop(self, fid: int) -> None:
        """Forget the spool of ``fid`` (its file was removed or replaced)."""
        spool = self._items.get(fid)
        if spool is not None:
            with spool.lock:
                self._retire(fid, spool)

    def _retire(self, fid: int, spool: Spool) -> None:
        spool.gone = True
        with self._lock:
            if self._items.get(fid) is spool:
                del self._items[fid]
        with contextlib.suppress(OSError):
            os.unlink(spool.path)

    def close(self) -> None:
        """Drop every spool and this instance's directory."""
        for fid in self.fids():
            self.drop(fid)
        shutil.rmtree(self._dir, ignore_errors=True)
        os.close(self._lock_fd)


def _own_directory(root: Path) -> tuple[str, int]:
    """A new directory under ``root`` with its lock file held; (path, lock descriptor)."""
    for _ in range(10):
        path = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=root)
        fd = os.open(os.path.join(path, _LOCK), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(OSError):  # not removed by a starting server meanwhile
            if os.stat(os.path.join(path, _LOCK)).st_ino == os.fstat(fd).st_ino:
                return path, fd
        os.close(fd)
    raise OSError(f"cannot make a spool directory in {root}")


def remove_abandoned(root: Path) -> list[str]:
    """Remove the spool directories under ``root`` whose owner is gone (nobody holds their
    lock); returns their paths."""
    removed = []
    for sub in root.iterdir():
        try:
            fd = os.open(sub / _LOCK, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # not a spool directory, or one still being made
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # its server runs
        else:
            shutil.rmtree(sub, ignore_errors=True)
            removed.append(str(sub))
        finally:
            os.close(fd)
    return removed


class ReadAhead:
    """The last window read of up to ``windows`` files, ``size`` bytes or more each."""

    def __init__(self, size: int, windows: int = 32) -> None:
        self._size = size
        self._max = windows
        self._items: OrderedDict[int, tuple[str, int, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def read(
        self, fid: int, etag: str, offset: int, count: int, end: int,
        fetch: Callable[[int, int], bytes],
    ) -> bytes:  # fmt: skip
        """``count`` bytes at ``offset`` (of an object of ``end`` bytes), from the window
        if it holds them, else from ``fetch(start, stop)`` of a new window."""
        with self._lock:
            window = self._items.get(fid)
        if window is not None and window[0] == etag:
            start, held = window[1], window[2]
            if start <= offset and offset + count <= start + len(held):
                return held[offset - start : offset - start + count]
        data = fetch(offset, min(end, offset + max(count, self._size)))
        with self._lock:
            self._items[fid] = (etag, offset, data)
            self._items.move_to_end(fid)
            while len(self._items) > self._max:
                self._items.popitem(last=False)
        return data[:count]

    def drop(self, fid: int) -> None:
        with self._lock:
            self._items.pop(fid, None)

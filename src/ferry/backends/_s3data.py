"""The data path of the S3 backend: spool files for writes, read-ahead windows for reads.

An object is written whole, so NFS WRITEs (any offset, any order) land in a local spool
file holding the file's entire data; ``flush`` hands it to an upload function and drops
it. A spool that is being flushed is marked gone, and a writer that finds it so starts a
new one, so no WRITE lands in a file that is already on its way out.

Reads of objects without a spool go through ``ReadAhead``: one ranged GET fetches at
least ``size`` bytes, and the following sequential READs are answered from that window.
Windows are tagged with the object's ETag, so a changed object is never served stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

Fill = Callable[[str], None]
"""Writes an object's current data into the spool file at the given path."""


@dataclasses.dataclass
class Spool:
    path: str
    size: int
    mtime_ns: int
    dirty: bool = False
    gone: bool = False
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class Spools:
    """Spool files by file id, in ``directory`` (the system's temporary directory if None)."""

    def __init__(self, directory: str | None) -> None:
        self._dir = directory
        self._items: dict[int, Spool] = {}
        self._lock = threading.Lock()

    def __contains__(self, fid: int) -> bool:
        return fid in self._items

    def get(self, fid: int) -> Spool | None:
        return self._items.get(fid)

    def fids(self) -> list[int]:
        return list(self._items)

    def _open(self, fid: int, fill: Fill | None, mtime_ns: int) -> Spool:
        spool = self._items.get(fid)
        if spool is not None:
            return spool
        fd, path = tempfile.mkstemp(prefix="ferry-s3-", dir=self._dir)
        os.close(fd)
        try:
            if fill is not None:
                fill(path)
        except BaseException:
            os.unlink(path)
            raise
        with self._lock:
            spool = self._items.get(fid)
            if spool is not None:  # another thread made one meanwhile
                os.unlink(path)
                return spool
            spool = self._items[fid] = Spool(path, os.path.getsize(path), mtime_ns)
        return spool

    def change(
        self, fid: int, fill: Fill | None, mtime_ns: int, edit: Callable[[int], int]
    ) -> None:
        """Run ``edit(fd)`` (which returns the new size) on the spool of ``fid``, making
        it from ``fill`` first if there is none."""
        for _ in range(100):
            spool = self._open(fid, fill, mtime_ns)
            with spool.lock:
                if spool.gone:
                    continue  # flushed meanwhile: start a new spool
                fd = os.open(spool.path, os.O_RDWR)
                try:
                    spool.size = edit(fd)
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

    def flush(self, fid: int, upload: Callable[[str], None]) -> int | None:
        """Upload the spool of ``fid`` if it holds unsaved data, then drop it; returns the
        time of its last change if it was uploaded."""
        spool = self._items.get(fid)
        if spool is None:
            return None
        with spool.lock:
            if spool.gone:
                return None
            uploaded = spool.dirty
            if uploaded:
                upload(spool.path)
            self._retire(fid, spool)
            return spool.mtime_ns if uploaded else None

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

    def clear(self) -> None:
        for fid in self.fids():
            self.drop(fid)


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

"""Backends that wrap other backends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ferry.backends.base import Attr, Backend, DirEntry, FileId, FsStat, ReadOnlyBackend
from ferry.segment import FileSegment


class ReadOnly(ReadOnlyBackend):
    """Serve ``inner`` read-only: reads pass through, every change fails with ROFS.

    Refusing here rather than in each backend keeps one place (``ReadOnlyBackend``) that
    decides what counts as a modification. Closing the wrapper closes ``inner``.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name_max = inner.name_max

    def root(self) -> FileId:
        return self.inner.root()

    def getattr(self, fid: FileId) -> Attr:
        return self.inner.getattr(fid)

    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        return self.inner.lookup(dir_fid, name)

    def readdir(self, dir_fid: FileId) -> Iterable[DirEntry]:
        return self.inner.readdir(dir_fid)

    def readdir_plus(self, dir_fid: FileId) -> Iterator[DirEntry]:
        return self.inner.readdir_plus(dir_fid)

    def readlink(self, fid: FileId) -> bytes:
        return self.inner.readlink(fid)

    def read(self, fid: FileId, offset: int, count: int) -> tuple[bytes | memoryview, bool]:
        return self.inner.read(fid, offset, count)

    def read_segment(
        self, fid: FileId, offset: int, count: int
    ) -> tuple[bytes | memoryview | FileSegment, bool]:
        return self.inner.read_segment(fid, offset, count)

    def fsstat(self, fid: FileId) -> FsStat:
        return self.inner.fsstat(fid)

    def close(self) -> None:
        self.inner.close()

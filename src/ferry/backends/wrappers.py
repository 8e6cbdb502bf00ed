"""Backends that wrap other backends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from ferry.backends.base import (
    Attr,
    AttrRow,
    Backend,
    DirEntry,
    FileId,
    FsStat,
    ReadOnlyBackend,
)
from ferry.segment import FileSegment


class ReadOnly(ReadOnlyBackend):
    """Serve ``inner`` read-only: reads pass through, every change fails with ROFS.

    Refusing here rather than in each backend keeps one place (``ReadOnlyBackend``) that
    decides what counts as a modification. Every read, the ones ``Backend`` gives defaults
    for included (``readdir_plus``, ``attrs_in``, ``read_segment``), goes to ``inner``, so
    its faster overrides still serve. Closing the wrapper closes ``inner``.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name_max = inner.name_max
        self.prompt_metadata = inner.prompt_metadata
        self.nowait_reads = inner.nowait_reads
        self.prompt_writes = inner.prompt_writes

    def root(self) -> FileId:
        return self.inner.root()

    def getattr(self, fid: FileId) -> Attr:
        return self.inner.getattr(fid)

    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        return self.inner.lookup(dir_fid, name)

    def lookup_attr(self, dir_fid: FileId, name: bytes) -> Attr:
        return self.inner.lookup_attr(dir_fid, name)

    def readdir(self, dir_fid: FileId) -> Iterable[DirEntry]:
        return self.inner.readdir(dir_fid)

    def readdir_plus(self, dir_fid: FileId) -> Iterator[DirEntry]:
        return self.inner.readdir_plus(dir_fid)

    def attrs_in(self, dir_fid: FileId, entries: Sequence[DirEntry]) -> list[Attr | None]:
        return self.inner.attrs_in(dir_fid, entries)  # the inner batch, not a getattr each

    def attr_rows_in(
        self, dir_fid: FileId, entries: Sequence[DirEntry], fsid: int
    ) -> tuple[list[AttrRow | None], list[int | None]]:
        return self.inner.attr_rows_in(dir_fid, entries, fsid)

    def readlink(self, fid: FileId) -> bytes:
        return self.inner.readlink(fid)

    def read(self, fid: FileId, offset: int, count: int) -> tuple[bytes | memoryview, bool]:
        return self.inner.read(fid, offset, count)

    def read_segment(
        self, fid: FileId, offset: int, count: int
    ) -> tuple[bytes | memoryview | FileSegment, bool]:
        return self.inner.read_segment(fid, offset, count)

    def read_nowait(self, fid: FileId, offset: int, count: int) -> tuple[bytes | memoryview, bool]:
        return self.inner.read_nowait(fid, offset, count)

    def read_segment_nowait(
        self, fid: FileId, offset: int, count: int
    ) -> tuple[bytes | memoryview | FileSegment, bool]:
        return self.inner.read_segment_nowait(fid, offset, count)

    def fsstat(self, fid: FileId) -> FsStat:
        return self.inner.fsstat(fid)

    def close(self) -> None:
        self.inner.close()

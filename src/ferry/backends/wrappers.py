"""Backends that wrap other backends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ferry.backends.base import Attr, Backend, DirEntry, FileId, FsStat, SetAttr
from ferry.errors import NfsError
from ferry.nfs3.const import Ftype3, Nfsstat3, StableHow


def _rofs() -> NfsError:
    return NfsError(Nfsstat3.ROFS, "read-only export")


class ReadOnly(Backend):
    """Serve ``inner`` read-only: reads pass through, every change fails with ROFS.

    Refusing here rather than in each backend keeps one place that decides what counts
    as a modification.
    """

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name_max = inner.name_max

    # -- forwarded ------------------------------------------------------------------------

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

    def fsstat(self, fid: FileId) -> FsStat:
        return self.inner.fsstat(fid)

    def close(self) -> None:
        self.inner.close()

    # -- refused --------------------------------------------------------------------------

    def write(self, fid: FileId, offset: int, data: memoryview, stable: StableHow) -> StableHow:
        raise _rofs()

    def commit(self, fid: FileId, offset: int, count: int) -> None:
        raise _rofs()

    def create(self, dir_fid: FileId, name: bytes, attrs: SetAttr, exclusive: bool) -> FileId:
        raise _rofs()

    def mkdir(self, dir_fid: FileId, name: bytes, attrs: SetAttr) -> FileId:
        raise _rofs()

    def symlink(self, dir_fid: FileId, name: bytes, target: bytes, attrs: SetAttr) -> FileId:
        raise _rofs()

    def mknod(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, rdev: tuple[int, int]
    ) -> FileId:
        raise _rofs()

    def remove(self, dir_fid: FileId, name: bytes) -> None:
        raise _rofs()

    def rmdir(self, dir_fid: FileId, name: bytes) -> None:
        raise _rofs()

    def rename(self, from_dir: FileId, from_name: bytes, to_dir: FileId, to_name: bytes) -> None:
        raise _rofs()

    def link(self, fid: FileId, dir_fid: FileId, name: bytes) -> None:
        raise _rofs()

    def setattr(self, fid: FileId, attrs: SetAttr) -> None:
        raise _rofs()

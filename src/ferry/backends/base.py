"""The backend contract: what a storage implementation must provide to be served over NFSv3.

Written for implementers. A backend names every file by a ``FileId`` (an int that fits in
64 bits, unique and stable for the life of the file, like an inode number) and never sees
file handles, credentials checks or XDR: the NFS service turns handles into file ids, checks
permissions, and translates errors.

Rules every method follows:

* Names are ``bytes`` (NFS names are opaque). The service has already refused empty names,
  names containing ``/`` or NUL, and too-long names; it resolves ``.`` itself and ``..`` at the
  export root. ``lookup(dir, b"..")`` elsewhere must return the parent directory.
* Never follow a symbolic link while resolving a name: a symlink is returned as a file of
  type ``Ftype3.LNK``.
* Failures raise ``NfsError(Nfsstat3.X)``; an ``OSError`` is also accepted and translated by
  the service (``ENOENT`` -> ``NOENT`` and so on). A file id that no longer names a file raises
  ``NfsError(Nfsstat3.STALE)``.
* Methods may be called from several threads at once (thread server model); the ones that
  must be fast are marked *hot*.

The types a backend speaks (``Attr``, ``SetAttr``, ``FsStat``, ``DirEntry``, ``FileId``,
``Ftype3``, ``Nfsstat3``, ``StableHow``) are defined in ``ferry.vocab`` and re-exported
here, so an implementation needs only this module and ``ferry.errors.NfsError``.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence

from ferry.errors import NfsError, WouldBlock
from ferry.segment import FileSegment
from ferry.vocab import (
    S_IFMT_OF,
    SERVER_TIME,
    Attr,
    AttrRow,
    DirEntry,
    FileId,
    FsStat,
    Ftype3,
    Nfsstat3,
    SetAttr,
    StableHow,
    attr_rows,
)

__all__ = [
    "SERVER_TIME",
    "S_IFMT_OF",
    "Attr",
    "AttrRow",
    "Backend",
    "DirEntry",
    "FileId",
    "FsStat",
    "Ftype3",
    "Nfsstat3",
    "ReadOnlyBackend",
    "SetAttr",
    "StableHow",
    "not_found",
]


class Backend(abc.ABC):
    """A tree of files served over NFS. Subclass it and implement the abstract methods.

    Derived operations (``readdir_plus``, ``fsstat``, ``close``) have defaults.
    A read-only backend raises ``NfsError(Nfsstat3.ROFS)`` from every modifying method
    (or is wrapped in ``ferry.backends.wrappers.ReadOnly``).
    """

    name_max: int = 255
    """Longest name accepted, in bytes (PATHCONF name_max)."""

    nowait_reads: bool = False
    """Whether ``read_nowait`` can answer a READ from memory or the page cache without
    waiting (the local and memory backends); then the async server tries small READs on
    its event loop first."""

    prompt_writes: bool = False
    """Whether an UNSTABLE ``write`` of a few pages returns at once (it lands in memory or
    the local page cache and only a later ``commit`` waits on a disk: the local and memory
    backends). Then the async server runs small UNSTABLE WRITEs on its event loop, under
    the tripwire that sends them to the threads while one is slow (a page cache throttled
    by writeback); stable WRITEs, which sync, stay on the call threads."""

    prompt_metadata: bool = False
    """Whether ``getattr``, ``lookup``, ``readlink`` and ``fsstat`` answer at once (from
    memory or the local kernel's caches, microseconds) rather than waiting on a network.
    Then the async server runs GETATTR, LOOKUP, ACCESS and the like on its event loop,
    without the two thread hops a call thread costs (``ferry.server.inline``; a call that
    is slow for once sends them back to the threads for a while). Leave it False when
    they may wait on a remote store."""

    write_epoch: int = 0
    """Raised by one each time the backend lost writes it had acknowledged as UNSTABLE and
    not yet committed (say, its session with a remote store was cut off and made anew).
    The server's write verifier changes with it, so clients send those writes again
    (RFC 1813 section 3.3.7); a backend that never loses them leaves it at 0."""

    multiprocess_safe: bool = False
    """Whether several server processes may serve this backend at once, each with its own
    instance, and a client not tell them apart: everything acknowledged, UNSTABLE writes
    included, lives in the store, where an instance in another process sees it, and a
    ``commit`` there makes it stable (no per-process write buffer, spool or cache a COMMIT
    elsewhere would miss), and ``write_epoch`` never moves. ``ferry serve`` then uses
    several processes by default; while any export's backend leaves this False (the
    default: nothing is known about it), the default is one process."""

    # -- resolving ----------------------------------------------------------------------

    @abc.abstractmethod
    def root(self) -> FileId:
        """The file id of the exported directory."""

    @abc.abstractmethod
    def getattr(self, fid: FileId) -> Attr:
        """Attributes of ``fid`` (hot). Raise STALE if it no longer exists."""

    @abc.abstractmethod
    def lookup(self, dir_fid: FileId, name: bytes) -> FileId:
        """The file called ``name`` in directory ``dir_fid`` (hot); NOENT if absent, NOTDIR
        if ``dir_fid`` is not a directory. Symlinks are not followed."""

    def lookup_attr(self, dir_fid: FileId, name: bytes) -> Attr:
        """``getattr(lookup(dir_fid, name))``: LOOKUP answers with the file's attributes
        (hot). Override when both come from one call (a ``statx`` of the name)."""
        return self.getattr(self.lookup(dir_fid, name))

    @abc.abstractmethod
    def readdir(self, dir_fid: FileId) -> Iterable[DirEntry]:
        """Every entry of the directory except ``.`` and ``..``, in any order (hot for large
        directories). Fill ``DirEntry.attr`` if attributes are cheap to get at the same time."""

    def readdir_plus(self, dir_fid: FileId) -> Iterator[DirEntry]:
        """Like ``readdir`` but every entry carries attributes; override to batch lookups."""
        for entry in self.readdir(dir_fid):
            if entry.attr is None:
                try:
                    entry.attr = self.getattr(entry.fileid)
                except NfsError:
                    continue  # removed while listing
            yield entry

    def attrs_in(self, dir_fid: FileId, entries: Sequence[DirEntry]) -> list[Attr | None]:
        """Fresh attributes of some entries of ``dir_fid`` (one READDIRPLUS page, hot);
        ``None`` for an entry that is gone or no longer has its ``fileid``. Override to
        read them relative to one open directory."""
        out: list[Attr | None] = []
        for entry in entries:
            try:
                out.append(self.getattr(entry.fileid))
            except NfsError:
                out.append(None)
        return out

    def attr_rows_in(
        self, dir_fid: FileId, entries: Sequence[DirEntry], fsid: int
    ) -> tuple[list[AttrRow | None], list[int | None]]:
        """``attrs_in`` as ``AttrRow``s with ``fsid``, and each file's generation (None where
        the row is None): what the service asks for a READDIRPLUS page. Override (as the
        local backend does) to read attributes straight into rows, without an ``Attr`` per
        entry."""
        return attr_rows(self.attrs_in(dir_fid, entries), fsid)

    @abc.abstractmethod
    def readlink(self, fid: FileId) -> bytes:
        """The target of symlink ``fid``; INVAL if it is not a symlink."""

    # -- data ----------------------------------------------------------------------------

    @abc.abstractmethod
    def read(self, fid: FileId, offset: int, count: int) -> tuple[bytes | memoryview, bool]:
        """Up to ``count`` bytes at ``offset`` and whether the end of file was reached (hot).
        ISDIR for a directory, INVAL for other non-regular files."""

    def read_segment(
        self, fid: FileId, offset: int, count: int
    ) -> tuple[bytes | memoryview | FileSegment, bool]:
        """Like ``read``, but the data may be left in the file as a ``FileSegment`` of exactly
        the bytes the reply promises, for a transport that sends it with ``sendfile`` (hot).
        Only backends with real file descriptors override this."""
        return self.read(fid, offset, count)

    def read_nowait(self, fid: FileId, offset: int, count: int) -> tuple[bytes | memoryview, bool]:
        """Like ``read``, on the event loop: ``WouldBlock`` instead of waiting for the disk
        (hot; the default always raises it, so the READ runs on a call thread)."""
        raise WouldBlock

    def read_segment_nowait(
        self, fid: FileId, offset: int, count: int
    ) -> tuple[bytes | memoryview | FileSegment, bool]:
        """Like ``read_segment``, on the event loop, for READs bigger than a few pages: a
        segment only if the page cache holds all of it (the loop sends it with
        ``sendfile``, which would wait for the disk otherwise: ``FileSegment.cached``),
        ``WouldBlock`` instead of waiting or of a long copy (hot; the default always raises
        it, so the READ runs on a call thread)."""
        raise WouldBlock

    @abc.abstractmethod
    def write(self, fid: FileId, offset: int, data: memoryview, stable: StableHow) -> StableHow:
        """Write all of ``data`` at ``offset`` (hot). With ``DATA_SYNC``/``FILE_SYNC`` the data
        (and for FILE_SYNC the metadata) must be on stable storage before returning. Returns
        the stability actually achieved, which may be stronger than asked."""

    @abc.abstractmethod
    def commit(self, fid: FileId, offset: int, count: int) -> None:
        """Make previously written data of ``fid`` stable (``count == 0`` means to the end)."""

    # -- namespace -----------------------------------------------------------------------

    @abc.abstractmethod
    def create(self, dir_fid: FileId, name: bytes, attrs: SetAttr, exclusive: bool) -> FileId:
        """Create a regular file, applying ``attrs`` (mode, owner, size; times where the
        backend can: the exclusive create's verifier is then durable with the file).

        If the name exists: with ``exclusive`` raise EXIST; otherwise open the existing
        file (truncating it if ``attrs.size == 0``) and return it, unless it is not a
        regular file (then EXIST)."""

    @abc.abstractmethod
    def mkdir(self, dir_fid: FileId, name: bytes, attrs: SetAttr) -> FileId:
        """Create a directory; EXIST if the name is taken."""

    @abc.abstractmethod
    def symlink(self, dir_fid: FileId, name: bytes, target: bytes, attrs: SetAttr) -> FileId:
        """Create a symbolic link holding ``target`` verbatim; EXIST if the name is taken."""

    @abc.abstractmethod
    def mknod(
        self, dir_fid: FileId, name: bytes, ftype: Ftype3, attrs: SetAttr, rdev: tuple[int, int]
    ) -> FileId:
        """Create a FIFO, socket, or (service permitting) device node."""

    @abc.abstractmethod
    def remove(self, dir_fid: FileId, name: bytes) -> None:
        """Remove a non-directory; ISDIR (or EXIST per some servers) for a directory."""

    @abc.abstractmethod
    def rmdir(self, dir_fid: FileId, name: bytes) -> None:
        """Remove an empty directory; NOTEMPTY if it has entries, NOTDIR if not a directory."""

    @abc.abstractmethod
    def rename(self, from_dir: FileId, from_name: bytes, to_dir: FileId, to_name: bytes) -> None:
        """Atomically rename, replacing a compatible target (POSIX rename semantics)."""

    @abc.abstractmethod
    def link(self, fid: FileId, dir_fid: FileId, name: bytes) -> None:
        """Make a hard link to ``fid`` called ``name`` in ``dir_fid``."""

    @abc.abstractmethod
    def setattr(self, fid: FileId, attrs: SetAttr) -> None:
        """Change mode, owner, size and times as given; the service has checked permission."""

    # -- file system -------------------------------------------------------------------

    def fsstat(self, fid: FileId) -> FsStat:
        """Space and file counts; the default reports a 1 TiB file system with room to spare."""
        tib = 1 << 40
        return FsStat(tib, tib, tib, 1 << 32, 1 << 32, 1 << 32)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (called once when the server stops)."""


def not_found(name: bytes) -> NfsError:
    """The error for a missing name (a helper for implementers)."""
    return NfsError(Nfsstat3.NOENT, f"no such file: {name!r}")


def _rofs() -> NfsError:
    return NfsError(Nfsstat3.ROFS, "read-only file system")


class ReadOnlyBackend(Backend):
    """A base for backends that never change: every modifying method raises ROFS, so a
    read-only backend implements only ``root``, ``getattr``, ``lookup``, ``readdir``,
    ``readlink`` and ``read``."""

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

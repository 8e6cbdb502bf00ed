"""The shared vocabulary of Ferry: the words every layer speaks, defined once at the bottom.

File attributes (``Attr``, ``SetAttr``, ``FsStat``, ``DirEntry``, ``FileId``), the NFS file
types and statuses backends raise (``Ftype3``, ``Nfsstat3``, ``StableHow``, RFC 1813
section 2.6 and 3.3.7), the one table between file types and ``st_mode``'s ``S_IF*`` bits,
and the one map between NFS statuses and errno values.

Rule: this module imports nothing of Ferry, so that the wire codec, the protocol, the
backends, the server and the client can all use it without importing each other. The
other NFS constants live in ``ferry.nfs3.const``, which re-exports the ones defined here.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import os
import stat
from collections.abc import Sequence


class Nfsstat3(enum.IntEnum):
    """nfsstat3 (RFC 1813 section 2.6)."""

    OK = 0
    PERM = 1
    NOENT = 2
    IO = 5
    NXIO = 6
    ACCES = 13
    EXIST = 17
    XDEV = 18
    NODEV = 19
    NOTDIR = 20
    ISDIR = 21
    INVAL = 22
    FBIG = 27
    NOSPC = 28
    ROFS = 30
    MLINK = 31
    NAMETOOLONG = 63
    NOTEMPTY = 66
    DQUOT = 69
    STALE = 70
    REMOTE = 71
    BADHANDLE = 10001
    NOT_SYNC = 10002
    BAD_COOKIE = 10003
    NOTSUPP = 10004
    TOOSMALL = 10005
    SERVERFAULT = 10006
    BADTYPE = 10007
    JUKEBOX = 10008


class Ftype3(enum.IntEnum):
    """ftype3 (RFC 1813 section 2.6)."""

    REG = 1
    DIR = 2
    BLK = 3
    CHR = 4
    LNK = 5
    SOCK = 6
    FIFO = 7


class StableHow(enum.IntEnum):
    """stable_how (RFC 1813 section 3.3.7)."""

    UNSTABLE = 0
    DATA_SYNC = 1
    FILE_SYNC = 2


# -- file types and st_mode ---------------------------------------------------------------

S_IFMT_OF: dict[Ftype3, int] = {
    Ftype3.REG: stat.S_IFREG,
    Ftype3.DIR: stat.S_IFDIR,
    Ftype3.BLK: stat.S_IFBLK,
    Ftype3.CHR: stat.S_IFCHR,
    Ftype3.LNK: stat.S_IFLNK,
    Ftype3.SOCK: stat.S_IFSOCK,
    Ftype3.FIFO: stat.S_IFIFO,
}
"""The ``st_mode`` file-type bits of each NFS file type (the one table of Ferry)."""

FTYPE_OF: dict[int, Ftype3] = {ifmt: ftype for ftype, ifmt in S_IFMT_OF.items()}
"""The NFS file type of ``stat.S_IFMT(st_mode)``."""

MKNOD_TYPES = frozenset({Ftype3.CHR, Ftype3.BLK, Ftype3.SOCK, Ftype3.FIFO})
"""The file types MKNOD makes (RFC 1813 section 3.3.11); the others are BADTYPE."""


# -- attributes ----------------------------------------------------------------------------

FileId = int
"""A file's number in its backend: fits in 64 bits, unique and stable for the life of the
file, like an inode number."""

SERVER_TIME = -1
"""A ``SetAttr`` time meaning "set to the server's current time" (RFC 1813 SET_TO_SERVER_TIME)."""


@dataclasses.dataclass(slots=True)
class Attr:
    """File attributes, mirroring RFC 1813 ``fattr3``; times are nanoseconds since the epoch."""

    type: Ftype3
    mode: int  # permission bits only (0o7777)
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]  # (major, minor) for devices, (0, 0) otherwise
    fileid: FileId
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    fsid: int = 0  # the service overrides this per export
    generation: int = 0
    """Distinguishes successive files that reuse one file id (inode numbers are reused at
    once on most file systems); 32 bits, carried in file handles, 0 if unknown."""

    # ``os.stat_result``'s names, so code written for ``os.stat`` works on a remote file.
    @property
    def st_mode(self) -> int:
        return S_IFMT_OF[self.type] | self.mode

    @property
    def st_size(self) -> int:
        return self.size

    @property
    def st_mtime(self) -> float:
        return _seconds(self.mtime_ns)

    def to_stat_result(self) -> os.stat_result:
        """The attributes as ``os.stat`` returns them (st_dev is the NFS fsid, st_blocks
        the 512-byte units of ``used``); float times computed as ``os.stat`` does, so
        that they compare equal to a local ``os.stat`` of the same file."""
        fields = (
            self.st_mode, self.fileid, self.fsid, self.nlink, self.uid, self.gid, self.size,
            self.atime_ns // 10**9, self.mtime_ns // 10**9, self.ctime_ns // 10**9,
            _seconds(self.atime_ns), _seconds(self.mtime_ns), _seconds(self.ctime_ns),
            self.atime_ns, self.mtime_ns, self.ctime_ns,
            -(-self.used // 512), 4096, os.makedev(*self.rdev),
        )  # fmt: skip
        names = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns",
                 "st_ctime_ns", "st_blocks", "st_blksize", "st_rdev")  # fmt: skip
        return os.stat_result(fields[:7] + fields[7:10], dict(zip(names, fields[10:], strict=True)))


def _seconds(ns: int) -> float:
    """Nanoseconds as float seconds, rounded as CPython's ``os.stat`` rounds them."""
    sec, nsec = divmod(ns, 10**9)
    return sec + nsec * 1e-9


@dataclasses.dataclass(slots=True)
class SetAttr:
    """Attributes to change (RFC 1813 ``sattr3``); ``None`` leaves a field as it is.

    Times are nanoseconds since the epoch, or ``SERVER_TIME``.
    """

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


@dataclasses.dataclass(slots=True)
class FsStat:
    """Space and file counts of the file system holding a file (RFC 1813 FSSTAT)."""

    total_bytes: int
    free_bytes: int
    avail_bytes: int
    total_files: int
    free_files: int
    avail_files: int


AttrRow = tuple[int, ...]
"""A file's attributes as the 17 fields of RFC 1813's ``fattr3`` in its order: type, mode,
nlink, uid, gid, size, used, rdev (major, minor), fsid, fileid, then atime, mtime and ctime
as (seconds modulo 2**32, nanoseconds). What ``Backend.attr_rows_in`` gives for a
READDIRPLUS page, where making an ``Attr`` for each entry would cost more than reading it."""


def attr_row(a: Attr, fsid: int) -> AttrRow:
    """``a`` as an ``AttrRow`` with ``fsid`` (``a.fsid`` for the fattr3 of a reply)."""
    at, mt, ct = a.atime_ns, a.mtime_ns, a.ctime_ns
    return (
        a.type, a.mode & 0o7777, a.nlink, a.uid, a.gid, a.size, a.used, a.rdev[0], a.rdev[1],
        fsid, a.fileid, (at // _NS) & 0xFFFFFFFF, at % _NS, (mt // _NS) & 0xFFFFFFFF, mt % _NS,
        (ct // _NS) & 0xFFFFFFFF, ct % _NS,
    )  # fmt: skip


def attr_rows(
    attrs: Sequence[Attr | None], fsid: int
) -> tuple[list[AttrRow | None], list[int | None]]:
    """``attr_row`` of each of ``attrs`` and its generation (None for both where the
    attributes are None): a READDIRPLUS page's rows made from ``Attr``s."""
    return (
        [None if a is None else attr_row(a, fsid) for a in attrs],
        [None if a is None else a.generation for a in attrs],
    )


_NS = 1_000_000_000


@dataclasses.dataclass(slots=True)
class DirEntry:
    """One directory entry; ``attr`` may be filled when it came for free (READDIRPLUS)."""

    name: bytes
    fileid: FileId
    attr: Attr | None = None


# -- NFS status <-> errno (RFC 1813 section 2.6 lists which errno each status mirrors) ------

ERRNO_TO_NFS: dict[int, Nfsstat3] = {
    errno.EPERM: Nfsstat3.PERM,
    errno.ENOENT: Nfsstat3.NOENT,
    errno.EIO: Nfsstat3.IO,
    errno.ENXIO: Nfsstat3.NXIO,
    errno.EACCES: Nfsstat3.ACCES,
    errno.EEXIST: Nfsstat3.EXIST,
    errno.EXDEV: Nfsstat3.XDEV,
    errno.ENODEV: Nfsstat3.NODEV,
    errno.ENOTDIR: Nfsstat3.NOTDIR,
    errno.EISDIR: Nfsstat3.ISDIR,
    errno.EINVAL: Nfsstat3.INVAL,
    errno.EFBIG: Nfsstat3.FBIG,
    errno.ENOSPC: Nfsstat3.NOSPC,
    errno.EROFS: Nfsstat3.ROFS,
    errno.EMLINK: Nfsstat3.MLINK,
    errno.ENAMETOOLONG: Nfsstat3.NAMETOOLONG,
    errno.ENOTEMPTY: Nfsstat3.NOTEMPTY,
    errno.EDQUOT: Nfsstat3.DQUOT,
    errno.ESTALE: Nfsstat3.STALE,
    errno.ELOOP: Nfsstat3.INVAL,
    errno.EOPNOTSUPP: Nfsstat3.NOTSUPP,
    errno.EBADF: Nfsstat3.STALE,
    errno.EAGAIN: Nfsstat3.JUKEBOX,
}
"""OSError.errno -> the NFS status a server answers."""

NFS_TO_ERRNO: dict[Nfsstat3, int] = {v: k for k, v in reversed(list(ERRNO_TO_NFS.items()))}
NFS_TO_ERRNO.update(
    {
        Nfsstat3.STALE: errno.ESTALE,
        Nfsstat3.INVAL: errno.EINVAL,
        Nfsstat3.BADHANDLE: errno.ESTALE,
        Nfsstat3.NOTSUPP: errno.EOPNOTSUPP,
        Nfsstat3.SERVERFAULT: errno.EIO,
        Nfsstat3.JUKEBOX: errno.EAGAIN,
    }
)
"""NFS status -> the errno a client raises."""


def status_from_oserror(exc: OSError) -> Nfsstat3:
    """The NFS status for an OSError; unknown errnos become NFS3ERR_IO."""
    return ERRNO_TO_NFS.get(exc.errno or 0, Nfsstat3.IO)


def errno_from_status(status: Nfsstat3) -> int:
    """The errno a client should raise for an NFS status."""
    return NFS_TO_ERRNO.get(status, errno.EIO)

"""NFSv3 and MOUNTv3 protocol constants (RFC 1813), as IntEnums in RFC order.

``Nfsstat3``, ``Ftype3`` and ``StableHow`` are shared with the backends and the client,
so they are defined in ``ferry.vocab`` and re-exported here."""

from __future__ import annotations

import enum

from ferry.vocab import Ftype3 as Ftype3
from ferry.vocab import Nfsstat3 as Nfsstat3
from ferry.vocab import StableHow as StableHow

NFS_PROGRAM = 100003
NFS_V3 = 3
MOUNT_PROGRAM = 100005
MOUNT_V3 = 3

NFS3_FHSIZE = 64
NFS3_COOKIEVERFSIZE = 8
NFS3_CREATEVERFSIZE = 8
NFS3_WRITEVERFSIZE = 8
MNTPATHLEN = 1024
MNTNAMLEN = 255

MAX_IO = 1 << 20
"""The one transfer size of Ferry: the largest READ or WRITE count its server offers
(FSINFO rtmax/wtmax, also the preferred size) and its client sends (1 MiB, as Linux's
server and client). Not a decode bound: see ``ferry.nfs3.types.MAX_WIRE_DATA``."""


class CreateMode(enum.IntEnum):
    """createmode3 (RFC 1813 section 3.3.8)."""

    UNCHECKED = 0
    GUARDED = 1
    EXCLUSIVE = 2


class TimeHow(enum.IntEnum):
    """time_how (RFC 1813 section 2.6)."""

    DONT_CHANGE = 0
    SET_TO_SERVER_TIME = 1
    SET_TO_CLIENT_TIME = 2


class Access(enum.IntFlag):
    """ACCESS3 bits (RFC 1813 section 3.3.4)."""

    READ = 0x0001
    LOOKUP = 0x0002
    MODIFY = 0x0004
    EXTEND = 0x0008
    DELETE = 0x0010
    EXECUTE = 0x0020


class FsProperties(enum.IntFlag):
    """FSINFO properties (RFC 1813 section 3.3.19)."""

    LINK = 0x0001
    SYMLINK = 0x0002
    HOMOGENEOUS = 0x0008
    CANSETTIME = 0x0010


class NfsProc(enum.IntEnum):
    """NFSv3 procedure numbers (RFC 1813 section 3.3)."""

    NULL = 0
    GETATTR = 1
    SETATTR = 2
    LOOKUP = 3
    ACCESS = 4
    READLINK = 5
    READ = 6
    WRITE = 7
    CREATE = 8
    MKDIR = 9
    SYMLINK = 10
    MKNOD = 11
    REMOVE = 12
    RMDIR = 13
    RENAME = 14
    LINK = 15
    READDIR = 16
    READDIRPLUS = 17
    FSSTAT = 18
    FSINFO = 19
    PATHCONF = 20
    COMMIT = 21


class MountProc(enum.IntEnum):
    """MOUNTv3 procedure numbers (RFC 1813 section 5.2)."""

    NULL = 0
    MNT = 1
    DUMP = 2
    UMNT = 3
    UMNTALL = 4
    EXPORT = 5


class Mountstat3(enum.IntEnum):
    """mountstat3 (RFC 1813 section 5.1.5)."""

    OK = 0
    PERM = 1
    NOENT = 2
    IO = 5
    ACCES = 13
    NOTDIR = 20
    INVAL = 22
    NAMETOOLONG = 63
    NOTSUPP = 10004
    SERVERFAULT = 10006

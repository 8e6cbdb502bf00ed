"""NFSv3 wire types (RFC 1813 section 2.6 and 3.3), in RFC order: codecs only, no logic.

Arguments are dataclasses decoded by ``unpack`` (server) and encoded by ``pack`` (client);
results are dataclasses encoded by ``pack`` (the ``resok`` arm; the status word and ``resfail``
arms are written by ``procedures``). The client direction of results, and of the basic types
below, is decoded in ``nfs3.results``. Names follow the RFC. File handles travel as
``bytes``; file names as ``bytes``.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable, Sequence
from typing import Self

from ferry.errors import XdrError
from ferry.nfs3.const import NFS3_FHSIZE, CreateMode, Ftype3, StableHow, TimeHow
from ferry.segment import FileSegment
from ferry.vocab import SERVER_TIME, Attr, AttrRow, DirEntry, SetAttr, attr_row
from ferry.xdr import Packer, Unpacker

MAX_NAME = 8192  # decode bound; the service enforces the real name_max
MAX_PATH = 8192
MAX_WIRE_DATA = 1 << 22
"""The largest READ/WRITE data decoded from the wire (4 MiB, what a record holds): a peer
may send more than the ``const.MAX_IO`` we offer, and is served rather than refused."""
COOKIEVERF_ZERO = b"\0" * 8

# -- basic types ----------------------------------------------------------------------------


def unpack_fh(u: Unpacker) -> bytes:
    """nfs_fh3 (RFC 1813 section 2.5): opaque data<NFS3_FHSIZE>."""
    return u.unpack_bytes(NFS3_FHSIZE)


def unpack_name(u: Unpacker) -> bytes:
    """filename3: string<> (bounded here; NAMETOOLONG is decided by the service)."""
    return u.unpack_bytes(MAX_NAME)


def unpack_time_ns(u: Unpacker) -> int:
    """nfstime3 -> nanoseconds."""
    seconds, nseconds = u.unpack_uint(), u.unpack_uint()
    return seconds * 1_000_000_000 + min(nseconds, 999_999_999)


def pack_fh(p: Packer, fh: bytes) -> None:
    p.pack_opaque(fh)


def pack_time_ns(p: Packer, ns: int) -> None:
    seconds, nseconds = divmod(ns, 1_000_000_000)
    p.pack_uint(seconds & 0xFFFFFFFF)
    p.pack_uint(nseconds)


FATTR3 = struct.Struct(">5I2Q2I2Q6I")
"""fattr3 (RFC 1813 section 2.6): type, mode, nlink, uid, gid, size, used, rdev, fsid,
fileid, atime, mtime, ctime; both directions use it."""
_POST_OP_FATTR3 = struct.Struct(">6I2Q2I2Q6I")  # attributes_follow = TRUE, then fattr3
_ENTRY_HEAD = struct.Struct(">IQI")  # value_follows, fileid, name length
_COOKIE = struct.Struct(">Q")
_FH_HEAD = struct.Struct(">II")  # handle_follows, handle length
_FALSE = b"\0\0\0\0"
_WRITE_FIXED = struct.Struct(">QIiI")  # WRITE3args after the handle: offset, count, stable, len
_STABLE = tuple(StableHow)  # by value: UNSTABLE, DATA_SYNC, FILE_SYNC
_PAD = (b"", b"\0\0\0", b"\0\0", b"\0")


def pack_fattr3(p: Packer, a: Attr) -> None:
    """fattr3, packed in one struct call: it is in every reply."""
    p.pack_struct(FATTR3, *attr_row(a, a.fsid))


def pack_post_op_attr(p: Packer, a: Attr | None) -> None:
    if a is None:
        p.pack_bool(False)
    else:
        p.pack_struct(_POST_OP_FATTR3, 1, *attr_row(a, a.fsid))


@dataclasses.dataclass(slots=True, frozen=True)
class WccAttr:
    """wcc_attr: what a client learns of a file before a change (RFC 1813 section 2.6)."""

    size: int
    mtime_ns: int
    ctime_ns: int


def pack_pre_op_attr(p: Packer, a: Attr | WccAttr | None) -> None:
    """pre_op_attr: wcc_attr (size, mtime, ctime) if known."""
    if a is None:
        p.pack_bool(False)
        return
    p.pack_bool(True)
    p.pack_uhyper(a.size)
    pack_time_ns(p, a.mtime_ns)
    pack_time_ns(p, a.ctime_ns)


@dataclasses.dataclass(slots=True)
class Wcc:
    """wcc_data: attributes before and after a change (RFC 1813 section 2.6)."""

    before: Attr | WccAttr | None = None
    after: Attr | None = None

    def pack(self, p: Packer) -> None:
        pack_pre_op_attr(p, self.before)
        pack_post_op_attr(p, self.after)


def pack_post_op_fh(p: Packer, fh: bytes | None) -> None:
    p.pack_optional(fh, p.pack_opaque)


def unpack_set_time(u: Unpacker) -> int | None:
    how = u.unpack_enum()
    if how == TimeHow.DONT_CHANGE:
        return None
    if how == TimeHow.SET_TO_SERVER_TIME:
        return SERVER_TIME
    if how == TimeHow.SET_TO_CLIENT_TIME:
        return unpack_time_ns(u)
    raise XdrError(f"bad time_how {how}")


def unpack_sattr3(u: Unpacker) -> SetAttr:
    """sattr3: each field an optional (set_it bool + value)."""
    mode = u.unpack_uint() if u.unpack_bool() else None
    uid = u.unpack_uint() if u.unpack_bool() else None
    gid = u.unpack_uint() if u.unpack_bool() else None
    size = u.unpack_uhyper() if u.unpack_bool() else None
    atime = unpack_set_time(u)
    mtime = unpack_set_time(u)
    return SetAttr(mode, uid, gid, size, atime, mtime)


def pack_sattr3(p: Packer, s: SetAttr) -> None:
    for v in (s.mode, s.uid, s.gid):
        p.pack_optional(v, p.pack_uint)
    p.pack_optional(s.size, p.pack_uhyper)
    for t in (s.atime_ns, s.mtime_ns):
        if t is None:
            p.pack_enum(TimeHow.DONT_CHANGE)
        elif t == SERVER_TIME:
            p.pack_enum(TimeHow.SET_TO_SERVER_TIME)
        else:
            p.pack_enum(TimeHow.SET_TO_CLIENT_TIME)
            pack_time_ns(p, t)


@dataclasses.dataclass(slots=True, frozen=True)
class DirOpArgs:
    """diropargs3: a directory handle and a name in it."""

    dir: bytes
    name: bytes

    @classmethod
    def unpack(cls, u: Unpacker) -> DirOpArgs:
        return cls(u.unpack_bytes(NFS3_FHSIZE), u.unpack_bytes(MAX_NAME))  # fh, name

    def pack(self, p: Packer) -> None:
        p.pack_opaque(self.dir)
        p.pack_opaque(self.name)


# -- arguments, one per procedure (RFC 1813 section 3.3) ----------------------------------


@dataclasses.dataclass(slots=True)
class FhArgs:
    """Arguments that are just a handle: GETATTR, READLINK, FSSTAT, FSINFO, PATHCONF."""

    object: bytes

    @classmethod
    def unpack(cls, u: Unpacker) -> FhArgs:
        return cls(u.unpack_bytes(NFS3_FHSIZE))  # unpack_fh, inlined: GETATTR is hot

    def pack(self, p: Packer) -> None:
        p.pack_opaque(self.object)


@dataclasses.dataclass(slots=True)
class SetattrArgs:
    object: bytes
    new_attributes: SetAttr
    guard_ctime_ns: int | None  # sattrguard3

    @classmethod
    def unpack(cls, u: Unpacker) -> SetattrArgs:
        fh, attrs = unpack_fh(u), unpack_sattr3(u)
        return cls(fh, attrs, unpack_time_ns(u) if u.unpack_bool() else None)

    def pack(self, p: Packer) -> None:
        p.pack_opaque(self.object)
        pack_sattr3(p, self.new_attributes)
        p.pack_optional(self.guard_ctime_ns, lambda ns: pack_time_ns(p, ns))


@dataclasses.dataclass(slots=True)
class LookupArgs:
    what: DirOpArgs

    @classmethod
    def unpack(cls, u: Unpacker) -> LookupArgs:
        return cls(DirOpArgs.unpack(u))

    def pack(self, p: Packer) -> None:
        self.what.pack(p)


@dataclasses.dataclass(slots=True)
class AccessArgs:
    object: bytes
    access: int

    @classmethod
    def unpack(cls, u: Unpacker) -> AccessArgs:
        return cls(u.unpack_bytes(NFS3_FHSIZE), u.unpack_uint())

    def pack(self, p: Packer) -> None:
        p.pack_opaque(self.object)
        p.pack_uint(self.access)


@dataclasses.dataclass(slots=True)
class FileRange:
    """A file handle, an offset and a count: READ3args and COMMIT3args alike."""

    file: bytes
    offset: int
    count: int

    @classmethod
    def unpack(cls, u: Unpacker) -> Self:
        return cls(unpack_fh(u), u.unpack_uhyper(), u.unpack_uint())

    def pack(self, p: Packer) -> None:
        p.pack_opaque(self.file)
        p.pack_uhyper(self.offset)
        p.pack_uint(self.count)


class ReadArgs(FileRange):
    __slots__ = ()


@dataclasses.dataclass(slots=True)
class WriteArgs:
    file: bytes
    offset: int
    count: int
    stable: StableHow
    data: memoryview

    @classmethod
    def unpack(cls, u: Unpacker) -> WriteArgs:
        """The fields after the handle in one ``struct`` call: offset, count, stable_how
        and the data's length (every small WRITE of a one-at-a-time writer comes here)."""
        fh = unpack_fh(u)
        offset, count, stable, n = u.unpack_struct(_WRITE_FIXED)
        if not 0 <= stable <= 2:
            raise XdrError(f"bad stable_how {stable}")
        if n > MAX_WIRE_DATA:
            raise XdrError(f"opaque of {n} bytes exceeds limit {MAX_WIRE_DATA}")
        return cls(fh, offset, count, _STABLE[stable], u.unpack_fopaque(n))

    def pack(self, p: Packer) -> None:
        """The data goes out as its own buffer (``Packer.pack_opaque_ref``), not copied."""
        p.pack_opaque(self.file)
        p.pack_uhyper(self.offset)
        p.pack_uint(self.count)
        p.pack_enum(self.stable)
        p.pack_opaque_ref(self.data)


@dataclasses.dataclass(slots=True)
class CreateArgs:
    where: DirOpArgs
    mode: CreateMode
    obj_attributes: SetAttr
    verf: bytes  # EXCLUSIVE only

    @classmethod
    def unpack(cls, u: Unpacker) -> CreateArgs:
        where, mode = DirOpArgs.unpack(u), u.unpack_enum()
        if mode == CreateMode.EXCLUSIVE:
            return cls(where, CreateMode.EXCLUSIVE, SetAttr(), bytes(u.unpack_fopaque(8)))
        if mode not in (CreateMode.UNCHECKED, CreateMode.GUARDED):
            raise XdrError(f"bad createmode3 {mode}")
        return cls(where, CreateMode(mode), unpack_sattr3(u), b"")

    def pack(self, p: Packer) -> None:
        self.where.pack(p)
        p.pack_enum(self.mode)
        if self.mode == CreateMode.EXCLUSIVE:  # RFC 1813 section 3.3.8: createhow3 union
            p.pack_fopaque(8, self.verf)
        else:
            pack_sattr3(p, self.obj_attributes)


@dataclasses.dataclass(slots=True)
class MkdirArgs:
    where: DirOpArgs
    attributes: SetAttr

    @classmethod
    def unpack(cls, u: Unpacker) -> MkdirArgs:
        return cls(DirOpArgs.unpack(u), unpack_sattr3(u))

    def pack(self, p: Packer) -> None:
        self.where.pack(p)
        pack_sattr3(p, self.attributes)


@dataclasses.dataclass(slots=True)
class SymlinkArgs:
    where: DirOpArgs
    symlink_attributes: SetAttr
    symlink_data: bytes

    @classmethod
    def unpack(cls, u: Unpacker) -> SymlinkArgs:
        return cls(DirOpArgs.unpack(u), unpack_sattr3(u), u.unpack_bytes(MAX_PATH))

    def pack(self, p: Packer) -> None:
        self.where.pack(p)
        pack_sattr3(p, self.symlink_attributes)
        p.pack_opaque(self.symlink_data)


@dataclasses.dataclass(slots=True)
class MknodArgs:
    where: DirOpArgs
    type: Ftype3
    attributes: SetAttr
    rdev: tuple[int, int]

    @classmethod
    def unpack(cls, u: Unpacker) -> MknodArgs:
        where, ftype = DirOpArgs.unpack(u), u.unpack_enum()
        if ftype in (Ftype3.CHR, Ftype3.BLK):
            attrs = unpack_sattr3(u)
            return cls(where, Ftype3(ftype), attrs, (u.unpack_uint(), u.unpack_uint()))
        if ftype in (Ftype3.SOCK, Ftype3.FIFO):
            return cls(where, Ftype3(ftype), unpack_sattr3(u), (0, 0))
        if ftype in (Ftype3.REG, Ftype3.DIR, Ftype3.LNK):
            return cls(where, Ftype3(ftype), SetAttr(), (0, 0))  # service answers BADTYPE
        raise XdrError(f"bad ftype3 {ftype}")

    def pack(self, p: Packer) -> None:
        """mknoddata3 (RFC 1813 section 3.3.11): devices carry rdev, sockets and fifos not."""
        self.where.pack(p)
        p.pack_enum(self.type)
        if self.type in (Ftype3.CHR, Ftype3.BLK, Ftype3.SOCK, Ftype3.FIFO):
            pack_sattr3(p, self.attributes)
        if self.type in (Ftype3.CHR, Ftype3.BLK):
            p.pack_uint(self.rdev[0])
            p.pack_uint(self.rdev[1])


@dataclasses.dataclass(slots=True)
class RemoveArgs:
    """REMOVE and RMDIR."""

    object: DirOpArgs

    @classmethod
    def unpack(cls, u: Unpacker) -> RemoveArgs:
        return cls(DirOpArgs.unpack(u))

    def pack(self, p: Packer) -> None:
        self.object.pack(p)


@dataclasses.dataclass(slots=True)
class RenameArgs:
    from_: DirOpArgs
    to: DirOpArgs

    @classmethod
    def unpack(cls, u: Unpacker) -> RenameArgs:
        return cls(DirOpArgs.unpack(u), DirOpArgs.unpack(u))

    def pack(self, p: Packer) -> None:
        self.from_.pack(p)
        self.to.pack(p)


@dataclasses.dataclass(slots=True)
class LinkArgs:
    file: bytes
    link: DirOpArgs

    @classmethod
    def unpack(cls, u: Unpacker) -> LinkArgs:
        return cls(unpack_fh(u), DirOpArgs.unpack(u))

    def pack(self, p: Packer) -> None:
        p.pack_opaque(self.file)
        self.link.pack(p)


@dataclasses.dataclass(slots=True)
class ReaddirArgs:
    """READDIR (maxcount = 0) and READDIRPLUS."""

    dir: bytes
    cookie: int
    cookieverf: bytes
    dircount: int
    maxcount: int

    @classmethod
    def unpack(cls, u: Unpacker) -> ReaddirArgs:
        fh, cookie, verf, count = (
            unpack_fh(u),
            u.unpack_uhyper(),
            bytes(u.unpack_fopaque(8)),
            u.unpack_uint(),
        )
        return cls(fh, cookie, verf, count, 0)

    @classmethod
    def unpack_plus(cls, u: Unpacker) -> ReaddirArgs:
        fh, cookie, verf = unpack_fh(u), u.unpack_uhyper(), bytes(u.unpack_fopaque(8))
        return cls(fh, cookie, verf, u.unpack_uint(), u.unpack_uint())

    def pack(self, p: Packer) -> None:
        """READDIR3args: no maxcount."""
        p.pack_opaque(self.dir)
        p.pack_uhyper(self.cookie)
        p.pack_fopaque(8, self.cookieverf)
        p.pack_uint(self.dircount)

    def pack_plus(self, p: Packer) -> None:
        """READDIRPLUS3args: dircount and maxcount."""
        self.pack(p)
        p.pack_uint(self.maxcount)


class CommitArgs(FileRange):
    __slots__ = ()


# -- results (resok arms) --------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class AttrRes:
    """GETATTR3resok: just the attributes."""

    obj_attributes: Attr

    def pack(self, p: Packer) -> None:
        pack_fattr3(p, self.obj_attributes)


@dataclasses.dataclass(slots=True)
class WccRes:
    """SETATTR, REMOVE, RMDIR resok: one wcc_data."""

    wcc: Wcc

    def pack(self, p: Packer) -> None:
        self.wcc.pack(p)


@dataclasses.dataclass(slots=True)
class LookupRes:
    object: bytes
    obj_attributes: Attr | None
    dir_attributes: Attr | None

    def pack(self, p: Packer) -> None:
        p.pack_opaque(self.object)
        pack_post_op_attr(p, self.obj_attributes)
        pack_post_op_attr(p, self.dir_attributes)


@dataclasses.dataclass(slots=True)
class AccessRes:
    obj_attributes: Attr | None
    access: int

    def pack(self, p: Packer) -> None:
        pack_post_op_attr(p, self.obj_attributes)
        p.pack_uint(self.access)


@dataclasses.dataclass(slots=True)
class ReadlinkRes:
    symlink_attributes: Attr | None
    data: bytes

    def pack(self, p: Packer) -> None:
        pack_post_op_attr(p, self.symlink_attributes)
        p.pack_opaque(self.data)


@dataclasses.dataclass(slots=True)
class ReadRes:
    file_attributes: Attr | None
    count: int
    eof: bool
    data: bytes | memoryview

    def pack(self, p: Packer) -> None:
        _pack_read_head(p, self.file_attributes, self.count, self.eof)
        p.pack_opaque_ref(self.data)


@dataclasses.dataclass(slots=True)
class ReadSegmentRes:
    """READ3resok whose data is still in the file (server side, sent with ``sendfile``)."""

    file_attributes: Attr | None
    eof: bool
    data: FileSegment

    @property
    def count(self) -> int:
        return self.data.count

    def pack(self, p: Packer) -> FileSegment:
        """Everything up to the data's length; the data follows the packed results."""
        _pack_read_head(p, self.file_attributes, self.data.count, self.eof)
        p.pack_uint(self.data.count)
        return self.data


def _pack_read_head(p: Packer, attr: Attr | None, count: int, eof: bool) -> None:
    pack_post_op_attr(p, attr)
    p.pack_uint(count)
    p.pack_bool(eof)


@dataclasses.dataclass(slots=True)
class WriteRes:
    file_wcc: Wcc
    count: int
    committed: StableHow
    verf: bytes

    def pack(self, p: Packer) -> None:
        self.file_wcc.pack(p)
        p.pack_uint(self.count)
        p.pack_enum(self.committed)
        p.pack_fopaque(8, self.verf)


@dataclasses.dataclass(slots=True)
class CreateRes:
    """CREATE, MKDIR, SYMLINK, MKNOD resok."""

    obj: bytes | None
    obj_attributes: Attr | None
    dir_wcc: Wcc

    def pack(self, p: Packer) -> None:
        pack_post_op_fh(p, self.obj)
        pack_post_op_attr(p, self.obj_attributes)
        self.dir_wcc.pack(p)


@dataclasses.dataclass(slots=True)
class RenameRes:
    fromdir_wcc: Wcc
    todir_wcc: Wcc

    def pack(self, p: Packer) -> None:
        self.fromdir_wcc.pack(p)
        self.todir_wcc.pack(p)


@dataclasses.dataclass(slots=True)
class LinkRes:
    file_attributes: Attr | None
    linkdir_wcc: Wcc

    def pack(self, p: Packer) -> None:
        pack_post_op_attr(p, self.file_attributes)
        self.linkdir_wcc.pack(p)


@dataclasses.dataclass(slots=True)
class Entry:
    """entry3 / entryplus3 (handle and attributes only for READDIRPLUS)."""

    fileid: int
    name: bytes
    cookie: int
    attr: Attr | None = None
    handle: bytes | None = None


@dataclasses.dataclass(slots=True)
class ReaddirRes:
    dir_attributes: Attr | None
    cookieverf: bytes
    entries: Sequence[Entry]
    eof: bool
    plus: bool

    def pack(self, p: Packer) -> None:
        pack_post_op_attr(p, self.dir_attributes)
        p.pack_fopaque(8, self.cookieverf)
        plus = self.plus
        parts: list[bytes] = []  # hot: joined once, not appended field by field
        add = parts.append
        for e in self.entries:
            name = e.name
            add(_ENTRY_HEAD.pack(1, e.fileid, len(name)))
            add(name + _PAD[len(name) % 4])
            add(_COOKIE.pack(e.cookie))
            if plus:
                a, fh = e.attr, e.handle
                add(_FALSE if a is None else _POST_OP_FATTR3.pack(1, *attr_row(a, a.fsid)))
                add(_FALSE if fh is None else _FH_HEAD.pack(1, len(fh)) + fh + _PAD[len(fh) % 4])
        p.pack_raw(b"".join(parts))
        p.pack_bool(False)
        p.pack_bool(self.eof)


_ENTRY_STRUCTS: dict[int, struct.Struct] = {}
_PLUS_STRUCTS: dict[int, struct.Struct] = {}
_FH_SIZE = 31  # the handles Ferry makes (``filehandle.HANDLE_SIZE``): the common case
_STRUCT_NAME_MAX = 1024  # names longer than this (none on Linux) are packed ad hoc


def _entry_struct(n: int) -> struct.Struct:
    """entry3 for a name of ``n`` bytes in one layout: value_follows, fileid, the name
    (``s`` pads it with zeros), cookie."""
    found = _ENTRY_STRUCTS.get(n)
    if found is None:
        found = struct.Struct(f">IQI{(n + 3) & ~3}sQ")
        if n <= _STRUCT_NAME_MAX:
            _ENTRY_STRUCTS[n] = found
    return found


def _plus_struct(n: int) -> struct.Struct:
    """entryplus3 with attributes and a handle of ``_FH_SIZE`` bytes, in one layout."""
    found = _PLUS_STRUCTS.get(n)
    if found is None:
        found = struct.Struct(
            f">IQI{(n + 3) & ~3}sQ" + _POST_OP_FATTR3.format[1:] + f"II{(_FH_SIZE + 3) & ~3}s"
        )
        if n <= _STRUCT_NAME_MAX:
            _PLUS_STRUCTS[n] = found
    return found


@dataclasses.dataclass(slots=True)
class ReaddirPage:
    """READDIR3resok / READDIRPLUS3resok as the server sends it: a slice of a listing
    (entries and their cookies) and, for READDIRPLUS, each entry's attributes and handle
    (None where unknown). The client decodes the same bytes into ``ReaddirRes``. Hot
    (every entry of every listing): each entry is packed with one struct call."""

    dir_attributes: Attr | None
    cookieverf: bytes
    entries: Sequence[DirEntry]
    cookies: Sequence[int]
    eof: bool
    rows: Sequence[AttrRow | None] | None = None
    """READDIRPLUS: each entry's attributes (``Backend.attr_rows_in``; None: none); None
    for READDIR."""
    handles: Sequence[bytes | None] = ()

    def pack(self, p: Packer) -> None:
        pack_post_op_attr(p, self.dir_attributes)
        p.pack_fopaque(8, self.cookieverf)
        parts: list[bytes] = []  # joined once, not appended field by field
        add = parts.append
        if self.rows is not None:
            rows = zip(self.entries, self.cookies, self.rows, self.handles, strict=True)
            structs = _PLUS_STRUCTS
            for e, cookie, row, fh in rows:
                if row is None or fh is None or len(fh) != _FH_SIZE:
                    _pack_plus_row(add, e, cookie, row, fh)
                    continue
                name = e.name
                n = len(name)
                add((structs.get(n) or _plus_struct(n)).pack(
                    1, e.fileid, n, name, cookie, 1, *row, 1, _FH_SIZE, fh
                ))  # fmt: skip
        else:
            for e, cookie in zip(self.entries, self.cookies, strict=True):
                name = e.name
                add(_entry_struct(len(name)).pack(1, e.fileid, len(name), name, cookie))
        p.pack_raw(b"".join(parts))
        p.pack_bool(False)
        p.pack_bool(self.eof)


def _pack_plus_row(
    add: Callable[[bytes], None], e: DirEntry, cookie: int, row: AttrRow | None, fh: bytes | None
) -> None:
    """entryplus3 from an ``AttrRow``, without attributes or handle, or with a handle of
    another size."""
    name = e.name
    add(_entry_struct(len(name)).pack(1, e.fileid, len(name), name, cookie))
    add(_FALSE if row is None else _POST_OP_FATTR3.pack(1, *row))
    add(_FALSE if fh is None else _FH_HEAD.pack(1, len(fh)) + fh + _PAD[len(fh) % 4])


@dataclasses.dataclass(slots=True)
class FsstatRes:
    obj_attributes: Attr | None
    tbytes: int
    fbytes: int
    abytes: int
    tfiles: int
    ffiles: int
    afiles: int
    invarsec: int = 0

    def pack(self, p: Packer) -> None:
        pack_post_op_attr(p, self.obj_attributes)
        for v in (self.tbytes, self.fbytes, self.abytes, self.tfiles, self.ffiles, self.afiles):
            p.pack_uhyper(v)
        p.pack_uint(self.invarsec)


@dataclasses.dataclass(slots=True)
class FsinfoRes:
    obj_attributes: Attr | None
    rtmax: int
    rtpref: int
    rtmult: int
    wtmax: int
    wtpref: int
    wtmult: int
    dtpref: int
    maxfilesize: int
    time_delta_ns: int
    properties: int

    def pack(self, p: Packer) -> None:
        pack_post_op_attr(p, self.obj_attributes)
        for v in (
            self.rtmax,
            self.rtpref,
            self.rtmult,
            self.wtmax,
            self.wtpref,
            self.wtmult,
            self.dtpref,
        ):
            p.pack_uint(v)
        p.pack_uhyper(self.maxfilesize)
        pack_time_ns(p, self.time_delta_ns)
        p.pack_uint(self.properties)


@dataclasses.dataclass(slots=True)
class PathconfRes:
    obj_attributes: Attr | None
    linkmax: int
    name_max: int
    no_trunc: bool = True
    chown_restricted: bool = True
    case_insensitive: bool = False
    case_preserving: bool = True

    def pack(self, p: Packer) -> None:
        pack_post_op_attr(p, self.obj_attributes)
        p.pack_uint(self.linkmax)
        p.pack_uint(self.name_max)
        for v in (
            self.no_trunc,
            self.chown_restricted,
            self.case_insensitive,
            self.case_preserving,
        ):
            p.pack_bool(v)


@dataclasses.dataclass(slots=True)
class CommitRes:
    file_wcc: Wcc
    verf: bytes

    def pack(self, p: Packer) -> None:
        self.file_wcc.pack(p)
        p.pack_fopaque(8, self.verf)

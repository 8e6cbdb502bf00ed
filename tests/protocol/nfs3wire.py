"""NFSv3 argument encoders and result decoders for protocol tests (RFC 1813 section 3.3).

Arguments are built with Ferry's own ``Packer`` and the ``ferry.nfs3.types`` pack helpers;
results are decoded field by field with ``Unpacker`` into plain dataclasses, independently
of the server's result classes, so a wrong encoding on the server shows up as a decode
failure or a leftover byte here (every reply must be consumed exactly).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rawclient import RawClient

from ferry.backends.base import SetAttr
from ferry.nfs3 import types as t
from ferry.nfs3.const import NFS_PROGRAM, CreateMode, Ftype3, NfsProc, Nfsstat3, StableHow
from ferry.xdr import Packer, Unpacker

ZERO_VERF = b"\0" * 8


# -- decoded types ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Fattr:
    """fattr3, times in nanoseconds."""

    type: Ftype3
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    used: int
    rdev: tuple[int, int]
    fsid: int
    fileid: int
    atime: int
    mtime: int
    ctime: int

    def same_file_state(self, other: Fattr) -> bool:
        """Equal except for atime (which a READ may move)."""
        return dataclasses.replace(self, atime=0) == dataclasses.replace(other, atime=0)


@dataclasses.dataclass(frozen=True)
class WccAttr:
    """wcc_attr: the pre-operation size, mtime and ctime."""

    size: int
    mtime: int
    ctime: int


@dataclasses.dataclass(frozen=True)
class Wcc:
    before: WccAttr | None
    after: Fattr | None

    @property
    def complete(self) -> bool:
        return self.before is not None and self.after is not None


@dataclasses.dataclass(frozen=True)
class DirEntry:
    fileid: int
    name: bytes
    cookie: int
    attr: Fattr | None = None
    handle: bytes | None = None


@dataclasses.dataclass
class Res:
    """One procedure result: the status plus whatever the resok/resfail arm carried."""

    status: Nfsstat3
    fields: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.fields[name]
        except KeyError:
            raise AttributeError(
                f"{name} not in {self.status.name} result ({sorted(self.fields)})"
            ) from None

    @property
    def ok(self) -> bool:
        return self.status == Nfsstat3.OK


def unpack_time(u: Unpacker) -> int:
    seconds, nseconds = u.unpack_uint(), u.unpack_uint()
    assert nseconds < 1_000_000_000, f"nseconds out of range: {nseconds}"
    return seconds * 1_000_000_000 + nseconds


def unpack_fattr3(u: Unpacker) -> Fattr:
    ftype = Ftype3(u.unpack_uint())
    mode, nlink, uid, gid = u.unpack_uint(), u.unpack_uint(), u.unpack_uint(), u.unpack_uint()
    assert mode <= 0o7777, f"mode has bits beyond 07777: {mode:o}"
    size, used = u.unpack_uhyper(), u.unpack_uhyper()
    rdev = (u.unpack_uint(), u.unpack_uint())
    fsid, fileid = u.unpack_uhyper(), u.unpack_uhyper()
    atime, mtime, ctime = unpack_time(u), unpack_time(u), unpack_time(u)
    return Fattr(ftype, mode, nlink, uid, gid, size, used, rdev, fsid, fileid, atime, mtime, ctime)


def unpack_post_op_attr(u: Unpacker) -> Fattr | None:
    return unpack_fattr3(u) if u.unpack_bool() else None


def unpack_pre_op_attr(u: Unpacker) -> WccAttr | None:
    if not u.unpack_bool():
        return None
    return WccAttr(u.unpack_uhyper(), unpack_time(u), unpack_time(u))


def unpack_wcc(u: Unpacker) -> Wcc:
    return Wcc(unpack_pre_op_attr(u), unpack_post_op_attr(u))


def unpack_fh(u: Unpacker) -> bytes:
    return u.unpack_bytes(64)


def unpack_post_op_fh(u: Unpacker) -> bytes | None:
    return unpack_fh(u) if u.unpack_bool() else None


def unpack_entries(u: Unpacker, plus: bool) -> list[DirEntry]:
    out = []
    while u.unpack_bool():
        fileid, name, cookie = u.unpack_uhyper(), u.unpack_bytes(), u.unpack_uhyper()
        if plus:
            attr, handle = unpack_post_op_attr(u), unpack_post_op_fh(u)
            out.append(DirEntry(fileid, name, cookie, attr, handle))
        else:
            out.append(DirEntry(fileid, name, cookie))
    return out


# -- result decoders: (resok decoder, resfail decoder) per procedure --------------------------

Fields = dict[str, Any]


def _post(u: Unpacker, key: str = "attr") -> Fields:
    return {key: unpack_post_op_attr(u)}


def _wcc(u: Unpacker, key: str = "wcc") -> Fields:
    return {key: unpack_wcc(u)}


def _getattr_ok(u: Unpacker) -> Fields:
    return {"attr": unpack_fattr3(u)}


def _lookup_ok(u: Unpacker) -> Fields:
    return {"fh": unpack_fh(u), "attr": unpack_post_op_attr(u), "dir_attr": unpack_post_op_attr(u)}


def _lookup_fail(u: Unpacker) -> Fields:
    return {"dir_attr": unpack_post_op_attr(u)}


def _access_ok(u: Unpacker) -> Fields:
    return {"attr": unpack_post_op_attr(u), "access": u.unpack_uint()}


def _readlink_ok(u: Unpacker) -> Fields:
    return {"attr": unpack_post_op_attr(u), "data": u.unpack_bytes()}


def _read_ok(u: Unpacker) -> Fields:
    attr, count, eof = unpack_post_op_attr(u), u.unpack_uint(), u.unpack_bool()
    return {"attr": attr, "count": count, "eof": eof, "data": u.unpack_bytes()}


def _write_ok(u: Unpacker) -> Fields:
    wcc, count = unpack_wcc(u), u.unpack_uint()
    return {
        "wcc": wcc,
        "count": count,
        "committed": StableHow(u.unpack_uint()),
        "verf": bytes(u.unpack_fopaque(8)),
    }


def _create_ok(u: Unpacker) -> Fields:
    return {"fh": unpack_post_op_fh(u), "attr": unpack_post_op_attr(u), "dir_wcc": unpack_wcc(u)}


def _dir_wcc(u: Unpacker) -> Fields:
    return {"dir_wcc": unpack_wcc(u)}


def _rename(u: Unpacker) -> Fields:
    return {"from_wcc": unpack_wcc(u), "to_wcc": unpack_wcc(u)}


def _link(u: Unpacker) -> Fields:
    return {"attr": unpack_post_op_attr(u), "dir_wcc": unpack_wcc(u)}


def _readdir_ok(plus: bool) -> Any:
    def decode(u: Unpacker) -> Fields:
        attr, verf = unpack_post_op_attr(u), bytes(u.unpack_fopaque(8))
        entries = unpack_entries(u, plus)
        return {"dir_attr": attr, "verf": verf, "entries": entries, "eof": u.unpack_bool()}

    return decode


def _readdir_fail(u: Unpacker) -> Fields:
    return {"dir_attr": unpack_post_op_attr(u)}


def _fsstat_ok(u: Unpacker) -> Fields:
    attr = unpack_post_op_attr(u)
    keys = ("tbytes", "fbytes", "abytes", "tfiles", "ffiles", "afiles")
    out: Fields = {"attr": attr, **{k: u.unpack_uhyper() for k in keys}}
    out["invarsec"] = u.unpack_uint()
    return out


def _fsinfo_ok(u: Unpacker) -> Fields:
    out: Fields = {"attr": unpack_post_op_attr(u)}
    for k in ("rtmax", "rtpref", "rtmult", "wtmax", "wtpref", "wtmult", "dtpref"):
        out[k] = u.unpack_uint()
    out["maxfilesize"] = u.unpack_uhyper()
    out["time_delta"] = unpack_time(u)
    out["properties"] = u.unpack_uint()
    return out


def _pathconf_ok(u: Unpacker) -> Fields:
    out: Fields = {
        "attr": unpack_post_op_attr(u),
        "linkmax": u.unpack_uint(),
        "name_max": u.unpack_uint(),
    }
    for k in ("no_trunc", "chown_restricted", "case_insensitive", "case_preserving"):
        out[k] = u.unpack_bool()
    return out


def _commit_ok(u: Unpacker) -> Fields:
    return {"wcc": unpack_wcc(u), "verf": bytes(u.unpack_fopaque(8))}


def _nothing(u: Unpacker) -> Fields:
    return {}


DECODERS = {
    NfsProc.GETATTR: (_getattr_ok, _nothing),
    NfsProc.SETATTR: (_wcc, _wcc),
    NfsProc.LOOKUP: (_lookup_ok, _lookup_fail),
    NfsProc.ACCESS: (_access_ok, _post),
    NfsProc.READLINK: (_readlink_ok, _post),
    NfsProc.READ: (_read_ok, _post),
    NfsProc.WRITE: (_write_ok, _wcc),
    NfsProc.CREATE: (_create_ok, _dir_wcc),
    NfsProc.MKDIR: (_create_ok, _dir_wcc),
    NfsProc.SYMLINK: (_create_ok, _dir_wcc),
    NfsProc.MKNOD: (_create_ok, _dir_wcc),
    NfsProc.REMOVE: (_dir_wcc, _dir_wcc),
    NfsProc.RMDIR: (_dir_wcc, _dir_wcc),
    NfsProc.RENAME: (_rename, _rename),
    NfsProc.LINK: (_link, _link),
    NfsProc.READDIR: (_readdir_ok(False), _readdir_fail),
    NfsProc.READDIRPLUS: (_readdir_ok(True), _readdir_fail),
    NfsProc.FSSTAT: (_fsstat_ok, _post),
    NfsProc.FSINFO: (_fsinfo_ok, _post),
    NfsProc.PATHCONF: (_pathconf_ok, _post),
    NfsProc.COMMIT: (_commit_ok, _wcc),
}


# -- argument encoders -----------------------------------------------------------------------


def pack_diropargs(p: Packer, dir_fh: bytes, name: bytes) -> None:
    t.DirOpArgs(dir_fh, name).pack(p)


def pack_nfstime(p: Packer, ns: int) -> None:
    t.pack_time_ns(p, ns)


class Nfs3:
    """NFSv3 calls over a ``RawClient``, one method per procedure, each returning ``Res``."""

    def __init__(self, raw: RawClient, root: bytes) -> None:
        self.raw = raw
        self.root = root
        self.last_result_size = 0

    def close(self) -> None:
        self.raw.close()

    @contextmanager
    def as_user(self, uid: int, gid: int, gids: tuple[int, ...] = ()) -> Iterator[Nfs3]:
        """Act as ``uid``/``gid`` inside the block, then as root again."""
        self.raw.as_user(uid, gid, gids)
        try:
            yield self
        finally:
            self.raw.as_user(0, 0)

    def call(self, proc: NfsProc, args: bytes) -> Res:
        u = self.raw.call(NFS_PROGRAM, 3, proc, args).ok()
        self.last_result_size = u.remaining()  # bytes of the procedure result
        status = Nfsstat3(u.unpack_uint())
        ok, fail = DECODERS[proc]
        fields = (ok if status == Nfsstat3.OK else fail)(u)
        assert u.remaining() == 0, f"{proc.name} {status.name}: {u.remaining()} bytes left over"
        return Res(status, fields)

    def _call(self, proc: NfsProc, *items: Any) -> Res:
        """Encode ``items`` (bytes -> opaque, int -> uint, callable -> packs itself)."""
        p = Packer()
        for item in items:
            if isinstance(item, (bytes, bytearray)):
                p.pack_opaque(item)
            elif isinstance(item, int):
                p.pack_uint(item)
            else:
                item(p)
        return self.call(proc, p.get_buffer())

    # -- the procedures ----------------------------------------------------------------------

    def null(self) -> bytes:
        body = self.raw.call(NFS_PROGRAM, 3, NfsProc.NULL).ok()
        return bytes(body.rest())

    def getattr(self, fh: bytes) -> Res:
        return self._call(NfsProc.GETATTR, fh)

    def setattr(self, fh: bytes, attrs: SetAttr, guard_ns: int | None = None) -> Res:
        def guard(p: Packer) -> None:
            p.pack_optional(guard_ns, lambda ns: pack_nfstime(p, ns))

        return self._call(NfsProc.SETATTR, fh, lambda p: t.pack_sattr3(p, attrs), guard)

    def lookup(self, dir_fh: bytes, name: bytes) -> Res:
        return self._call(NfsProc.LOOKUP, dir_fh, name)

    def access(self, fh: bytes, bits: int = 0x3F) -> Res:
        return self._call(NfsProc.ACCESS, fh, bits)

    def readlink(self, fh: bytes) -> Res:
        return self._call(NfsProc.READLINK, fh)

    def read(self, fh: bytes, offset: int, count: int) -> Res:
        return self._call(NfsProc.READ, fh, lambda p: p.pack_uhyper(offset), count)

    def write(
        self,
        fh: bytes,
        offset: int,
        data: bytes,
        stable: StableHow = StableHow.FILE_SYNC,
        count: int | None = None,
    ) -> Res:
        def body(p: Packer) -> None:
            p.pack_uhyper(offset)
            p.pack_uint(len(data) if count is None else count)
            p.pack_enum(stable)
            p.pack_opaque(data)

        return self._call(NfsProc.WRITE, fh, body)

    def create(
        self,
        dir_fh: bytes,
        name: bytes,
        how: CreateMode = CreateMode.UNCHECKED,
        attrs: SetAttr | None = None,
        verf: bytes = ZERO_VERF,
    ) -> Res:
        def body(p: Packer) -> None:
            pack_diropargs(p, dir_fh, name)
            p.pack_enum(how)
            if how == CreateMode.EXCLUSIVE:
                p.pack_fopaque(8, verf)
            else:
                t.pack_sattr3(p, attrs or SetAttr())

        return self._call(NfsProc.CREATE, body)

    def mkdir(self, dir_fh: bytes, name: bytes, attrs: SetAttr | None = None) -> Res:
        return self._call(
            NfsProc.MKDIR,
            lambda p: pack_diropargs(p, dir_fh, name),
            lambda p: t.pack_sattr3(p, attrs or SetAttr()),
        )

    def symlink(
        self, dir_fh: bytes, name: bytes, target: bytes, attrs: SetAttr | None = None
    ) -> Res:
        return self._call(
            NfsProc.SYMLINK,
            lambda p: pack_diropargs(p, dir_fh, name),
            lambda p: t.pack_sattr3(p, attrs or SetAttr()),
            target,
        )

    def mknod(
        self,
        dir_fh: bytes,
        name: bytes,
        ftype: Ftype3,
        attrs: SetAttr | None = None,
        rdev: tuple[int, int] = (0, 0),
    ) -> Res:
        def body(p: Packer) -> None:
            pack_diropargs(p, dir_fh, name)
            p.pack_enum(ftype)
            if ftype in (Ftype3.CHR, Ftype3.BLK, Ftype3.SOCK, Ftype3.FIFO):
                t.pack_sattr3(p, attrs or SetAttr())
            if ftype in (Ftype3.CHR, Ftype3.BLK):
                p.pack_uint(rdev[0])
                p.pack_uint(rdev[1])

        return self._call(NfsProc.MKNOD, body)

    def remove(self, dir_fh: bytes, name: bytes) -> Res:
        return self._call(NfsProc.REMOVE, dir_fh, name)

    def rmdir(self, dir_fh: bytes, name: bytes) -> Res:
        return self._call(NfsProc.RMDIR, dir_fh, name)

    def rename(self, from_dir: bytes, from_name: bytes, to_dir: bytes, to_name: bytes) -> Res:
        return self._call(NfsProc.RENAME, from_dir, from_name, to_dir, to_name)

    def link(self, fh: bytes, dir_fh: bytes, name: bytes) -> Res:
        return self._call(NfsProc.LINK, fh, dir_fh, name)

    def readdir(
        self, dir_fh: bytes, cookie: int = 0, verf: bytes = ZERO_VERF, count: int = 8192
    ) -> Res:
        return self._call(
            NfsProc.READDIR,
            dir_fh,
            lambda p: p.pack_uhyper(cookie),
            lambda p: p.pack_fopaque(8, verf),
            count,
        )

    def readdirplus(
        self,
        dir_fh: bytes,
        cookie: int = 0,
        verf: bytes = ZERO_VERF,
        dircount: int = 4096,
        maxcount: int = 32768,
    ) -> Res:
        return self._call(
            NfsProc.READDIRPLUS,
            dir_fh,
            lambda p: p.pack_uhyper(cookie),
            lambda p: p.pack_fopaque(8, verf),
            dircount,
            maxcount,
        )

    def fsstat(self, fh: bytes) -> Res:
        return self._call(NfsProc.FSSTAT, fh)

    def fsinfo(self, fh: bytes) -> Res:
        return self._call(NfsProc.FSINFO, fh)

    def pathconf(self, fh: bytes) -> Res:
        return self._call(NfsProc.PATHCONF, fh)

    def commit(self, fh: bytes, offset: int = 0, count: int = 0) -> Res:
        return self._call(NfsProc.COMMIT, fh, lambda p: p.pack_uhyper(offset), count)

    # -- conveniences (each asserts success) ---------------------------------------------------

    def must(self, res: Res) -> Res:
        assert res.status == Nfsstat3.OK, f"expected OK, got {res.status.name}: {res.fields}"
        return res

    def attr(self, fh: bytes) -> Fattr:
        attr: Fattr = self.must(self.getattr(fh)).attr
        return attr

    def new_file(
        self, dir_fh: bytes, name: bytes, data: bytes = b"", mode: int | None = None
    ) -> bytes:
        res = self.must(self.create(dir_fh, name, CreateMode.GUARDED, SetAttr(mode=mode)))
        assert res.fh is not None
        if data:
            self.must(self.write(res.fh, 0, data))
        fh: bytes = res.fh
        return fh

    def new_dir(self, dir_fh: bytes, name: bytes, mode: int | None = None) -> bytes:
        res = self.must(self.mkdir(dir_fh, name, SetAttr(mode=mode)))
        assert res.fh is not None
        fh: bytes = res.fh
        return fh

    def fh_of(self, dir_fh: bytes, name: bytes) -> bytes:
        fh: bytes = self.must(self.lookup(dir_fh, name)).fh
        return fh

"""NFSv3 results, client direction (RFC 1813 sections 2.6 and 3.3): decoding only.

The mirror of the ``pack`` methods in ``nfs3.types``: one ``unpack_*`` per result type,
the basic types they are made of (fattr3, post_op_attr, wcc_data, entry lists), and
``unpack_result``, which reads the status word and either decodes the ``resok`` arm or
decodes the ``resfail`` arm and raises ``NfsError``. Every short or malformed reply raises
``XdrError`` from the Unpacker cursor; nothing here does IO.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TypeVar

from ferry.errors import NfsError, XdrError
from ferry.nfs3 import types as t
from ferry.nfs3.const import NFS3_FHSIZE, Ftype3, NfsProc, Nfsstat3, StableHow
from ferry.vocab import Attr
from ferry.xdr import Unpacker

T = TypeVar("T")

_FATTR3 = struct.Struct(">5I2Q2I2Q6I")  # RFC 1813 section 2.6, fattr3
_NS = 1_000_000_000
MAX_ENTRIES = 1 << 20  # bound on entries in one READDIR reply (a 4 MiB reply has fewer)
MAX_DATA = 1 << 26  # bound on READ data and READLINK paths

# -- basic types ----------------------------------------------------------------------------


def unpack_fh(u: Unpacker) -> bytes:
    """nfs_fh3 (RFC 1813 section 2.5): opaque data<NFS3_FHSIZE>."""
    return u.unpack_bytes(NFS3_FHSIZE)


def _ftype(v: int) -> Ftype3:
    try:
        return Ftype3(v)
    except ValueError:
        raise XdrError(f"bad ftype3 {v}") from None


def unpack_fattr3(u: Unpacker) -> Attr:
    """fattr3 (RFC 1813 section 2.6); times become nanoseconds, generation is unknown (0)."""
    v = _FATTR3.unpack(u.unpack_fopaque(_FATTR3.size))
    return Attr(
        type=_ftype(v[0]),
        mode=v[1],
        nlink=v[2],
        uid=v[3],
        gid=v[4],
        size=v[5],
        used=v[6],
        rdev=(v[7], v[8]),
        fsid=v[9],
        fileid=v[10],
        atime_ns=v[11] * _NS + min(v[12], _NS - 1),
        mtime_ns=v[13] * _NS + min(v[14], _NS - 1),
        ctime_ns=v[15] * _NS + min(v[16], _NS - 1),
    )


def unpack_post_op_attr(u: Unpacker) -> Attr | None:
    return unpack_fattr3(u) if u.unpack_bool() else None


def unpack_pre_op_attr(u: Unpacker) -> t.WccAttr | None:
    """pre_op_attr: wcc_attr (size, mtime, ctime) if the server sent it."""
    if not u.unpack_bool():
        return None
    size = u.unpack_uhyper()
    return t.WccAttr(size, t.unpack_time_ns(u), t.unpack_time_ns(u))


def unpack_wcc(u: Unpacker) -> t.Wcc:
    """wcc_data (RFC 1813 section 2.6)."""
    return t.Wcc(unpack_pre_op_attr(u), unpack_post_op_attr(u))


def unpack_post_op_fh(u: Unpacker) -> bytes | None:
    return unpack_fh(u) if u.unpack_bool() else None


def unpack_stable(u: Unpacker) -> StableHow:
    v = u.unpack_enum()
    if v not in (0, 1, 2):
        raise XdrError(f"bad stable_how {v}")
    return StableHow(v)


def unpack_entries(u: Unpacker, plus: bool) -> list[t.Entry]:
    """The entry3 / entryplus3 linked list (RFC 1813 sections 3.3.16 and 3.3.17)."""
    entries: list[t.Entry] = []
    while u.unpack_bool():
        if len(entries) >= MAX_ENTRIES:
            raise XdrError(f"more than {MAX_ENTRIES} directory entries in one reply")
        fileid, name, cookie = u.unpack_uhyper(), u.unpack_bytes(t.MAX_NAME), u.unpack_uhyper()
        if plus:
            attr, fh = unpack_post_op_attr(u), unpack_post_op_fh(u)
            entries.append(t.Entry(fileid, name, cookie, attr, fh))
        else:
            entries.append(t.Entry(fileid, name, cookie))
    return entries


# -- resok arms, in procedure order (RFC 1813 section 3.3) ---------------------------------


def unpack_attr_res(u: Unpacker) -> t.AttrRes:
    return t.AttrRes(unpack_fattr3(u))


def unpack_wcc_res(u: Unpacker) -> t.WccRes:
    return t.WccRes(unpack_wcc(u))


def unpack_lookup_res(u: Unpacker) -> t.LookupRes:
    return t.LookupRes(unpack_fh(u), unpack_post_op_attr(u), unpack_post_op_attr(u))


def unpack_access_res(u: Unpacker) -> t.AccessRes:
    return t.AccessRes(unpack_post_op_attr(u), u.unpack_uint())


def unpack_readlink_res(u: Unpacker) -> t.ReadlinkRes:
    return t.ReadlinkRes(unpack_post_op_attr(u), u.unpack_bytes(t.MAX_PATH))


def unpack_read_res(u: Unpacker) -> t.ReadRes:
    """READ3resok; ``data`` is a zero-copy view of the reply (section 3.3.6)."""
    attr, count, eof = unpack_post_op_attr(u), u.unpack_uint(), u.unpack_bool()
    data = u.unpack_opaque(MAX_DATA)
    if len(data) != count:
        raise XdrError(f"READ count {count} but {len(data)} bytes of data")
    return t.ReadRes(attr, count, eof, data)


def unpack_write_res(u: Unpacker) -> t.WriteRes:
    wcc, count, committed = unpack_wcc(u), u.unpack_uint(), unpack_stable(u)
    return t.WriteRes(wcc, count, committed, bytes(u.unpack_fopaque(8)))


def unpack_create_res(u: Unpacker) -> t.CreateRes:
    """CREATE, MKDIR, SYMLINK, MKNOD."""
    return t.CreateRes(unpack_post_op_fh(u), unpack_post_op_attr(u), unpack_wcc(u))


def unpack_rename_res(u: Unpacker) -> t.RenameRes:
    return t.RenameRes(unpack_wcc(u), unpack_wcc(u))


def unpack_link_res(u: Unpacker) -> t.LinkRes:
    return t.LinkRes(unpack_post_op_attr(u), unpack_wcc(u))


def _unpack_readdir(u: Unpacker, plus: bool) -> t.ReaddirRes:
    attr, verf = unpack_post_op_attr(u), bytes(u.unpack_fopaque(8))
    entries = unpack_entries(u, plus)
    return t.ReaddirRes(attr, verf, entries, u.unpack_bool(), plus)


def unpack_readdir_res(u: Unpacker) -> t.ReaddirRes:
    return _unpack_readdir(u, False)


def unpack_readdirplus_res(u: Unpacker) -> t.ReaddirRes:
    return _unpack_readdir(u, True)


def unpack_fsstat_res(u: Unpacker) -> t.FsstatRes:
    attr = unpack_post_op_attr(u)
    tbytes, fbytes, abytes = u.unpack_uhyper(), u.unpack_uhyper(), u.unpack_uhyper()
    tfiles, ffiles, afiles = u.unpack_uhyper(), u.unpack_uhyper(), u.unpack_uhyper()
    return t.FsstatRes(attr, tbytes, fbytes, abytes, tfiles, ffiles, afiles, u.unpack_uint())


def unpack_fsinfo_res(u: Unpacker) -> t.FsinfoRes:
    attr = unpack_post_op_attr(u)
    rtmax, rtpref, rtmult = u.unpack_uint(), u.unpack_uint(), u.unpack_uint()
    wtmax, wtpref, wtmult = u.unpack_uint(), u.unpack_uint(), u.unpack_uint()
    dtpref, maxfilesize, delta = u.unpack_uint(), u.unpack_uhyper(), t.unpack_time_ns(u)
    return t.FsinfoRes(
        attr,
        rtmax,
        rtpref,
        rtmult,
        wtmax,
        wtpref,
        wtmult,
        dtpref,
        maxfilesize,
        delta,
        u.unpack_uint(),
    )


def unpack_pathconf_res(u: Unpacker) -> t.PathconfRes:
    attr, linkmax, name_max = unpack_post_op_attr(u), u.unpack_uint(), u.unpack_uint()
    no_trunc, chown_restricted = u.unpack_bool(), u.unpack_bool()
    case_insensitive, case_preserving = u.unpack_bool(), u.unpack_bool()
    return t.PathconfRes(
        attr, linkmax, name_max, no_trunc, chown_restricted, case_insensitive, case_preserving
    )


def unpack_commit_res(u: Unpacker) -> t.CommitRes:
    return t.CommitRes(unpack_wcc(u), bytes(u.unpack_fopaque(8)))


# -- status and resfail arms ----------------------------------------------------------------

POST, WCC = "post", "wcc"

FAIL_ARMS: dict[NfsProc, tuple[str, ...]] = {
    NfsProc.GETATTR: (),  # 3.3.1: no resfail data
    NfsProc.SETATTR: (WCC,),  # 3.3.2
    NfsProc.LOOKUP: (POST,),  # 3.3.3: dir_attributes
    NfsProc.ACCESS: (POST,),  # 3.3.4
    NfsProc.READLINK: (POST,),  # 3.3.5
    NfsProc.READ: (POST,),  # 3.3.6
    NfsProc.WRITE: (WCC,),  # 3.3.7
    NfsProc.CREATE: (WCC,),  # 3.3.8
    NfsProc.MKDIR: (WCC,),  # 3.3.9
    NfsProc.SYMLINK: (WCC,),  # 3.3.10
    NfsProc.MKNOD: (WCC,),  # 3.3.11
    NfsProc.REMOVE: (WCC,),  # 3.3.12
    NfsProc.RMDIR: (WCC,),  # 3.3.13
    NfsProc.RENAME: (WCC, WCC),  # 3.3.14
    NfsProc.LINK: (POST, WCC),  # 3.3.15
    NfsProc.READDIR: (POST,),  # 3.3.16
    NfsProc.READDIRPLUS: (POST,),  # 3.3.17
    NfsProc.FSSTAT: (POST,),  # 3.3.18
    NfsProc.FSINFO: (POST,),  # 3.3.19
    NfsProc.PATHCONF: (POST,),  # 3.3.20
    NfsProc.COMMIT: (WCC,),  # 3.3.21
}


def unpack_status(u: Unpacker) -> Nfsstat3:
    """nfsstat3; a status this client does not know becomes SERVERFAULT."""
    v = u.unpack_enum()
    try:
        return Nfsstat3(v)
    except ValueError:
        return Nfsstat3.SERVERFAULT


def unpack_resfail(proc: NfsProc, u: Unpacker) -> tuple[Attr | t.Wcc | None, ...]:
    """The ``resfail`` arm of ``proc``: its post_op_attr and wcc_data, in wire order."""
    return tuple(
        unpack_wcc(u) if kind == WCC else unpack_post_op_attr(u) for kind in FAIL_ARMS[proc]
    )


class NfsFailure(NfsError):
    """``NfsError`` raised by a client, carrying the decoded ``resfail`` arm."""

    def __init__(
        self, status: Nfsstat3, proc: NfsProc, resfail: tuple[Attr | t.Wcc | None, ...]
    ) -> None:
        super().__init__(status, f"{proc.name}: {status.name.lower()}")
        self.detail = ""  # the status says it all; the procedure is no news to a path user
        self.proc = proc
        self.resfail = resfail


def unpack_result(proc: NfsProc, u: Unpacker, resok: Callable[[Unpacker], T]) -> T:
    """Status, then ``resok`` decoded by ``resok``, or raise ``NfsFailure`` (an NfsError)."""
    status = unpack_status(u)
    if status == Nfsstat3.OK:
        return resok(u)
    try:
        resfail = unpack_resfail(proc, u)
    except XdrError:  # a server may omit the failure arm; the status is what matters
        resfail = ()
    raise NfsFailure(status, proc, resfail)

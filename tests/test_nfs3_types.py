"""NFSv3 wire types round-trip: every Args packs (client) and unpacks (server) to the same
value, every result packs (server) and decodes (client, ``nfs3.results``) to the same value."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ferry.backends.base import SERVER_TIME, Attr, SetAttr
from ferry.errors import NfsError, XdrError
from ferry.nfs3 import procedures
from ferry.nfs3 import results as r
from ferry.nfs3 import types as t
from ferry.nfs3.const import (
    MOUNT_PROGRAM,
    CreateMode,
    Ftype3,
    MountProc,
    NfsProc,
    Nfsstat3,
    StableHow,
)
from ferry.nfs3.service import Nfs3Service
from ferry.server.app import NON_IDEMPOTENT
from ferry.xdr import Packer, Unpacker

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
fh = st.binary(min_size=1, max_size=64)
name = st.binary(min_size=1, max_size=255)
verf = st.binary(min_size=8, max_size=8)
time_ns = st.integers(0, 2**32 * 1_000_000_000 - 1)
ftype = st.sampled_from(list(Ftype3))

attrs = st.builds(
    Attr,
    type=ftype,
    mode=st.integers(0, 0o7777),
    nlink=u32,
    uid=u32,
    gid=u32,
    size=u64,
    used=u64,
    rdev=st.tuples(u32, u32),
    fileid=u64,
    atime_ns=time_ns,
    mtime_ns=time_ns,
    ctime_ns=time_ns,
    fsid=u64,
)
opt_attrs = st.none() | attrs
set_time = st.none() | st.just(SERVER_TIME) | time_ns
sattrs = st.builds(
    SetAttr,
    mode=st.none() | u32,
    uid=st.none() | u32,
    gid=st.none() | u32,
    size=st.none() | u64,
    atime_ns=set_time,
    mtime_ns=set_time,
)
wcc = st.builds(t.Wcc, st.none() | st.builds(t.WccAttr, u64, time_ns, time_ns), opt_attrs)
dirop = st.builds(t.DirOpArgs, fh, name)


def encode(pack: Callable[[Packer], None]) -> bytes:
    p = Packer()
    pack(p)
    return p.get_buffer()


def round_trip(
    value: Any, pack: Callable[[Packer], None], unpack: Callable[[Unpacker], Any]
) -> None:
    u = Unpacker(encode(pack))
    assert unpack(u) == value
    assert u.remaining() == 0


@given(attrs)
def test_fattr3(a: Attr) -> None:
    round_trip(a, lambda p: t.pack_fattr3(p, a), r.unpack_fattr3)


@given(sattrs)
def test_sattr3(s: SetAttr) -> None:
    round_trip(s, lambda p: t.pack_sattr3(p, s), t.unpack_sattr3)


@given(opt_attrs, wcc)
def test_post_op_attr_and_wcc(a: Attr | None, w: t.Wcc) -> None:
    round_trip(a, lambda p: t.pack_post_op_attr(p, a), r.unpack_post_op_attr)
    round_trip(w, w.pack, r.unpack_wcc)


ARGS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Unpacker], Any]]] = {
    "fh": (st.builds(t.FhArgs, fh), t.FhArgs.unpack),
    "setattr": (
        st.builds(t.SetattrArgs, fh, sattrs, st.none() | time_ns),
        t.SetattrArgs.unpack,
    ),
    "lookup": (st.builds(t.LookupArgs, dirop), t.LookupArgs.unpack),
    "access": (st.builds(t.AccessArgs, fh, u32), t.AccessArgs.unpack),
    "read": (st.builds(t.ReadArgs, fh, u64, u32), t.ReadArgs.unpack),
    "mkdir": (st.builds(t.MkdirArgs, dirop, sattrs), t.MkdirArgs.unpack),
    "symlink": (st.builds(t.SymlinkArgs, dirop, sattrs, name), t.SymlinkArgs.unpack),
    "remove": (st.builds(t.RemoveArgs, dirop), t.RemoveArgs.unpack),
    "rename": (st.builds(t.RenameArgs, dirop, dirop), t.RenameArgs.unpack),
    "link": (st.builds(t.LinkArgs, fh, dirop), t.LinkArgs.unpack),
    "commit": (st.builds(t.CommitArgs, fh, u64, u32), t.CommitArgs.unpack),
}


@given(st.sampled_from(sorted(ARGS)).flatmap(lambda k: st.tuples(st.just(k), ARGS[k][0])))
def test_args(case: tuple[str, Any]) -> None:
    kind, args = case
    round_trip(args, args.pack, ARGS[kind][1])


@given(fh, u64, st.sampled_from(list(StableHow)), st.binary(max_size=10_000))
def test_write_args(f: bytes, offset: int, stable: StableHow, data: bytes) -> None:
    args = t.WriteArgs(f, offset, len(data), stable, memoryview(data))
    round_trip(args, args.pack, t.WriteArgs.unpack)


@pytest.mark.parametrize(
    ("stable", "length", "cut", "why"),
    [
        (3, 4, 0, "bad stable_how 3"),
        (-1, 4, 0, "bad stable_how -1"),
        (0, t.MAX_WIRE_DATA + 1, 0, "exceeds limit"),
        (0, 8, 4, "truncated"),  # the data shorter than its length says
        (0, 4, 12, "truncated"),  # cut in the fixed fields after the handle
    ],
)
def test_write_args_refused(stable: int, length: int, cut: int, why: str) -> None:
    p = Packer()
    p.pack_opaque(b"handle")
    p.pack_uhyper(0)
    p.pack_uint(4)
    p.pack_int(stable)
    p.pack_uint(length)
    p.pack_raw(b"data")
    record = b"".join(bytes(b) for b in p.buffers())
    with pytest.raises(XdrError, match=why):
        t.WriteArgs.unpack(Unpacker(record[: len(record) - cut] if cut else record))


@given(
    dirop,
    st.sampled_from([CreateMode.UNCHECKED, CreateMode.GUARDED]),
    sattrs,
    verf,
    st.booleans(),
)
def test_create_args(
    where: t.DirOpArgs, mode: CreateMode, s: SetAttr, v: bytes, excl: bool
) -> None:
    args = (
        t.CreateArgs(where, CreateMode.EXCLUSIVE, SetAttr(), v)
        if excl
        else t.CreateArgs(where, mode, s, b"")
    )
    round_trip(args, args.pack, t.CreateArgs.unpack)


@given(dirop, st.sampled_from([Ftype3.CHR, Ftype3.BLK, Ftype3.SOCK, Ftype3.FIFO]), sattrs, u32, u32)
def test_mknod_args(where: t.DirOpArgs, kind: Ftype3, s: SetAttr, major: int, minor: int) -> None:
    dev = (major, minor) if kind in (Ftype3.CHR, Ftype3.BLK) else (0, 0)
    args = t.MknodArgs(where, kind, s, dev)
    round_trip(args, args.pack, t.MknodArgs.unpack)


@given(fh, u64, verf, u32, u32)
def test_readdir_args(f: bytes, cookie: int, v: bytes, dircount: int, maxcount: int) -> None:
    plain = t.ReaddirArgs(f, cookie, v, dircount, 0)
    round_trip(plain, plain.pack, t.ReaddirArgs.unpack)
    plus = t.ReaddirArgs(f, cookie, v, dircount, maxcount)
    round_trip(plus, plus.pack_plus, t.ReaddirArgs.unpack_plus)


entry = st.builds(t.Entry, u64, name, u64)
entry_plus = st.builds(t.Entry, u64, name, u64, opt_attrs, st.none() | fh)

RESULTS: dict[str, tuple[st.SearchStrategy[Any], Callable[[Unpacker], Any]]] = {
    "attr": (st.builds(t.AttrRes, attrs), r.unpack_attr_res),
    "wcc": (st.builds(t.WccRes, wcc), r.unpack_wcc_res),
    "lookup": (st.builds(t.LookupRes, fh, opt_attrs, opt_attrs), r.unpack_lookup_res),
    "access": (st.builds(t.AccessRes, opt_attrs, u32), r.unpack_access_res),
    "readlink": (st.builds(t.ReadlinkRes, opt_attrs, name), r.unpack_readlink_res),
    "read": (
        st.binary(max_size=9000).flatmap(
            lambda d: st.builds(t.ReadRes, opt_attrs, st.just(len(d)), st.booleans(), st.just(d))
        ),
        r.unpack_read_res,
    ),
    "write": (
        st.builds(t.WriteRes, wcc, u32, st.sampled_from(list(StableHow)), verf),
        r.unpack_write_res,
    ),
    "create": (st.builds(t.CreateRes, st.none() | fh, opt_attrs, wcc), r.unpack_create_res),
    "rename": (st.builds(t.RenameRes, wcc, wcc), r.unpack_rename_res),
    "link": (st.builds(t.LinkRes, opt_attrs, wcc), r.unpack_link_res),
    "readdir": (
        st.builds(
            t.ReaddirRes,
            opt_attrs,
            verf,
            st.lists(entry, max_size=20),
            st.booleans(),
            st.just(False),
        ),
        r.unpack_readdir_res,
    ),
    "readdirplus": (
        st.builds(
            t.ReaddirRes,
            opt_attrs,
            verf,
            st.lists(entry_plus, max_size=20),
            st.booleans(),
            st.just(True),
        ),
        r.unpack_readdirplus_res,
    ),
    "fsstat": (
        st.builds(t.FsstatRes, opt_attrs, u64, u64, u64, u64, u64, u64, u32),
        r.unpack_fsstat_res,
    ),
    "fsinfo": (
        st.builds(t.FsinfoRes, opt_attrs, u32, u32, u32, u32, u32, u32, u32, u64, time_ns, u32),
        r.unpack_fsinfo_res,
    ),
    "pathconf": (
        st.builds(
            t.PathconfRes,
            opt_attrs,
            u32,
            u32,
            st.booleans(),
            st.booleans(),
            st.booleans(),
            st.booleans(),
        ),
        r.unpack_pathconf_res,
    ),
    "commit": (st.builds(t.CommitRes, wcc, verf), r.unpack_commit_res),
}


@given(st.sampled_from(sorted(RESULTS)).flatmap(lambda k: st.tuples(st.just(k), RESULTS[k][0])))
def test_results(case: tuple[str, Any]) -> None:
    kind, res = case
    round_trip(res, res.pack, RESULTS[kind][1])


@given(
    st.sampled_from(list(procedures.BY_NUMBER)),
    st.sampled_from([s for s in Nfsstat3 if s]),
    opt_attrs,
    wcc,
)
def test_resfail_arms(proc: NfsProc, status: Nfsstat3, a: Attr | None, w: t.Wcc) -> None:
    kinds = procedures.BY_NUMBER[proc].fail_kinds
    p = Packer()
    p.pack_enum(status)
    for kind in kinds:
        w.pack(p) if kind == procedures.WCC else t.pack_post_op_attr(p, a)
    u = Unpacker(p.get_buffer())
    try:
        procedures.unpack_result(proc, u, r.unpack_attr_res)
    except NfsError as exc:
        assert isinstance(exc, procedures.NfsFailure) and exc.status == status
        assert exc.resfail == tuple(w if k == procedures.WCC else a for k in kinds)
    else:
        raise AssertionError("no NfsError")
    assert u.remaining() == 0


# -- the procedure table -------------------------------------------------------------------


def test_the_table_has_every_procedure_once_in_order() -> None:
    assert [p.number for p in procedures.PROCEDURES] == [p for p in NfsProc if p != NfsProc.NULL]
    for proc in procedures.PROCEDURES:
        assert callable(getattr(Nfs3Service, proc.method)), proc.method


def test_non_idempotent_procedures_are_those_of_rfc_1813() -> None:
    """The DRC keeps exactly these (the table's idempotency column, sections 3.3.N)."""
    once = {"SETATTR", "WRITE", "CREATE", "MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR"}
    once |= {"RENAME", "LINK", "COMMIT"}
    assert {p.name for p in procedures.NON_IDEMPOTENT} == once
    mounts = {(prog, proc) for prog, _, proc in NON_IDEMPOTENT if prog == MOUNT_PROGRAM}
    assert mounts == {
        (MOUNT_PROGRAM, p) for p in (MountProc.MNT, MountProc.UMNT, MountProc.UMNTALL)
    }


def test_every_result_column_is_round_tripped() -> None:
    """Each row's ``resok`` decoder is one ``test_results`` checks against its ``pack``."""
    checked = {decode for _, decode in RESULTS.values()}
    assert {p.result for p in procedures.PROCEDURES} <= checked

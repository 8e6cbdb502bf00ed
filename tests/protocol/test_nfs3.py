"""Every NFSv3 procedure (RFC 1813 section 3.3) against the real server over TCP.

Each test runs over the local backend (a temporary directory) and the memory backend,
unless it depends on state surviving a restart. The client acts as root (root squash is
off) except where a test switches to an explicit non-root identity with ``as_user``.
Results are decoded independently of the server's codecs (``nfs3wire``), and every reply
must be consumed exactly, so resfail arms are checked on the wire too.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Callable

import pytest
from nfs3wire import ZERO_VERF, DirEntry, Fattr, Nfs3, Res, Wcc
from rawclient import RunningServer
from servers import Servers

from ferry.backends.base import SERVER_TIME, SetAttr
from ferry.nfs3.const import Access, CreateMode, FsProperties, Ftype3, Nfsstat3, StableHow

EVERY_MODEL = True  # tests asking for ``nfs`` alone run over every model x backend (conftest)
S = Nfsstat3
MiB = 1 << 20
SEC = 1_000_000_000
ALL_ACCESS = 0x3F
USER, GROUP = 1000, 1000
OTHER = 2000


# -- helpers ---------------------------------------------------------------------------------


def check_wcc(wcc: Wcc, prior: Fattr, now: Fattr) -> None:
    """wcc_data present and truthful: before is the state before the call, after the state
    after it (RFC 1813 section 2.6)."""
    assert wcc.before is not None, "pre-op attributes missing"
    assert wcc.after is not None, "post-op attributes missing"
    assert (wcc.before.size, wcc.before.mtime, wcc.before.ctime) == (
        prior.size,
        prior.mtime,
        prior.ctime,
    )
    assert wcc.after.same_file_state(now), f"post-op {wcc.after} != GETATTR {now}"


def old_times(nfs: Nfs3, fh: bytes, seconds: int = 1_000_000) -> Fattr:
    """Set atime and mtime far in the past so any later change is visible whatever the
    file system's timestamp granularity."""
    nfs.must(nfs.setattr(fh, SetAttr(atime_ns=seconds * SEC, mtime_ns=seconds * SEC)))
    return nfs.attr(fh)


def edit(fh: bytes, index: int) -> bytes:
    b = bytearray(fh)
    b[index] ^= 0x01
    return bytes(b)


def shared_dir(nfs: Nfs3, name: bytes = b"shared") -> bytes:
    """A world-writable directory, so non-root users can create things."""
    return nfs.new_dir(nfs.root, name, mode=0o777)


def listing(
    nfs: Nfs3, dir_fh: bytes, plus: bool, count: int, between: Callable[[int], None] | None = None
) -> tuple[list[DirEntry], list[Res]]:
    """Page through a directory with READDIR(PLUS), resuming from the last cookie and
    sending back the verifier each reply carried. ``between(page_no)`` runs between pages."""
    cookie, verf = 0, ZERO_VERF
    entries: list[DirEntry] = []
    replies: list[Res] = []
    for page in range(100_000):
        if plus:
            res = nfs.readdirplus(dir_fh, cookie, verf, dircount=count, maxcount=count * 4)
            limit = count * 4
        else:
            res = nfs.readdir(dir_fh, cookie, verf, count=count)
            limit = count
        nfs.must(res)
        assert nfs.last_result_size <= limit, f"reply of {nfs.last_result_size} > {limit}"
        assert res.dir_attr is not None and res.dir_attr.type == Ftype3.DIR
        replies.append(res)
        entries.extend(res.entries)
        if res.eof:
            return entries, replies
        assert res.entries, "a non-final page must make progress"
        cookie, verf = res.entries[-1].cookie, res.verf
        if between:
            between(page)
    raise AssertionError("READDIR never reached eof")


# -- NULL, GETATTR and handles ---------------------------------------------------------------


def test_null(nfs: Nfs3) -> None:
    assert nfs.null() == b""


def test_getattr_root_and_file(nfs: Nfs3) -> None:
    root = nfs.attr(nfs.root)
    assert root.type == Ftype3.DIR and root.nlink >= 2 and root.fileid != 0
    fh = nfs.new_file(nfs.root, b"f", b"hello", mode=0o640)
    a = nfs.attr(fh)
    assert (a.type, a.mode, a.size, a.nlink, a.uid, a.gid) == (Ftype3.REG, 0o640, 5, 1, 0, 0)
    assert a.fsid == root.fsid and a.fileid not in (0, root.fileid)
    assert a.mtime > 0 and a.ctime > 0


@pytest.mark.parametrize("index", [0, 1, 3, 5, 10, -1])
def test_getattr_edited_handle_is_badhandle(nfs: Nfs3, index: int) -> None:
    fh = nfs.new_file(nfs.root, b"f")
    res = nfs.getattr(edit(fh, index))
    assert res.status == S.BADHANDLE


@pytest.mark.parametrize("garbage", [b"", b"\0", b"x" * 27, b"\x01" * 27, b"\xff" * 64])
def test_getattr_garbage_handle_is_badhandle(nfs: Nfs3, garbage: bytes) -> None:
    assert nfs.getattr(garbage).status == S.BADHANDLE


def test_handle_of_unknown_export_is_stale(nfs: Nfs3, server: RunningServer) -> None:
    """A well-made handle naming an export the server does not have (RFC: STALE)."""
    export = server.app.exports[0]
    fh = server.app.nfs.handles.encode((export.export_id + 1) & 0xFFFF or 1, 12345)
    assert nfs.getattr(fh).status == S.STALE


def test_getattr_stale_after_remove(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"gone", b"data")
    nfs.must(nfs.remove(nfs.root, b"gone"))
    assert nfs.getattr(fh).status == S.STALE


HANDLE_CALLS: dict[str, Callable[[Nfs3, bytes], Res]] = {
    "GETATTR": lambda n, fh: n.getattr(fh),
    "SETATTR": lambda n, fh: n.setattr(fh, SetAttr(mode=0o600)),
    "LOOKUP": lambda n, fh: n.lookup(fh, b"x"),
    "ACCESS": lambda n, fh: n.access(fh),
    "READLINK": lambda n, fh: n.readlink(fh),
    "READ": lambda n, fh: n.read(fh, 0, 10),
    "WRITE": lambda n, fh: n.write(fh, 0, b"abc"),
    "CREATE": lambda n, fh: n.create(fh, b"x"),
    "MKDIR": lambda n, fh: n.mkdir(fh, b"x"),
    "SYMLINK": lambda n, fh: n.symlink(fh, b"x", b"target"),
    "MKNOD": lambda n, fh: n.mknod(fh, b"x", Ftype3.FIFO),
    "REMOVE": lambda n, fh: n.remove(fh, b"x"),
    "RMDIR": lambda n, fh: n.rmdir(fh, b"x"),
    "RENAME": lambda n, fh: n.rename(fh, b"x", fh, b"y"),
    "LINK": lambda n, fh: n.link(fh, n.root, b"x"),
    "READDIR": lambda n, fh: n.readdir(fh),
    "READDIRPLUS": lambda n, fh: n.readdirplus(fh),
    "FSSTAT": lambda n, fh: n.fsstat(fh),
    "FSINFO": lambda n, fh: n.fsinfo(fh),
    "PATHCONF": lambda n, fh: n.pathconf(fh),
    "COMMIT": lambda n, fh: n.commit(fh),
}


@pytest.mark.parametrize("proc", sorted(HANDLE_CALLS))
def test_every_procedure_refuses_bad_and_stale_handles(nfs: Nfs3, proc: str) -> None:
    """BADHANDLE for a forged handle, STALE for a removed file's; the resfail arm decodes
    (the decoder checks every byte) and carries no attributes for a file that is gone."""
    call = HANDLE_CALLS[proc]
    fh = nfs.new_dir(nfs.root, b"victim")
    res = call(nfs, edit(fh, 12))
    assert res.status == S.BADHANDLE
    nfs.must(nfs.rmdir(nfs.root, b"victim"))
    res = call(nfs, fh)
    assert res.status == S.STALE, res
    for value in res.fields.values():
        attrs = [value.after, value.before] if isinstance(value, Wcc) else [value]
        if proc != "LINK":  # LINK's second handle (the root) is alive
            assert all(a is None for a in attrs), f"attributes for a stale handle: {res}"


# -- SETATTR ---------------------------------------------------------------------------------


def test_setattr_mode_size_times(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f", b"0123456789")
    prior = nfs.attr(fh)
    res = nfs.must(nfs.setattr(fh, SetAttr(mode=0o4751)))
    now = nfs.attr(fh)
    check_wcc(res.wcc, prior, now)
    assert now.mode == 0o4751 and now.ctime >= prior.ctime

    prior = now
    res = nfs.must(nfs.setattr(fh, SetAttr(size=4)))
    now = nfs.attr(fh)
    check_wcc(res.wcc, prior, now)
    assert now.size == 4 and res.wcc.before.size == 10
    nfs.must(nfs.setattr(fh, SetAttr(size=8)))
    assert nfs.must(nfs.read(fh, 0, 100)).data == b"0123\0\0\0\0"

    stamp_a, stamp_m = 1_234_567_890 * SEC + 123_456_789, 1_111_111_111 * SEC + 999
    res = nfs.must(nfs.setattr(fh, SetAttr(atime_ns=stamp_a, mtime_ns=stamp_m)))
    assert (res.wcc.after.atime, res.wcc.after.mtime) == (stamp_a, stamp_m)
    assert (nfs.attr(fh).atime, nfs.attr(fh).mtime) == (stamp_a, stamp_m)

    before = time.time_ns()
    res = nfs.must(nfs.setattr(fh, SetAttr(mtime_ns=SERVER_TIME)))
    assert abs(res.wcc.after.mtime - before) < 60 * SEC
    assert res.wcc.after.atime == stamp_a  # DONT_CHANGE


def test_setattr_owner_and_group(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f")
    res = nfs.must(nfs.setattr(fh, SetAttr(uid=USER, gid=4321)))
    assert (res.wcc.after.uid, res.wcc.after.gid) == (USER, 4321)
    with nfs.as_user(OTHER, OTHER):
        assert nfs.setattr(fh, SetAttr(mode=0o777)).status == S.PERM
        assert nfs.setattr(fh, SetAttr(uid=OTHER)).status == S.PERM
    with nfs.as_user(USER, GROUP, (4321, 77)):
        nfs.must(nfs.setattr(fh, SetAttr(mode=0o600)))
        nfs.must(nfs.setattr(fh, SetAttr(gid=77)))  # owner, into a group of theirs
        assert nfs.setattr(fh, SetAttr(gid=5555)).status == S.PERM
        assert nfs.setattr(fh, SetAttr(uid=0)).status == S.PERM
    a = nfs.attr(fh)
    assert (a.mode, a.uid, a.gid) == (0o600, USER, 77)


def test_setattr_guard(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f", b"abc")
    a = nfs.attr(fh)
    res = nfs.setattr(fh, SetAttr(mode=0o600), guard_ns=a.ctime + 1)
    assert res.status == S.NOT_SYNC
    assert res.wcc.after is not None and res.wcc.after.mode == a.mode
    assert nfs.attr(fh).mode == a.mode
    res = nfs.must(nfs.setattr(fh, SetAttr(mode=0o600), guard_ns=a.ctime))
    assert res.wcc.after.mode == 0o600


def test_setattr_size_of_directory_fails(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"d")
    assert nfs.setattr(d, SetAttr(size=0)).status in (S.ISDIR, S.INVAL)


# -- LOOKUP ----------------------------------------------------------------------------------


def test_lookup(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"dir")
    fh = nfs.new_file(d, b"file", b"xyz")
    res = nfs.must(nfs.lookup(d, b"file"))
    assert res.fh == fh
    assert res.attr.same_file_state(nfs.attr(fh))
    assert res.dir_attr.same_file_state(nfs.attr(d))
    assert nfs.fh_of(d, b".") == d
    assert nfs.fh_of(d, b"..") == nfs.root


@pytest.mark.in_process  # over the other models, ``nfs.root`` is a directory of the export
def test_lookup_dotdot_of_the_export_root_is_the_root(nfs: Nfs3) -> None:
    assert nfs.fh_of(nfs.root, b"..") == nfs.root  # no escape above the export


def test_lookup_errors(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"dir")
    fh = nfs.new_file(d, b"file")
    res = nfs.lookup(d, b"missing")
    assert res.status == S.NOENT and res.dir_attr is not None
    assert res.dir_attr.fileid == nfs.attr(d).fileid
    assert nfs.lookup(fh, b"x").status == S.NOTDIR
    assert nfs.lookup(d, b"n" * 256).status == S.NAMETOOLONG
    assert nfs.lookup(d, b"file/..").status in (S.ACCES, S.INVAL, S.NOENT)


def test_lookup_does_not_follow_symlinks(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"dir")
    target = nfs.new_file(d, b"target")
    nfs.must(nfs.symlink(d, b"ln", b"target"))
    nfs.must(nfs.symlink(d, b"dirlink", b"."))
    res = nfs.must(nfs.lookup(d, b"ln"))
    assert res.attr.type == Ftype3.LNK and res.fh != target
    res = nfs.must(nfs.lookup(d, b"dirlink"))
    assert res.attr.type == Ftype3.LNK
    assert nfs.lookup(res.fh, b"target").status == S.NOTDIR


def test_lookup_needs_search_permission(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"private", mode=0o700)
    nfs.new_file(d, b"f")
    with nfs.as_user(USER, GROUP):
        res = nfs.lookup(d, b"f")
        assert res.status == S.ACCES and res.dir_attr is not None
    nfs.must(nfs.setattr(d, SetAttr(mode=0o711)))
    with nfs.as_user(USER, GROUP):
        nfs.must(nfs.lookup(d, b"f"))


# -- ACCESS ----------------------------------------------------------------------------------


R, LK, MD, EX, DL, XE = (
    Access.READ,
    Access.LOOKUP,
    Access.MODIFY,
    Access.EXTEND,
    Access.DELETE,
    Access.EXECUTE,
)


@pytest.mark.parametrize(
    ("ftype", "mode", "who", "expected"),
    [
        ("file", 0o640, "owner", R | MD | EX),
        ("file", 0o640, "group", R),
        ("file", 0o640, "other", 0),
        ("file", 0o640, "root", R | MD | EX),
        ("file", 0o751, "owner", R | MD | EX | XE),
        ("file", 0o751, "group", R | XE),
        ("file", 0o751, "other", XE),
        ("file", 0o751, "root", R | MD | EX | XE),
        ("file", 0o064, "owner", 0),  # the owner class applies even when others may do more
        ("dir", 0o750, "owner", R | LK | MD | EX | DL),
        ("dir", 0o750, "group", R | LK),
        ("dir", 0o750, "other", 0),
        ("dir", 0o000, "root", R | LK | MD | EX | DL),
    ],
)
def test_access(nfs: Nfs3, ftype: str, mode: int, who: str, expected: int) -> None:
    make = nfs.new_file if ftype == "file" else nfs.new_dir
    fh = make(nfs.root, b"obj")
    nfs.must(nfs.setattr(fh, SetAttr(mode=mode, uid=USER, gid=100)))
    users = {
        "owner": (USER, 500, ()),
        "group": (OTHER, 3000, (7, 100)),
        "other": (OTHER, 3000, (7,)),
        "root": (0, 0, ()),
    }
    with nfs.as_user(*users[who]):
        res = nfs.must(nfs.access(fh, ALL_ACCESS))
        assert res.attr is not None and res.attr.mode == mode
        assert Access(res.access) == Access(expected)
        only_read = nfs.must(nfs.access(fh, Access.READ)).access
        assert only_read == expected & Access.READ  # never more than asked


# -- READLINK and SYMLINK -------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        b"plain",
        b"../../outside/x",
        b"a//b/./c/",
        b"\xff\xfe not utf-8 \x80",
        b"/abs/" + b"p" * 1000,
    ],
)
def test_symlink_and_readlink_verbatim(nfs: Nfs3, target: bytes) -> None:
    prior = nfs.attr(nfs.root)
    res = nfs.must(nfs.symlink(nfs.root, b"ln", target))
    check_wcc(res.dir_wcc, prior, nfs.attr(nfs.root))
    assert res.attr.type == Ftype3.LNK and res.attr.size == len(target)
    out = nfs.must(nfs.readlink(res.fh))
    assert out.data == target
    assert out.attr is not None and out.attr.type == Ftype3.LNK


def test_symlink_errors(nfs: Nfs3) -> None:
    nfs.new_file(nfs.root, b"taken")
    res = nfs.symlink(nfs.root, b"taken", b"x")
    assert res.status == S.EXIST and res.dir_wcc.after is not None
    assert nfs.symlink(nfs.root, b"l" * 256, b"x").status == S.NAMETOOLONG


def test_readlink_of_non_symlink_is_inval(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f")
    res = nfs.readlink(fh)
    assert res.status == S.INVAL and res.attr is not None and res.attr.type == Ftype3.REG
    assert nfs.readlink(nfs.root).status == S.INVAL


# -- READ ------------------------------------------------------------------------------------


def test_read(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f", b"0123456789")
    res = nfs.must(nfs.read(fh, 0, 4))
    assert (res.data, res.count, res.eof) == (b"0123", 4, False)
    assert res.attr is not None and res.attr.size == 10
    res = nfs.must(nfs.read(fh, 6, 100))
    assert (res.data, res.count, res.eof) == (b"6789", 4, True)
    res = nfs.must(nfs.read(fh, 10, 100))
    assert (res.data, res.count, res.eof) == (b"", 0, True)
    res = nfs.must(nfs.read(fh, 1 << 40, 10))
    assert (res.count, res.eof) == (0, True)


def test_read_errors(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"d")
    res = nfs.read(d, 0, 10)
    assert res.status == S.ISDIR and res.attr is not None and res.attr.type == Ftype3.DIR
    nfs.must(nfs.symlink(nfs.root, b"ln", b"d"))
    assert nfs.read(nfs.fh_of(nfs.root, b"ln"), 0, 10).status == S.INVAL
    fh = nfs.new_file(nfs.root, b"secret", b"x", mode=0o600)
    with nfs.as_user(USER, GROUP):
        res = nfs.read(fh, 0, 10)
        assert res.status == S.ACCES and res.attr is not None


def test_one_mebibyte_read_and_write(nfs: Nfs3) -> None:
    info = nfs.must(nfs.fsinfo(nfs.root))
    assert info.rtmax >= MiB and info.wtmax >= MiB
    data = os.urandom(MiB)
    fh = nfs.new_file(nfs.root, b"big")
    res = nfs.must(nfs.write(fh, 0, data, StableHow.UNSTABLE))
    assert res.count == MiB and res.wcc.after.size == MiB
    res = nfs.must(nfs.read(fh, 0, MiB))
    assert res.count == MiB and res.eof and res.data == data


# -- WRITE and COMMIT ------------------------------------------------------------------------


@pytest.mark.parametrize("stable", list(StableHow))
def test_write_stability_and_verifier(nfs: Nfs3, stable: StableHow) -> None:
    fh = nfs.new_file(nfs.root, b"f")
    res = nfs.must(nfs.write(fh, 0, b"hello", stable))
    assert res.count == 5 and res.committed >= stable and len(res.verf) == 8
    again = nfs.must(nfs.write(fh, 5, b" world", stable))
    assert again.verf == res.verf  # one verifier for the life of the server
    commit = nfs.must(nfs.commit(fh, 0, 0))
    assert commit.verf == res.verf
    assert nfs.must(nfs.read(fh, 0, 100)).data == b"hello world"


def test_verifier_changes_when_the_backend_lost_unstable_writes(
    nfs: Nfs3, server: RunningServer
) -> None:
    """A backend that lost uncommitted writes (a store session cut off and made anew)
    raises its ``write_epoch``: COMMIT then answers another verifier, so the client sends
    its UNSTABLE writes again; WRITEs from then on carry the new one."""
    fh = nfs.new_file(nfs.root, b"f")
    old = nfs.must(nfs.write(fh, 0, b"lost?", StableHow.UNSTABLE)).verf
    backend = server.app.exports[0].backend
    backend.write_epoch += 1
    new = nfs.must(nfs.commit(fh, 0, 0)).verf
    assert new != old
    assert nfs.must(nfs.write(fh, 0, b"again", StableHow.UNSTABLE)).verf == new


def test_write_wcc_and_mtime(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f", b"abc")
    prior = old_times(nfs, fh)
    res = nfs.must(nfs.write(fh, 10, b"XYZ"))
    now = nfs.attr(fh)
    check_wcc(res.wcc, prior, now)
    assert res.wcc.before.size == 3 and res.wcc.after.size == 13
    assert now.mtime > prior.mtime and now.ctime >= prior.ctime
    assert nfs.must(nfs.read(fh, 0, 100)).data == b"abc" + b"\0" * 7 + b"XYZ"
    # overwrite inside the file: size unchanged, mtime moves
    prior = old_times(nfs, fh)
    res = nfs.must(nfs.write(fh, 1, b"B", StableHow.UNSTABLE))
    check_wcc(res.wcc, prior, nfs.attr(fh))
    assert res.wcc.after.size == 13 and res.wcc.after.mtime > prior.mtime


def test_write_errors(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"d")
    res = nfs.write(d, 0, b"x")
    assert res.status == S.ISDIR and res.wcc.after is not None
    fh = nfs.new_file(nfs.root, b"f", b"x", mode=0o644)
    with nfs.as_user(USER, GROUP):
        res = nfs.write(fh, 0, b"y")
        assert res.status == S.ACCES and res.wcc.after is not None
    assert nfs.write(fh, 0, b"abc", count=10).status == S.INVAL  # count beyond the data
    assert nfs.must(nfs.read(fh, 0, 10)).data == b"x"


def test_write_by_group_member(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f", b"", mode=0o620)
    nfs.must(nfs.setattr(fh, SetAttr(uid=USER, gid=300)))
    with nfs.as_user(OTHER, 3000, (300,)):
        nfs.must(nfs.write(fh, 0, b"group"))
        assert nfs.read(fh, 0, 10).status == S.ACCES
    with nfs.as_user(OTHER, 3000):
        assert nfs.write(fh, 0, b"other").status == S.ACCES


def test_commit(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f")
    w = nfs.must(nfs.write(fh, 0, b"unstable data", StableHow.UNSTABLE))
    prior = nfs.attr(fh)
    res = nfs.must(nfs.commit(fh, 0, 0))
    assert res.verf == w.verf
    check_wcc(res.wcc, prior, nfs.attr(fh))
    res = nfs.must(nfs.commit(fh, 4, 4))
    assert res.verf == w.verf
    d = nfs.new_dir(nfs.root, b"d")
    assert nfs.commit(d).status != S.OK


@pytest.mark.parametrize("backend", ["local"])  # the memory backend keeps nothing
def test_restart_changes_verifier_and_keeps_handles(
    backend: str, servers: Servers, tmp_path: os.PathLike[str]
) -> None:
    from servers import export_config

    cfg = export_config(backend, tmp_path)  # type: ignore[arg-type]
    srv, stop = servers.start_config(cfg)
    nfs = servers.connect(srv)
    d = nfs.new_dir(nfs.root, b"dir")
    fh = nfs.new_file(d, b"f")
    before = nfs.must(nfs.write(fh, 0, b"before restart", StableHow.UNSTABLE)).verf
    assert nfs.must(nfs.commit(fh)).verf == before
    root = nfs.root
    nfs.close()
    stop()

    srv, stop = servers.start_config(cfg)
    nfs = servers.connect(srv)
    assert nfs.root == root
    res = nfs.must(nfs.read(fh, 0, 100))  # a handle from before the restart
    assert res.data == b"before restart"
    assert nfs.must(nfs.lookup(d, b"f")).fh == fh
    after = nfs.must(nfs.write(fh, 0, b"BEFORE", StableHow.UNSTABLE)).verf
    assert after != before, "the write verifier must change when the server restarts"
    assert nfs.must(nfs.commit(fh)).verf == after
    stop()


# -- CREATE ----------------------------------------------------------------------------------


def test_create_unchecked(nfs: Nfs3) -> None:
    prior = nfs.attr(nfs.root)
    res = nfs.must(nfs.create(nfs.root, b"f", CreateMode.UNCHECKED, SetAttr(mode=0o604)))
    check_wcc(res.dir_wcc, prior, nfs.attr(nfs.root))
    fh = res.fh
    assert res.attr.type == Ftype3.REG and res.attr.mode == 0o604 and res.attr.size == 0
    nfs.must(nfs.write(fh, 0, b"contents"))
    again = nfs.must(nfs.create(nfs.root, b"f", CreateMode.UNCHECKED, SetAttr()))
    assert again.fh == fh and again.attr.size == 8  # opened, not truncated
    trunc = nfs.must(nfs.create(nfs.root, b"f", CreateMode.UNCHECKED, SetAttr(size=0)))
    assert trunc.fh == fh and trunc.attr.size == 0 and nfs.attr(fh).size == 0


def test_create_guarded(nfs: Nfs3) -> None:
    res = nfs.must(nfs.create(nfs.root, b"f", CreateMode.GUARDED, SetAttr(size=0)))
    nfs.must(nfs.write(res.fh, 0, b"keep"))
    res = nfs.create(nfs.root, b"f", CreateMode.GUARDED, SetAttr(size=0))
    assert res.status == S.EXIST
    assert res.dir_wcc.after is not None and res.dir_wcc.after.type == Ftype3.DIR
    assert nfs.must(nfs.read(nfs.fh_of(nfs.root, b"f"), 0, 10)).data == b"keep"
    nfs.new_dir(nfs.root, b"d")
    assert nfs.create(nfs.root, b"d", CreateMode.UNCHECKED).status == S.EXIST


def test_create_exclusive(nfs: Nfs3) -> None:
    verf = bytes.fromhex("0123456789abcdef")
    res = nfs.must(nfs.create(nfs.root, b"x", CreateMode.EXCLUSIVE, verf=verf))
    fh = res.fh
    assert res.attr.type == Ftype3.REG and res.attr.size == 0
    again = nfs.must(nfs.create(nfs.root, b"x", CreateMode.EXCLUSIVE, verf=verf))
    assert again.fh == fh, "a retransmitted exclusive create must return the same file"
    other = nfs.create(nfs.root, b"x", CreateMode.EXCLUSIVE, verf=bytes.fromhex("fedcba9876543210"))
    assert other.status == S.EXIST
    # the client then sets the real attributes (RFC 1813 section 3.3.8)
    nfs.must(nfs.setattr(fh, SetAttr(mode=0o644, atime_ns=SERVER_TIME, mtime_ns=SERVER_TIME)))
    assert nfs.create(nfs.root, b"x", CreateMode.EXCLUSIVE, verf=verf).status == S.EXIST
    nfs.new_file(nfs.root, b"plain")
    assert nfs.create(nfs.root, b"plain", CreateMode.EXCLUSIVE, verf=verf).status == S.EXIST


def test_create_errors(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f")
    assert nfs.create(fh, b"x").status == S.NOTDIR
    res = nfs.create(nfs.root, b"n" * 256)
    assert res.status == S.NAMETOOLONG and res.dir_wcc.after is not None
    nfs.must(nfs.create(nfs.root, b"n" * 255))  # name_max itself is fine
    for bad in (b"", b"a/b", b"a\0b"):
        assert nfs.create(nfs.root, bad).status in (S.ACCES, S.INVAL, S.NOENT)
    assert nfs.create(nfs.root, b".").status == S.EXIST
    assert nfs.create(nfs.root, b"..").status in (S.EXIST, S.INVAL)
    with nfs.as_user(USER, GROUP):
        res = nfs.create(nfs.root, b"mine")  # root-owned 0755 directory
        assert res.status == S.ACCES and res.dir_wcc.after is not None
    assert nfs.lookup(nfs.root, b"mine").status == S.NOENT


def test_created_objects_belong_to_the_caller(nfs: Nfs3) -> None:
    shared = shared_dir(nfs)
    with nfs.as_user(USER, 321, (5,)):
        made = [
            nfs.must(nfs.create(shared, b"f", CreateMode.GUARDED, SetAttr(uid=0, gid=0))),
            nfs.must(nfs.mkdir(shared, b"d")),
            nfs.must(nfs.symlink(shared, b"l", b"f")),
            nfs.must(nfs.mknod(shared, b"p", Ftype3.FIFO)),
        ]
    for res in made:
        a = nfs.attr(res.fh)
        assert (a.uid, a.gid) == (USER, 321), a
    res = nfs.must(nfs.create(shared, b"rootmade", CreateMode.GUARDED, SetAttr(uid=USER, gid=9)))
    assert (res.attr.uid, res.attr.gid) == (USER, 9)  # root may give files away


# -- MKDIR, MKNOD ---------------------------------------------------------------------------


def test_mkdir(nfs: Nfs3) -> None:
    prior = nfs.attr(nfs.root)
    res = nfs.must(nfs.mkdir(nfs.root, b"d", SetAttr(mode=0o750)))
    now = nfs.attr(nfs.root)
    check_wcc(res.dir_wcc, prior, now)
    assert res.attr.type == Ftype3.DIR and res.attr.mode == 0o750 and res.attr.nlink == 2
    assert now.nlink == prior.nlink + 1
    assert nfs.must(nfs.lookup(nfs.root, b"d")).fh == res.fh
    res = nfs.mkdir(nfs.root, b"d")
    assert res.status == S.EXIST and res.dir_wcc.after is not None
    nfs.new_file(nfs.root, b"f")
    assert nfs.mkdir(nfs.root, b"f").status == S.EXIST
    assert nfs.mkdir(nfs.root, b"m" * 256).status == S.NAMETOOLONG


@pytest.mark.parametrize("ftype", [Ftype3.FIFO, Ftype3.SOCK])
def test_mknod_fifo_and_socket(nfs: Nfs3, ftype: Ftype3) -> None:
    shared = shared_dir(nfs)
    prior = nfs.attr(shared)
    with nfs.as_user(USER, GROUP):
        res = nfs.must(nfs.mknod(shared, b"node", ftype, SetAttr(mode=0o640)))
    check_wcc(res.dir_wcc, prior, nfs.attr(shared))
    a = nfs.attr(res.fh)
    assert (a.type, a.mode, a.uid) == (ftype, 0o640, USER)
    assert nfs.must(nfs.lookup(shared, b"node")).fh == res.fh
    assert nfs.mknod(shared, b"node", ftype).status == S.EXIST
    assert nfs.read(res.fh, 0, 1).status == S.INVAL


@pytest.mark.parametrize("ftype", [Ftype3.REG, Ftype3.DIR, Ftype3.LNK])
def test_mknod_badtype(nfs: Nfs3, ftype: Ftype3) -> None:
    res = nfs.mknod(nfs.root, b"node", ftype)
    assert res.status == S.BADTYPE and res.dir_wcc.after is not None
    assert nfs.lookup(nfs.root, b"node").status == S.NOENT


@pytest.mark.parametrize("ftype", [Ftype3.CHR, Ftype3.BLK])
def test_mknod_devices(nfs: Nfs3, ftype: Ftype3) -> None:
    shared = shared_dir(nfs)
    with nfs.as_user(USER, GROUP):
        res = nfs.mknod(shared, b"dev", ftype, rdev=(1, 3))
        assert res.status == S.PERM and res.dir_wcc.after is not None
    assert nfs.lookup(shared, b"dev").status == S.NOENT
    res = nfs.mknod(shared, b"dev", ftype, SetAttr(mode=0o600), rdev=(1, 3))
    if res.status == S.OK:  # root, and the backend (or kernel) allows devices
        a = nfs.attr(res.fh)
        assert (a.type, a.rdev) == (ftype, (1, 3))
    else:
        assert res.status in (S.PERM, S.ACCES, S.NOTSUPP, S.IO, S.INVAL), res


# -- REMOVE, RMDIR ---------------------------------------------------------------------------


def test_remove(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f", b"data")
    prior = nfs.attr(nfs.root)
    res = nfs.must(nfs.remove(nfs.root, b"f"))
    check_wcc(res.dir_wcc, prior, nfs.attr(nfs.root))
    assert nfs.lookup(nfs.root, b"f").status == S.NOENT
    assert nfs.getattr(fh).status == S.STALE
    assert nfs.read(fh, 0, 4).status == S.STALE
    res = nfs.remove(nfs.root, b"f")
    assert res.status == S.NOENT and res.dir_wcc.after is not None


def test_remove_errors(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"d")
    fh = nfs.new_file(nfs.root, b"f")
    assert nfs.remove(nfs.root, b"d").status in (S.ISDIR, S.EXIST, S.PERM)
    assert nfs.getattr(d).status == S.OK
    assert nfs.remove(fh, b"x").status == S.NOTDIR
    assert nfs.remove(nfs.root, b"r" * 256).status == S.NAMETOOLONG
    with nfs.as_user(USER, GROUP):
        res = nfs.remove(nfs.root, b"f")
        assert res.status == S.ACCES and res.dir_wcc.after is not None
    assert nfs.getattr(fh).status == S.OK


def test_remove_in_sticky_directory(nfs: Nfs3) -> None:
    tmp = nfs.new_dir(nfs.root, b"tmp", mode=0o1777)
    with nfs.as_user(USER, GROUP):
        nfs.new_file(tmp, b"users")
    with nfs.as_user(OTHER, OTHER):
        assert nfs.remove(tmp, b"users").status == S.ACCES
    with nfs.as_user(USER, GROUP):
        nfs.must(nfs.remove(tmp, b"users"))


def test_rename_in_sticky_directory(nfs: Nfs3) -> None:
    """Sticky directories protect entries from being renamed away or replaced by others."""
    tmp = nfs.new_dir(nfs.root, b"tmp", mode=0o1777)
    with nfs.as_user(USER, GROUP):
        victim = nfs.new_file(tmp, b"users", b"precious")
    with nfs.as_user(OTHER, OTHER):
        nfs.new_file(tmp, b"others")
        assert nfs.rename(tmp, b"users", tmp, b"stolen").status == S.ACCES
        assert nfs.rename(tmp, b"others", tmp, b"users").status == S.ACCES
        nfs.must(nfs.rename(tmp, b"others", tmp, b"fresh-name"))
    assert nfs.fh_of(tmp, b"users") == victim
    assert nfs.must(nfs.read(victim, 0, 100)).data == b"precious"


def test_rmdir(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"d")
    nfs.new_file(d, b"f")
    prior = nfs.attr(nfs.root)
    res = nfs.rmdir(nfs.root, b"d")
    assert res.status == S.NOTEMPTY and res.dir_wcc.after is not None
    assert nfs.attr(nfs.root).same_file_state(prior)
    nfs.must(nfs.remove(d, b"f"))
    prior = nfs.attr(nfs.root)
    res = nfs.must(nfs.rmdir(nfs.root, b"d"))
    now = nfs.attr(nfs.root)
    check_wcc(res.dir_wcc, prior, now)
    assert now.nlink == prior.nlink - 1
    assert nfs.getattr(d).status == S.STALE
    assert nfs.rmdir(nfs.root, b"d").status == S.NOENT
    nfs.new_file(nfs.root, b"f")
    assert nfs.rmdir(nfs.root, b"f").status == S.NOTDIR
    assert nfs.rmdir(nfs.root, b".").status == S.INVAL
    assert nfs.rmdir(nfs.root, b"..").status in (S.NOTEMPTY, S.EXIST, S.INVAL)


# -- RENAME ----------------------------------------------------------------------------------


def test_rename_within_directory_over_existing_file(nfs: Nfs3) -> None:
    a = nfs.new_file(nfs.root, b"a", b"AAA")
    b = nfs.new_file(nfs.root, b"b", b"BBBBBB")
    prior = nfs.attr(nfs.root)
    res = nfs.must(nfs.rename(nfs.root, b"a", nfs.root, b"b"))
    now = nfs.attr(nfs.root)
    check_wcc(res.from_wcc, prior, now)
    check_wcc(res.to_wcc, prior, now)
    assert nfs.lookup(nfs.root, b"a").status == S.NOENT
    assert nfs.fh_of(nfs.root, b"b") == a
    assert nfs.must(nfs.read(a, 0, 10)).data == b"AAA"  # the moved handle still works
    assert nfs.getattr(b).status == S.STALE  # the replaced file is gone


def test_rename_into_another_directory(nfs: Nfs3) -> None:
    src = nfs.new_dir(nfs.root, b"src")
    dst = nfs.new_dir(nfs.root, b"dst")
    fh = nfs.new_file(src, b"f", b"payload")
    inner = nfs.new_dir(src, b"sub")
    deep = nfs.new_file(inner, b"deep", b"deep data")
    src_prior, dst_prior = nfs.attr(src), nfs.attr(dst)
    res = nfs.must(nfs.rename(src, b"f", dst, b"g"))
    check_wcc(res.from_wcc, src_prior, nfs.attr(src))
    check_wcc(res.to_wcc, dst_prior, nfs.attr(dst))
    assert nfs.lookup(src, b"f").status == S.NOENT
    assert nfs.fh_of(dst, b"g") == fh
    assert nfs.must(nfs.read(fh, 0, 100)).data == b"payload"
    # a directory moves with everything in it; handles below it stay valid
    src_nlink, dst_nlink = nfs.attr(src).nlink, nfs.attr(dst).nlink
    nfs.must(nfs.rename(src, b"sub", dst, b"moved"))
    assert nfs.attr(src).nlink == src_nlink - 1 and nfs.attr(dst).nlink == dst_nlink + 1
    assert nfs.must(nfs.read(deep, 0, 100)).data == b"deep data"
    assert nfs.fh_of(inner, b"..") == dst
    assert nfs.fh_of(nfs.fh_of(dst, b"moved"), b"deep") == deep


def test_rename_errors(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"d")
    nfs.new_file(d, b"inside")
    e = nfs.new_dir(nfs.root, b"e")
    nfs.new_file(nfs.root, b"f")
    res = nfs.rename(nfs.root, b"missing", nfs.root, b"x")
    assert res.status == S.NOENT
    assert res.from_wcc.after is not None and res.to_wcc.after is not None
    assert nfs.rename(nfs.root, b"e", nfs.root, b"d").status in (S.NOTEMPTY, S.EXIST)
    assert nfs.rename(nfs.root, b"f", nfs.root, b"e").status in (S.ISDIR, S.EXIST)
    assert nfs.rename(nfs.root, b"e", nfs.root, b"f").status in (S.NOTDIR, S.EXIST)
    assert nfs.rename(nfs.root, b"d", d, b"loop").status == S.INVAL
    assert nfs.rename(nfs.root, b"f", nfs.root, b"n" * 256).status == S.NAMETOOLONG
    assert nfs.rename(nfs.root, b"f", e, b"..").status in (S.INVAL, S.EXIST)
    fh = nfs.fh_of(nfs.root, b"f")
    assert nfs.rename(fh, b"x", nfs.root, b"y").status == S.NOTDIR
    nfs.must(nfs.rename(nfs.root, b"e", d, b"ok"))  # empty dir into a dir


# -- LINK ------------------------------------------------------------------------------------


def test_link(nfs: Nfs3) -> None:
    fh = nfs.new_file(nfs.root, b"f", b"shared")
    d = nfs.new_dir(nfs.root, b"d")
    prior = nfs.attr(d)
    res = nfs.must(nfs.link(fh, d, b"alias"))
    check_wcc(res.dir_wcc, prior, nfs.attr(d))
    assert res.attr is not None and res.attr.nlink == 2
    assert nfs.attr(fh).nlink == 2
    assert nfs.fh_of(d, b"alias") == fh
    res = nfs.link(fh, d, b"alias")
    assert res.status == S.EXIST
    assert res.attr is not None and res.dir_wcc.after is not None
    nfs.must(nfs.remove(nfs.root, b"f"))  # the other name keeps the file
    assert nfs.attr(fh).nlink == 1
    assert nfs.must(nfs.read(fh, 0, 10)).data == b"shared"
    nfs.must(nfs.remove(d, b"alias"))
    assert nfs.getattr(fh).status == S.STALE


def test_link_errors(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"d")
    fh = nfs.new_file(nfs.root, b"f")
    assert nfs.link(d, nfs.root, b"dirlink").status in (S.ISDIR, S.PERM, S.INVAL)
    assert nfs.link(fh, fh, b"x").status == S.NOTDIR
    assert nfs.link(fh, d, b"l" * 256).status == S.NAMETOOLONG
    with nfs.as_user(USER, GROUP):
        assert nfs.link(fh, d, b"x").status == S.ACCES


# -- READDIR, READDIRPLUS --------------------------------------------------------------------

BIG = 5000


def make_big_dir(nfs: Nfs3, n: int = BIG) -> tuple[bytes, set[bytes]]:
    d = nfs.new_dir(nfs.root, b"big")
    names = {b"entry-%05d" % i for i in range(n)}
    for name in sorted(names):
        nfs.must(nfs.create(d, name, CreateMode.GUARDED))
    return d, names


def check_pages(entries: list[DirEntry], replies: list[Res], names: set[bytes]) -> None:
    counts = collections.Counter(e.name for e in entries)
    dupes = [n for n, c in counts.items() if c > 1]
    assert not dupes, f"names listed more than once: {dupes[:10]}"
    assert set(counts) == names
    cookies = [e.cookie for e in entries]
    assert 0 not in cookies and len(set(cookies)) == len(cookies)
    assert len(replies) > 50, "a small count must take many calls"
    verfs = {r.verf for r in replies}
    assert len(verfs) == 1 and verfs != {ZERO_VERF}, f"cookie verifiers: {verfs}"
    assert [r.eof for r in replies].count(True) == 1 and replies[-1].eof


# Paging is the service's (sans-IO); 5,000 CREATEs take ~10 s a model, so the two listings
# of 5,000 run on the in-thread server, and the 600-entry one below over every model.
@pytest.mark.in_process
def test_readdir_5000_entries(nfs: Nfs3) -> None:
    d, names = make_big_dir(nfs)
    entries, replies = listing(nfs, d, plus=False, count=1024)
    check_pages(entries, replies, names)
    for e in entries[::250]:
        assert nfs.must(nfs.lookup(d, e.name)).attr.fileid == e.fileid
    # resuming at any cookie (with the verifier) gives the same continuation again
    verf = replies[0].verf
    for i in (0, 1, 777, BIG - 2):
        res = nfs.must(nfs.readdir(d, entries[i].cookie, verf, count=1024))
        got = [e.name for e in res.entries]
        assert got == [e.name for e in entries[i + 1 : i + 1 + len(got)]] and got
    last = nfs.must(nfs.readdir(d, entries[-1].cookie, verf, count=1024))
    assert last.entries == [] and last.eof


@pytest.mark.in_process
def test_readdirplus_5000_entries(nfs: Nfs3) -> None:
    d, names = make_big_dir(nfs)
    entries, replies = listing(nfs, d, plus=True, count=1024)
    check_pages(entries, replies, names)
    for e in entries:
        assert e.handle is not None and e.attr is not None
        assert e.attr.fileid == e.fileid and e.attr.type == Ftype3.REG
    for e in entries[::50]:
        assert e.attr.same_file_state(nfs.attr(e.handle)), e.name
        assert nfs.fh_of(d, e.name) == e.handle


def test_readdirplus_pages_fill_maxcount_whatever_dircount(nfs: Nfs3) -> None:
    """Linux asks READDIRPLUS for dircount = maxcount / 8; as knfsd does, a page is filled
    up to maxcount (issue 20: honouring dircount halved the pages and doubled the calls),
    and never beyond it."""
    d, names = make_big_dir(nfs, 300)
    maxcount = 8192
    res = nfs.must(nfs.readdirplus(d, dircount=maxcount // 8, maxcount=maxcount))
    assert nfs.last_result_size <= maxcount
    name_bytes = sum(8 + 4 + 4 + 8 + ((len(e.name) + 3) & ~3) for e in res.entries)
    assert name_bytes > maxcount // 8, f"{len(res.entries)} entries: dircount still limits"
    assert nfs.last_result_size > maxcount * 3 // 4, "the page is not filled"
    entries, _ = listing(nfs, d, plus=True, count=maxcount // 8)  # maxcount 4 x dircount
    assert sorted(e.name for e in entries) == sorted(names)


def test_readdir_entry_created_between_pages(nfs: Nfs3) -> None:
    d, names = make_big_dir(nfs, 600)
    added: list[bytes] = []

    for plus in (False, True):

        def between(page: int, plus: bool = plus) -> None:
            if page % 5 == 0:
                name = b"late-%d-%03d" % (plus, page)
                nfs.must(nfs.create(d, name, CreateMode.GUARDED))
                added.append(name)

        added.clear()
        entries, _ = listing(nfs, d, plus=plus, count=512, between=between)
        counts = collections.Counter(e.name for e in entries)
        assert all(c == 1 for c in counts.values()), [n for n, c in counts.items() if c > 1]
        assert names <= set(counts), "a name present all along was skipped"
        assert set(counts) <= names | set(added)
        assert len(added) > 3
        names |= set(added)


def test_readdir_small_directory_and_errors(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"d", mode=0o700)
    res = nfs.must(nfs.readdir(d))
    assert res.eof and {e.name for e in res.entries} <= {b".", b".."}
    fh = nfs.new_file(d, b"a-file-with-a-long-enough-name")
    res = nfs.must(nfs.readdirplus(d))
    by_name = {e.name: e for e in res.entries}
    assert by_name[b"a-file-with-a-long-enough-name"].handle == fh
    res = nfs.readdir(d, count=40)
    assert res.status == S.TOOSMALL and res.dir_attr is not None
    assert nfs.readdirplus(d, dircount=40, maxcount=60).status == S.TOOSMALL
    res = nfs.readdir(fh)
    assert res.status == S.NOTDIR and res.dir_attr is not None
    assert nfs.readdirplus(fh).status == S.NOTDIR
    with nfs.as_user(USER, GROUP):
        assert nfs.readdir(d).status == S.ACCES
        assert nfs.readdirplus(d).status == S.ACCES


# -- FSSTAT, FSINFO, PATHCONF ----------------------------------------------------------------


def test_fsstat(nfs: Nfs3, server: RunningServer) -> None:
    res = nfs.must(nfs.fsstat(nfs.root))
    assert res.attr is not None and res.attr.type == Ftype3.DIR
    assert 0 < res.fbytes <= res.tbytes and res.abytes <= res.tbytes
    assert 0 < res.ffiles <= res.tfiles and res.afiles <= res.tfiles
    if server.root is not None:
        v = os.statvfs(server.root)
        assert res.tbytes == v.f_blocks * v.f_frsize
        assert res.tfiles == v.f_files
    else:
        fh = nfs.new_file(nfs.root, b"f")
        nfs.must(nfs.write(fh, 0, b"x" * MiB))
        later = nfs.must(nfs.fsstat(fh))
        assert later.fbytes <= res.fbytes - MiB and later.ffiles == res.ffiles - 1


def test_fsinfo(nfs: Nfs3) -> None:
    res = nfs.must(nfs.fsinfo(nfs.root))
    assert res.attr is not None
    assert res.rtmax >= MiB and res.wtmax >= MiB
    assert 0 < res.rtpref <= res.rtmax and 0 < res.wtpref <= res.wtmax
    assert res.rtmult > 0 and res.wtmult > 0 and res.dtpref > 0
    assert res.maxfilesize >= 1 << 40
    assert 0 < res.time_delta <= SEC
    props = FsProperties(res.properties)
    assert FsProperties.LINK in props and FsProperties.SYMLINK in props
    assert FsProperties.CANSETTIME in props


def test_pathconf(nfs: Nfs3) -> None:
    res = nfs.must(nfs.pathconf(nfs.root))
    assert res.attr is not None and res.attr.type == Ftype3.DIR
    assert res.linkmax > 1 and res.name_max == 255
    assert res.no_trunc and res.case_preserving and not res.case_insensitive
    nfs.must(nfs.create(nfs.root, b"n" * res.name_max))
    assert nfs.create(nfs.root, b"n" * (res.name_max + 1)).status == S.NAMETOOLONG


# -- wcc on every modifying procedure --------------------------------------------------------


def test_every_modifying_procedure_returns_wcc(nfs: Nfs3) -> None:
    d = nfs.new_dir(nfs.root, b"d")
    fh = nfs.new_file(d, b"f", b"abc")
    other = nfs.new_dir(nfs.root, b"o")
    steps: list[tuple[str, bytes, Callable[[], Res], str]] = [
        ("SETATTR", fh, lambda: nfs.setattr(fh, SetAttr(mode=0o600)), "wcc"),
        ("WRITE", fh, lambda: nfs.write(fh, 3, b"def", StableHow.UNSTABLE), "wcc"),
        ("COMMIT", fh, lambda: nfs.commit(fh), "wcc"),
        ("CREATE", d, lambda: nfs.create(d, b"c"), "dir_wcc"),
        ("MKDIR", d, lambda: nfs.mkdir(d, b"m"), "dir_wcc"),
        ("SYMLINK", d, lambda: nfs.symlink(d, b"s", b"f"), "dir_wcc"),
        ("MKNOD", d, lambda: nfs.mknod(d, b"p", Ftype3.FIFO), "dir_wcc"),
        ("LINK", d, lambda: nfs.link(fh, d, b"hard"), "dir_wcc"),
        ("REMOVE", d, lambda: nfs.remove(d, b"hard"), "dir_wcc"),
        ("RMDIR", d, lambda: nfs.rmdir(d, b"m"), "dir_wcc"),
        ("RENAME", d, lambda: nfs.rename(d, b"c", other, b"c"), "from_wcc"),
    ]
    for proc, obj, call, key in steps:
        if proc != "COMMIT":
            old_times(nfs, obj)
        prior = nfs.attr(obj)
        res = nfs.must(call())
        now = nfs.attr(obj)
        wcc: Wcc = getattr(res, key)
        assert wcc.complete, f"{proc}: {wcc}"
        check_wcc(wcc, prior, now)
        if proc not in ("SETATTR", "COMMIT"):
            assert now.mtime > prior.mtime, f"{proc} did not change mtime"
        if proc == "RENAME":
            assert res.to_wcc.complete


# -- read-only export ------------------------------------------------------------------------


def test_read_only_export(servers: Servers) -> None:
    srv = servers.start(read_only=True)
    backend = srv.app.exports[0].backend.inner  # seed content behind the ReadOnly wrapper
    root = backend.root()
    fid = backend.create(root, b"f", SetAttr(mode=0o644), False)
    backend.write(fid, 0, memoryview(b"content"), StableHow.FILE_SYNC)
    backend.mkdir(root, b"d", SetAttr(mode=0o755))
    nfs = servers.connect(srv)
    fh, d = nfs.fh_of(nfs.root, b"f"), nfs.fh_of(nfs.root, b"d")
    assert nfs.must(nfs.read(fh, 0, 100)).data == b"content"
    nfs.must(nfs.readdirplus(nfs.root))
    granted = nfs.must(nfs.access(fh, ALL_ACCESS)).access
    assert granted == Access.READ
    assert nfs.must(nfs.access(d, ALL_ACCESS)).access == Access.READ | Access.LOOKUP
    refused = {
        "SETATTR": nfs.setattr(fh, SetAttr(mode=0o600)),
        "WRITE": nfs.write(fh, 0, b"x"),
        "CREATE": nfs.create(nfs.root, b"new"),
        "MKDIR": nfs.mkdir(nfs.root, b"new"),
        "SYMLINK": nfs.symlink(nfs.root, b"new", b"f"),
        "MKNOD": nfs.mknod(nfs.root, b"new", Ftype3.FIFO),
        "REMOVE": nfs.remove(nfs.root, b"f"),
        "RMDIR": nfs.rmdir(nfs.root, b"d"),
        "RENAME": nfs.rename(nfs.root, b"f", nfs.root, b"g"),
        "LINK": nfs.link(fh, nfs.root, b"g"),
    }
    assert {k: r.status for k, r in refused.items()} == dict.fromkeys(refused, S.ROFS)
    assert nfs.must(nfs.read(fh, 0, 100)).data == b"content"
    assert nfs.attr(fh).mode == 0o644


@pytest.mark.parametrize("backend", ["local"])  # the backend that reads a page in one batch
def test_readdirplus_on_a_read_only_export_reads_attributes_in_one_batch(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ReadOnly wrapper passes ``attrs_in`` through: a READDIRPLUS page costs the local
    backend one directory descriptor, not one getattr (a path walk) per entry."""
    srv = servers.start(read_only=True)
    inner = srv.app.exports[0].backend.inner
    root = inner.root()
    made = {inner.create(root, b"f%d" % i, SetAttr(mode=0o644), False) for i in range(20)}
    nfs = servers.connect(srv)
    asked: list[int] = []
    getattr_ = type(inner).getattr

    def counting(self: object, fid: int) -> object:
        asked.append(fid)
        return getattr_(self, fid)  # type: ignore[arg-type]

    monkeypatch.setattr(type(inner), "getattr", counting)
    res = nfs.must(nfs.readdirplus(nfs.root))
    listed = {e.fileid: e for e in res.entries if e.name not in (b".", b"..")}
    assert set(listed) == made and all(e.attr is not None for e in listed.values())
    assert made.isdisjoint(asked), f"{len(made & set(asked))} entries read one by one"


# -- edges found while writing these tests ---------------------------------------------------


def test_offsets_beyond_maxfilesize(nfs: Nfs3) -> None:
    """Offsets are unsigned 64-bit on the wire; past maxfilesize a READ is at end of file
    and a WRITE or size change is FBIG, never an RPC-level failure."""
    maxsize = nfs.must(nfs.fsinfo(nfs.root)).maxfilesize
    fh = nfs.new_file(nfs.root, b"f", b"abc")
    for offset in (maxsize + 1, 1 << 63, (1 << 64) - 1):
        res = nfs.must(nfs.read(fh, offset, 10))
        assert (res.count, res.eof, res.data) == (0, True, b"")
        res = nfs.write(fh, offset, b"x")
        assert res.status == S.FBIG and res.wcc.after is not None
    assert nfs.write(fh, maxsize, b"xy").status in (S.FBIG, S.NOSPC)
    assert nfs.setattr(fh, SetAttr(size=1 << 63)).status == S.FBIG
    res = nfs.create(nfs.root, b"g", CreateMode.UNCHECKED, SetAttr(size=(1 << 64) - 1))
    assert res.status == S.FBIG
    assert nfs.attr(fh).size == 3


def test_create_exclusive_with_high_verifier_bits(nfs: Nfs3) -> None:
    """Verifiers whose halves do not fit a signed 32-bit time still retransmit correctly."""
    for i, verf in enumerate((b"\xff" * 8, b"\x80\0\0\0\x80\0\0\0", b"\0" * 8)):
        name = b"x%d" % i
        fh = nfs.must(nfs.create(nfs.root, name, CreateMode.EXCLUSIVE, verf=verf)).fh
        again = nfs.must(nfs.create(nfs.root, name, CreateMode.EXCLUSIVE, verf=verf))
        assert again.fh == fh


def test_setgid_directory_passes_on_its_group(nfs: Nfs3) -> None:
    proj = nfs.new_dir(nfs.root, b"proj", mode=0o2777)
    nfs.must(nfs.setattr(proj, SetAttr(gid=600, mode=0o2777)))
    assert nfs.attr(proj).mode == 0o2777
    with nfs.as_user(USER, GROUP, (600,)):
        f = nfs.new_file(proj, b"f")
        sub = nfs.new_dir(proj, b"sub", mode=0o775)
    assert (nfs.attr(f).uid, nfs.attr(f).gid) == (USER, 600)
    sub_attr = nfs.attr(sub)
    assert sub_attr.gid == 600 and sub_attr.mode == 0o2775
    plain = nfs.new_dir(nfs.root, b"plain", mode=0o777)
    with nfs.as_user(USER, GROUP, (600,)):
        g = nfs.new_file(plain, b"g")
    assert nfs.attr(g).gid == GROUP


def test_handle_of_removed_file_stays_stale_after_inode_reuse(nfs: Nfs3) -> None:
    """A removed file's handle must never come to name a different file (RFC 1813 section
    2.3.3: STALE), even when the file system reuses the inode number."""
    for i in range(20):
        old = nfs.new_file(nfs.root, b"old%d" % i, b"old")
        old_attr = nfs.attr(old)
        nfs.must(nfs.remove(nfs.root, b"old%d" % i))
        new = nfs.new_file(nfs.root, b"new%d" % i, b"new data")
        res = nfs.getattr(old)
        assert res.status == S.STALE, (
            f"old handle answers {res.status.name} (reused: {new == old}, fileid {old_attr.fileid})"
        )


def test_create_with_server_times(nfs: Nfs3) -> None:
    """CREATE's sattr3 SET_TO_SERVER_TIME is now, never the -1 that stands for it."""
    start = time.time_ns() - 5 * 10**9
    res = nfs.must(
        nfs.create(
            nfs.root,
            b"s",
            CreateMode.UNCHECKED,
            SetAttr(atime_ns=SERVER_TIME, mtime_ns=SERVER_TIME),
        )
    )
    attr = nfs.attr(res.fh)
    assert attr.atime >= start and attr.mtime >= start

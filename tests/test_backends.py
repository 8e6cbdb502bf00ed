"""Backend conformance: every test runs against MemoryBackend and LocalBackend."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ferry.backends import (
    SERVER_TIME,
    Backend,
    LocalBackend,
    MemoryBackend,
    ReadOnly,
    SetAttr,
    load_backend,
)
from ferry.backends.base import ReadOnlyBackend
from ferry.errors import ConfigError
from ferry.nfs3.const import Ftype3, Nfsstat3, StableHow
from ferry.testing import check_backend, names, open_fds, raises_status
from ferry.vocab import DirEntry, attr_row

S = Nfsstat3
SYNC = StableHow.FILE_SYNC
IS_ROOT = os.geteuid() == 0

Factory = Callable[[], Backend]


@pytest.fixture(params=["memory", "local"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str, tmp_path: Path) -> Iterator[Factory]:
    """Builds backends over the same storage (LocalBackend: same root and state_dir)."""
    made: list[Backend] = []
    export = tmp_path / "export"
    export.mkdir()
    memory = MemoryBackend()

    def factory() -> Backend:
        b: Backend = memory if kind == "memory" else LocalBackend(export, tmp_path / "state")
        made.append(b)
        return b

    yield factory
    for b in made:
        b.close()


@pytest.fixture
def b(make: Factory) -> Backend:
    return make()


def mkfile(b: Backend, d: int, name: bytes, data: bytes = b"", mode: int = 0o644) -> int:
    fid = b.create(d, name, SetAttr(mode=mode), exclusive=True)
    if data:
        b.write(fid, 0, memoryview(data), SYNC)
    return fid


# -- basics ---------------------------------------------------------------------------------


def test_check_backend_tour(b: Backend) -> None:
    check_backend(b)


def test_root(b: Backend) -> None:
    root = b.root()
    a = b.getattr(root)
    assert a.type is Ftype3.DIR and a.fileid == root and a.nlink == 2
    assert b.lookup(root, b"..") == root
    assert b.lookup(root, b".") == root


def test_create_defaults_and_attrs(b: Backend) -> None:
    root = b.root()
    f = b.create(root, b"f", SetAttr(), exclusive=False)
    a = b.getattr(f)
    assert (a.type, a.mode, a.nlink, a.size, a.fileid) == (Ftype3.REG, 0o644, 1, 0, f)
    g = b.create(root, b"g", SetAttr(mode=0o4751, size=10), exclusive=True)
    a = b.getattr(g)
    assert (a.mode, a.size) == (0o4751, 10)
    d = b.mkdir(root, b"d", SetAttr())
    assert b.getattr(d).mode == 0o755


def test_create_owner(b: Backend) -> None:
    if not IS_ROOT and isinstance(b, LocalBackend):
        pytest.skip("only root can give files away")
    root = b.root()
    f = b.create(root, b"f", SetAttr(uid=1234, gid=5678), exclusive=True)
    d = b.mkdir(root, b"d", SetAttr(uid=42, gid=43))
    lnk = b.symlink(root, b"l", b"f", SetAttr(uid=7, gid=8))
    assert (b.getattr(f).uid, b.getattr(f).gid) == (1234, 5678)
    assert (b.getattr(d).uid, b.getattr(d).gid) == (42, 43)
    assert (b.getattr(lnk).uid, b.getattr(lnk).gid) == (7, 8)


def test_exclusive_create_exists(b: Backend) -> None:
    root = b.root()
    mkfile(b, root, b"f")
    with raises_status(S.EXIST):
        b.create(root, b"f", SetAttr(), exclusive=True)
    b.mkdir(root, b"d", SetAttr())
    for exclusive in (True, False):
        with raises_status(S.EXIST):
            b.create(root, b"d", SetAttr(), exclusive=exclusive)


def test_unchecked_create_opens_and_truncates(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, root, b"f", b"data")
    assert b.create(root, b"f", SetAttr(), exclusive=False) == f
    assert b.getattr(f).size == 4
    assert b.create(root, b"f", SetAttr(size=0), exclusive=False) == f
    assert b.getattr(f).size == 0


def test_name_taken(b: Backend) -> None:
    root = b.root()
    mkfile(b, root, b"x")
    with raises_status(S.EXIST):
        b.mkdir(root, b"x", SetAttr())
    with raises_status(S.EXIST):
        b.symlink(root, b"x", b"t", SetAttr())
    with raises_status(S.EXIST):
        b.mknod(root, b"x", Ftype3.FIFO, SetAttr(), (0, 0))


def test_lookup_errors(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, root, b"f")
    with raises_status(S.NOENT):
        b.lookup(root, b"missing")
    with raises_status(S.NOTDIR):
        b.lookup(f, b"x")
    with raises_status(S.NOTDIR):
        b.readdir(f)


def test_lookup_dotdot(b: Backend) -> None:
    root = b.root()
    d = b.mkdir(root, b"d", SetAttr())
    e = b.mkdir(d, b"e", SetAttr())
    assert b.lookup(e, b"..") == d
    assert b.lookup(d, b"..") == root
    assert b.lookup(d, b"e") == e


# -- data -----------------------------------------------------------------------------------


def test_read_write(b: Backend) -> None:
    f = mkfile(b, b.root(), b"f")
    for stable in StableHow:
        got = b.write(f, 0, memoryview(b"0123456789"), stable)
        assert got >= stable
    assert b.read(f, 0, 4) == (b"0123", False)
    assert b.read(f, 6, 4) == (b"6789", True)
    assert b.read(f, 8, 100) == (b"89", True)
    assert b.read(f, 100, 10) == (b"", True)
    b.write(f, 2, memoryview(b"ab"), StableHow.UNSTABLE)
    b.commit(f, 0, 0)
    assert b.read(f, 0, 100) == (b"01ab456789", True)


def test_sparse_write(b: Backend) -> None:
    f = mkfile(b, b.root(), b"f", b"ab")
    b.write(f, 10_000, memoryview(b"z"), SYNC)
    a = b.getattr(f)
    assert a.size == 10_001
    data, eof = b.read(f, 0, 20_000)
    assert eof and data == b"ab" + bytes(9_998) + b"z"


def test_used_and_size(b: Backend) -> None:
    f = mkfile(b, b.root(), b"f", b"x" * 5000)
    a = b.getattr(f)
    assert a.size == 5000 and a.used >= 5000


def test_read_write_wrong_type(b: Backend) -> None:
    root = b.root()
    lnk = b.symlink(root, b"l", b"target", SetAttr())
    fifo = b.mknod(root, b"p", Ftype3.FIFO, SetAttr(), (0, 0))
    with raises_status(S.ISDIR):
        b.read(root, 0, 10)
    with raises_status(S.ISDIR):
        b.write(root, 0, memoryview(b"x"), SYNC)
    for fid in (lnk, fifo):
        with raises_status(S.INVAL):
            b.read(fid, 0, 10)
        with raises_status(S.INVAL):
            b.write(fid, 0, memoryview(b"x"), SYNC)


def test_write_times(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, root, b"f")
    before = b.getattr(f)
    time.sleep(0.01)
    b.write(f, 0, memoryview(b"x"), SYNC)
    after = b.getattr(f)
    assert after.mtime_ns > before.mtime_ns and after.ctime_ns > before.ctime_ns


# -- setattr --------------------------------------------------------------------------------


def test_setattr(b: Backend) -> None:
    f = mkfile(b, b.root(), b"f", b"hello world")
    ctime = b.getattr(f).ctime_ns
    time.sleep(0.01)
    b.setattr(f, SetAttr(mode=0o600))
    a = b.getattr(f)
    assert a.mode == 0o600 and a.ctime_ns > ctime
    b.setattr(f, SetAttr(size=5))
    assert b.read(f, 0, 100) == (b"hello", True)
    b.setattr(f, SetAttr(size=8))
    assert b.read(f, 0, 100) == (b"hello\0\0\0", True)
    b.setattr(f, SetAttr(atime_ns=1_000_000_000, mtime_ns=2_000_000_007))
    a = b.getattr(f)
    assert (a.atime_ns, a.mtime_ns) == (1_000_000_000, 2_000_000_007)
    b.setattr(f, SetAttr(mtime_ns=SERVER_TIME))
    a = b.getattr(f)
    assert a.atime_ns == 1_000_000_000 and abs(a.mtime_ns - time.time_ns()) < 10**10


def test_setattr_through_a_cached_descriptor_is_stale_once_the_file_is_gone(
    make: Factory,
) -> None:
    """Two servers (worker processes) over one directory: one holds a descriptor of a file
    it made, the other removes a name of it. While the file has a link left, a SETATTR
    through the descriptor changes it (the other name shows it); once none is left, STALE,
    as for a file with no descriptor cached, and nothing changed."""
    one, other = make(), make()
    root = one.root()
    f = mkfile(one, root, b"f", b"x")  # one now caches a descriptor of f
    other.link(f, root, b"g")
    other.remove(root, b"f")
    one.setattr(f, SetAttr(mode=0o600, mtime_ns=4_000_000_000))
    a = other.getattr(other.lookup(root, b"g"))
    assert (a.mode, a.mtime_ns) == (0o600, 4_000_000_000)
    other.remove(root, b"g")
    for change in (SetAttr(mode=0o640), SetAttr(mtime_ns=5_000_000_000), SetAttr(uid=0)):
        with raises_status(S.STALE):
            one.setattr(f, change)


def test_setattr_owner(b: Backend) -> None:
    if not IS_ROOT and isinstance(b, LocalBackend):
        pytest.skip("only root can give files away")
    root = b.root()
    f = mkfile(b, root, b"f")
    gid = b.getattr(f).gid
    b.setattr(f, SetAttr(uid=99))
    assert (b.getattr(f).uid, b.getattr(f).gid) == (99, gid)
    lnk = b.symlink(root, b"l", b"f", SetAttr())
    b.setattr(lnk, SetAttr(uid=5, gid=6))
    assert (b.getattr(lnk).uid, b.getattr(lnk).gid) == (5, 6)
    assert b.getattr(f).uid == 99  # the symlink was not followed


def test_setattr_root_and_dirs(b: Backend) -> None:
    root = b.root()
    b.setattr(root, SetAttr(mode=0o700, mtime_ns=3_000_000_000))
    a = b.getattr(root)
    assert (a.mode, a.mtime_ns) == (0o700, 3_000_000_000)
    with raises_status(S.ISDIR):
        b.setattr(root, SetAttr(size=0))


def test_setattr_special_files(b: Backend) -> None:
    root = b.root()
    fifo = b.mknod(root, b"p", Ftype3.FIFO, SetAttr(mode=0o600), (0, 0))
    b.setattr(fifo, SetAttr(mode=0o640, atime_ns=5, mtime_ns=6))
    a = b.getattr(fifo)
    assert (a.mode, a.atime_ns, a.mtime_ns) == (0o640, 5, 6)


# -- special files --------------------------------------------------------------------------


def test_symlink(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, root, b"f", b"data")
    lnk = b.symlink(root, b"l", b"f", SetAttr())
    assert lnk != f
    a = b.getattr(lnk)
    assert a.type is Ftype3.LNK and a.size == 1
    assert b.readlink(lnk) == b"f"
    assert b.lookup(root, b"l") == lnk
    with raises_status(S.INVAL):
        b.readlink(f)
    with raises_status(S.NOTDIR):
        b.lookup(lnk, b"x")
    weird = b"../../" + bytes(range(1, 47)) + bytes(range(48, 256))
    assert b.readlink(b.symlink(root, b"w", weird, SetAttr())) == weird


def test_mknod(b: Backend) -> None:
    root = b.root()
    fifo = b.mknod(root, b"fifo", Ftype3.FIFO, SetAttr(mode=0o600), (0, 0))
    sock = b.mknod(root, b"sock", Ftype3.SOCK, SetAttr(), (0, 0))
    assert b.getattr(fifo).type is Ftype3.FIFO and b.getattr(fifo).mode == 0o600
    assert b.getattr(sock).type is Ftype3.SOCK
    if IS_ROOT or isinstance(b, MemoryBackend):
        chr_ = b.mknod(root, b"null", Ftype3.CHR, SetAttr(mode=0o666), (1, 3))
        blk = b.mknod(root, b"blk", Ftype3.BLK, SetAttr(), (7, 200))
        assert b.getattr(chr_).type is Ftype3.CHR and b.getattr(chr_).rdev == (1, 3)
        assert b.getattr(blk).type is Ftype3.BLK and b.getattr(blk).rdev == (7, 200)
        assert b.getattr(chr_).mode == 0o666
    with raises_status(S.BADTYPE):
        b.mknod(root, b"x", Ftype3.REG, SetAttr(), (0, 0))


# -- remove / rmdir -------------------------------------------------------------------------


def test_remove_makes_stale(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, root, b"f", b"x")
    b.read(f, 0, 1)  # LocalBackend now caches a descriptor
    b.remove(root, b"f")
    for op in (lambda: b.getattr(f), lambda: b.read(f, 0, 1), lambda: b.setattr(f, SetAttr())):
        with raises_status(S.STALE):
            op()
    with raises_status(S.STALE):
        b.write(f, 0, memoryview(b"x"), SYNC)
    with raises_status(S.NOENT):
        b.remove(root, b"f")
    assert names(b, root) == set()


def test_remove_and_rmdir_types(b: Backend) -> None:
    root = b.root()
    d = b.mkdir(root, b"d", SetAttr())
    mkfile(b, d, b"f")
    with raises_status(S.ISDIR, S.PERM):
        b.remove(root, b"d")
    with raises_status(S.NOTDIR):
        b.rmdir(d, b"f")
    with raises_status(S.NOTEMPTY, S.EXIST):
        b.rmdir(root, b"d")
    with raises_status(S.NOENT):
        b.rmdir(root, b"nope")
    b.remove(d, b"f")
    b.rmdir(root, b"d")
    with raises_status(S.STALE):
        b.getattr(d)
    assert b.getattr(root).nlink == 2


def test_dir_nlink(b: Backend) -> None:
    root = b.root()
    d = b.mkdir(root, b"d", SetAttr())
    b.mkdir(d, b"e", SetAttr())
    b.mkdir(root, b"x", SetAttr())
    mkfile(b, d, b"f")
    assert b.getattr(root).nlink == 4
    assert b.getattr(d).nlink == 3
    b.rename(d, b"e", root, b"e")
    assert b.getattr(root).nlink == 5 and b.getattr(d).nlink == 2
    b.rmdir(root, b"x")
    assert b.getattr(root).nlink == 4


def test_entry_changes_touch_parent(b: Backend) -> None:
    root = b.root()
    d = b.mkdir(root, b"d", SetAttr())
    for op in (
        lambda: mkfile(b, d, b"f"),
        lambda: b.rename(d, b"f", d, b"g"),
        lambda: b.link(b.lookup(d, b"g"), d, b"h"),
        lambda: b.remove(d, b"h"),
        lambda: b.mkdir(d, b"sub", SetAttr()),
        lambda: b.rmdir(d, b"sub"),
    ):
        before = b.getattr(d)
        time.sleep(0.01)
        op()
        after = b.getattr(d)
        assert after.mtime_ns > before.mtime_ns and after.ctime_ns > before.ctime_ns


# -- hard links -----------------------------------------------------------------------------


def test_hard_links(b: Backend) -> None:
    root = b.root()
    d = b.mkdir(root, b"d", SetAttr())
    f = mkfile(b, root, b"f", b"shared")
    ctime = b.getattr(f).ctime_ns
    time.sleep(0.01)
    b.link(f, d, b"g")
    assert b.lookup(d, b"g") == f
    a = b.getattr(f)
    assert a.nlink == 2 and a.ctime_ns > ctime
    with raises_status(S.EXIST):
        b.link(f, d, b"g")
    b.remove(root, b"f")
    assert b.getattr(f).nlink == 1
    assert b.read(f, 0, 10) == (b"shared", True)
    with raises_status(S.PERM, S.ISDIR):
        b.link(d, root, b"dirlink")
    b.remove(d, b"g")
    with raises_status(S.STALE):
        b.getattr(f)


# -- rename ---------------------------------------------------------------------------------


def test_rename_basic_keeps_fileid(b: Backend) -> None:
    root = b.root()
    d = b.mkdir(root, b"d", SetAttr())
    f = mkfile(b, root, b"f", b"content")
    b.rename(root, b"f", d, b"g")
    assert b.lookup(d, b"g") == f
    assert b.getattr(f).fileid == f
    assert b.read(f, 0, 100) == (b"content", True)
    with raises_status(S.NOENT):
        b.lookup(root, b"f")
    with raises_status(S.NOENT):
        b.rename(root, b"f", d, b"h")


def test_rename_replaces_file(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, root, b"f", b"new")
    g = mkfile(b, root, b"g", b"old")
    b.read(g, 0, 3)
    b.rename(root, b"f", root, b"g")
    assert b.lookup(root, b"g") == f
    assert b.read(f, 0, 10) == (b"new", True)
    with raises_status(S.STALE):
        b.getattr(g)
    with raises_status(S.STALE):
        b.read(g, 0, 10)
    assert names(b, root) == {b"g"}


def test_rename_directories(b: Backend) -> None:
    root = b.root()
    a = b.mkdir(root, b"a", SetAttr())
    empty = b.mkdir(root, b"empty", SetAttr())
    full = b.mkdir(root, b"full", SetAttr())
    mkfile(b, full, b"x")
    f = mkfile(b, root, b"f")
    with raises_status(S.NOTEMPTY, S.EXIST):
        b.rename(root, b"a", root, b"full")
    with raises_status(S.NOTDIR):
        b.rename(root, b"a", root, b"f")
    with raises_status(S.ISDIR):
        b.rename(root, b"f", root, b"empty")
    b.rename(root, b"a", root, b"empty")
    assert b.lookup(root, b"empty") == a
    with raises_status(S.STALE):
        b.getattr(empty)
    assert b.getattr(root).nlink == 4
    assert b.getattr(f).nlink == 1


def test_rename_into_own_subtree(b: Backend) -> None:
    root = b.root()
    a = b.mkdir(root, b"a", SetAttr())
    c = b.mkdir(a, b"c", SetAttr())
    with raises_status(S.INVAL):
        b.rename(root, b"a", c, b"x")
    with raises_status(S.INVAL):
        b.rename(root, b"a", a, b"x")
    assert b.lookup(root, b"a") == a


def test_rename_onto_itself(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, root, b"f", b"x")
    b.rename(root, b"f", root, b"f")
    assert b.lookup(root, b"f") == f
    b.link(f, root, b"g")
    b.rename(root, b"f", root, b"g")  # two links to one file: nothing happens
    assert names(b, root) == {b"f", b"g"} and b.getattr(f).nlink == 2


def test_rename_directory_moves_descendants(b: Backend) -> None:
    root = b.root()
    a = b.mkdir(root, b"a", SetAttr())
    c = b.mkdir(a, b"c", SetAttr())
    f = mkfile(b, c, b"f", b"deep")
    b.rename(root, b"a", root, b"z")
    assert b.read(f, 0, 10) == (b"deep", True)
    assert b.lookup(c, b"..") == a
    assert b.getattr(c).type is Ftype3.DIR


# -- readdir --------------------------------------------------------------------------------


def test_readdir(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, root, b"f")
    d = b.mkdir(root, b"d", SetAttr())
    lnk = b.symlink(root, b"l", b"/etc/passwd", SetAttr())
    entries = {e.name: e.fileid for e in b.readdir(root)}
    assert entries == {b"f": f, b"d": d, b"l": lnk}
    plus = {e.name: e for e in b.readdir_plus(root)}
    assert set(plus) == {b"f", b"d", b"l"}
    for name, e in plus.items():
        assert e.attr is not None and e.attr.fileid == entries[name] == e.fileid
    assert plus[b"l"].attr is not None and plus[b"l"].attr.type is Ftype3.LNK


def test_readdir_large(b: Backend) -> None:
    root = b.root()
    d = b.mkdir(root, b"big", SetAttr())
    want = {}
    for i in range(5000):
        name = b"file-%05d" % i
        want[name] = b.create(d, name, SetAttr(), exclusive=True)
    assert {e.name: e.fileid for e in b.readdir(d)} == want
    plus = list(b.readdir_plus(d))
    assert len(plus) == 5000 and all(e.attr and e.attr.fileid == e.fileid for e in plus)


def test_odd_names(b: Backend) -> None:
    root = b.root()
    for name in (b"\xff\xfe not utf8", b"sp ace", b"x" * 255, "ünïcødé".encode()):
        fid = mkfile(b, root, name)
        assert b.lookup(root, name) == fid
        assert name in names(b, root)


# -- fsstat / ReadOnly / loader -------------------------------------------------------------


def test_fsstat(b: Backend) -> None:
    s = b.fsstat(b.root())
    assert s.total_bytes >= s.free_bytes >= 0 and s.total_files > 0


def test_memory_capacity() -> None:
    m = MemoryBackend(capacity=8192, max_files=4)
    f = mkfile(m, m.root(), b"f", b"x" * 8000)
    assert m.fsstat(f).free_bytes == 0
    with raises_status(S.NOSPC):
        m.write(f, 8192, memoryview(b"y"), SYNC)
    mkfile(m, m.root(), b"g")
    mkfile(m, m.root(), b"h")
    with raises_status(S.NOSPC):
        mkfile(m, m.root(), b"i")
    m.remove(m.root(), b"f")
    assert m.fsstat(m.root()).free_bytes == 8192


def test_readonly(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, root, b"f", b"data")
    ro = ReadOnly(b)
    assert ro.lookup(root, b"f") == f and ro.read(f, 0, 10) == (b"data", True)
    assert ro.getattr(f).size == 4 and names(ro, root) == {b"f"}
    assert [e.name for e in ro.readdir_plus(root)] == [b"f"]
    refused: list[Callable[[], object]] = [
        lambda: ro.write(f, 0, memoryview(b"x"), SYNC),
        lambda: ro.commit(f, 0, 0),
        lambda: ro.create(root, b"g", SetAttr(), False),
        lambda: ro.mkdir(root, b"g", SetAttr()),
        lambda: ro.symlink(root, b"g", b"t", SetAttr()),
        lambda: ro.mknod(root, b"g", Ftype3.FIFO, SetAttr(), (0, 0)),
        lambda: ro.remove(root, b"f"),
        lambda: ro.rmdir(root, b"f"),
        lambda: ro.rename(root, b"f", root, b"g"),
        lambda: ro.link(f, root, b"g"),
        lambda: ro.setattr(f, SetAttr(mode=0)),
    ]
    for op in refused:
        with raises_status(S.ROFS):
            op()
    assert b.read(f, 0, 10) == (b"data", True)


def test_load_backend() -> None:
    assert load_backend("ferry.backends.memory:MemoryBackend") is MemoryBackend
    for bad in ("nocolon", "no.such.module:X", "ferry.backends:Nope", "ferry.errors:NfsError"):
        with pytest.raises(ConfigError, match="backend"):
            load_backend(bad)


def test_concurrent_writes(b: Backend) -> None:
    root = b.root()
    fids = [mkfile(b, root, b"f%d" % i) for i in range(8)]

    def work(fid: int) -> None:
        for j in range(200):
            b.write(fid, j * 10, memoryview(b"%010d" % j), StableHow.UNSTABLE)
            b.read(fid, 0, 10)

    threads = [threading.Thread(target=work, args=(fid,)) for fid in fids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for fid in fids:
        data, _ = b.read(fid, 1990, 10)
        assert data == b"%010d" % 199


def test_no_fd_leak(make: Factory) -> None:
    before = open_fds()
    b = make()
    root = b.root()
    for i in range(200):
        f = mkfile(b, root, b"f%d" % i, b"x")
        b.read(f, 0, 1)
        b.getattr(f)
    for _ in b.readdir_plus(root):
        pass
    b.mkdir(root, b"d", SetAttr())
    b.rename(root, b"f0", root, b"d2")
    for i in range(1, 200):
        b.remove(root, b"f%d" % i)
    b.close()
    assert open_fds() == before


# -- LocalBackend specifics -----------------------------------------------------------------


@pytest.fixture
def export(tmp_path: Path) -> Path:
    p = tmp_path / "export"
    p.mkdir()
    return p


@pytest.fixture
def local(export: Path, tmp_path: Path) -> Iterator[LocalBackend]:
    with LocalBackend(export, tmp_path / "state") as lb:
        yield lb


def test_local_fileid_is_inode(local: LocalBackend, export: Path) -> None:
    f = mkfile(local, local.root(), b"f")
    assert local.root() == export.stat().st_ino
    assert f == (export / "f").stat().st_ino


def test_local_survives_restart(export: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with LocalBackend(export, state) as lb:
        d = lb.mkdir(lb.root(), b"d", SetAttr())
        e = lb.mkdir(d, b"e", SetAttr())
        f = mkfile(lb, e, b"f", b"persist")
        lb.rename(lb.root(), b"d", lb.root(), b"renamed")
    with LocalBackend(export, state) as lb:
        assert lb.read(f, 0, 100) == (b"persist", True)
        assert lb.lookup(e, b"..") == d
        assert lb.getattr(d).type is Ftype3.DIR


def test_local_finds_files_moved_behind_its_back(export: Path, tmp_path: Path) -> None:
    with LocalBackend(export, tmp_path / "state") as lb:
        d = lb.mkdir(lb.root(), b"d", SetAttr())
        f = mkfile(lb, d, b"f", b"moved")
        (export / "x" / "y").mkdir(parents=True)
        os.rename(export / "d", export / "x" / "y" / "d2")
        assert lb.getattr(f).size == 5
        assert lb.read(f, 0, 10) == (b"moved", True)
        assert lb.lookup(d, b"..") == (export / "x" / "y").stat().st_ino
        os.rename(export / "x" / "y" / "d2" / "f", export / "g")
        assert lb.lookup(lb.root(), b"g") == f
        lb.rename(lb.root(), b"g", d, b"back")
        assert (export / "x" / "y" / "d2" / "back").read_bytes() == b"moved"


def test_local_lost_state_rescans(export: Path, tmp_path: Path) -> None:
    with LocalBackend(export, tmp_path / "s1") as lb:
        d = lb.mkdir(lb.root(), b"d", SetAttr())
        f = mkfile(lb, d, b"f", b"found")
    with LocalBackend(export, tmp_path / "s2") as lb:  # fresh state
        assert lb.read(f, 0, 10) == (b"found", True)
        assert lb.lookup(d, b"f") == f
        with raises_status(S.STALE):
            lb.getattr(123456789)


def test_local_stale_after_external_delete(local: LocalBackend, export: Path) -> None:
    f = mkfile(local, local.root(), b"f", b"x")
    local.read(f, 0, 1)
    os.unlink(export / "f")
    with raises_status(S.STALE):
        local.read(f, 0, 1)
    with raises_status(S.STALE):
        local.getattr(f)


def test_local_symlink_outside_is_not_followed(
    local: LocalBackend, export: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "data").write_bytes(b"top secret")
    os.symlink(secret, export / "out")
    os.symlink(secret / "data", export / "outfile")
    root = local.root()
    out = local.lookup(root, b"out")
    outfile = local.lookup(root, b"outfile")
    assert local.getattr(out).type is Ftype3.LNK and local.getattr(outfile).type is Ftype3.LNK
    assert local.readlink(out) == os.fsencode(secret)
    with raises_status(S.NOTDIR):
        local.lookup(out, b"data")
    with raises_status(S.INVAL):
        local.read(outfile, 0, 100)
    with raises_status(S.INVAL):
        local.write(outfile, 0, memoryview(b"pwned"), SYNC)
    with raises_status(S.NOTDIR):
        local.create(out, b"evil", SetAttr(), True)
    with raises_status(S.INVAL):
        local.setattr(out, SetAttr(size=0))
    local.setattr(outfile, SetAttr(mode=0o777))
    assert {e.name for e in local.readdir_plus(root)} == {b"out", b"outfile"}
    assert (secret / "data").read_bytes() == b"top secret"
    assert stat.S_IMODE((secret / "data").stat().st_mode) != 0o777
    assert os.listdir(secret) == ["data"]


def test_local_swapped_parent_symlink_cannot_escape(
    local: LocalBackend, export: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    d = local.mkdir(local.root(), b"d", SetAttr())
    f = mkfile(local, d, b"f", b"inside")
    os.rename(export / "d", export / "d.real")
    os.symlink(outside, export / "d")
    (outside / "f").write_bytes(b"outside")
    assert local.read(f, 0, 100) == (b"inside", True)  # rescanned: found d.real/f
    mkfile(local, d, b"new")
    assert (export / "d.real" / "new").exists() and not (outside / "new").exists()
    assert (outside / "f").read_bytes() == b"outside"


@pytest.fixture
def mounted(export: Path) -> Iterator[Path]:
    """A tmpfs mounted inside the export (skips where mounting is not permitted)."""
    mnt = export / "mnt"
    mnt.mkdir()
    if not IS_ROOT or subprocess.run(["mount", "-t", "tmpfs", "none", str(mnt)],
                                     capture_output=True, check=False).returncode:  # fmt: skip
        pytest.skip("cannot mount a file system here")
    try:
        (mnt / "inner").write_bytes(b"other fs")
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_local_other_device_refused(local: LocalBackend, mounted: Path) -> None:
    with raises_status(S.ACCES):
        local.lookup(local.root(), b"mnt")
    assert b"mnt" not in {e.name for e in local.readdir_plus(local.root())}
    with raises_status(S.STALE):
        local.getattr(mounted.stat().st_ino + 10**9)


def test_local_hard_link_found_after_mapped_name_removed(export: Path, tmp_path: Path) -> None:
    with LocalBackend(export, tmp_path / "state") as lb:
        d = lb.mkdir(lb.root(), b"d", SetAttr())
        f = mkfile(lb, lb.root(), b"a", b"linked")
        lb.link(f, d, b"b")
    with LocalBackend(export, tmp_path / "state") as lb:  # no cached descriptors
        lb.remove(lb.root(), b"a")
        assert lb.getattr(f).nlink == 1
        assert lb.read(f, 0, 10) == (b"linked", True)


def test_local_scan_is_bounded(export: Path, tmp_path: Path) -> None:
    deep = export / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "f").write_bytes(b"x")
    ino = (deep / "f").stat().st_ino
    with LocalBackend(export, tmp_path / "s1", scan_limit=2) as lb, raises_status(S.STALE):
        lb.getattr(ino)
    with LocalBackend(export, tmp_path / "s2") as lb:
        assert lb.getattr(ino).size == 1


def test_local_large_inode_numbers_persist(tmp_path: Path) -> None:
    from ferry.backends._fileids import FileIdMap

    big = (1 << 64) - 5
    m = FileIdMap(tmp_path / "db", 1, "x")
    m.record(big, 1, b"a")
    m.record(big - 1, big, b"b")
    m.close()
    m = FileIdMap(tmp_path / "db", 1, "x")
    try:
        assert m.path(big - 1) == b"a/b"
        m.record(big, big - 1, b"loop")  # a cycle: unresolvable, not an endless walk
        assert m.path(big) is None
    finally:
        m.close()


def test_fileid_map_record_many_writes_only_what_changed(tmp_path: Path) -> None:
    """A directory listed again writes nothing; a renamed entry is written; the root is
    never recorded; and the rows persist, large inode numbers included."""
    from ferry.backends._fileids import FileIdMap

    big = (1 << 64) - 9
    m = FileIdMap(tmp_path / "db", 1, "x")
    try:
        m.record_many(1, [(b"a", 10), (b"b", 11), (b"root", 1)])
        assert m._pending == {10: (1, b"a"), 11: (1, b"b")}
        m.flush()
        m.record_many(1, [(b"a", 10), (b"b", 11)])  # listed again, unchanged
        assert m._pending == {}
        m.record_many(1, [(b"a", 10), (b"c", 11), (b"d", big)])  # b renamed to c
        assert m._pending == {11: (1, b"c"), big: (1, b"d")}
        m.record_many(big, [(b"e", 12)])
    finally:
        m.close()
    m = FileIdMap(tmp_path / "db", 1, "x")
    try:
        assert (m.path(10), m.path(11), m.path(12), m.get(1)) == (b"a", b"c", b"d/e", None)
    finally:
        m.close()


def test_fileid_map_saves_a_listing_as_one_row(tmp_path: Path) -> None:
    """A listing persists as one row and answers after a restart; a single row (a rename
    seen later) wins over it; the root is never recorded."""
    import sqlite3

    from ferry.backends._fileids import FileIdMap

    m = FileIdMap(tmp_path / "db", 1, "x")
    try:
        m.record_listing(1, [(b"a", 10), (b"b", 11), (b"root", 1), (b"d", 12)])
        m.record_listing(12, [(b"e", 13)])
        m.record(11, 12, b"moved")  # after the listing: the row must win
    finally:
        m.close()
    db = sqlite3.connect(tmp_path / "db")
    try:
        assert db.execute("SELECT count(*) FROM listings").fetchone() == (2,)
        assert db.execute("SELECT ino FROM fileids").fetchall() == [(11,)]
    finally:
        db.close()
    m = FileIdMap(tmp_path / "db", 1, "x")
    try:
        assert (m.path(10), m.path(11), m.path(13), m.get(1)) == (b"a", b"d/moved", b"d/e", None)
        assert m.get(99) is None
    finally:
        m.close()


def test_local_handles_from_a_listing_resolve_after_restart_without_a_scan(
    tmp_path: Path,
) -> None:
    from ferry.backends import LocalBackend

    root, state = tmp_path / "root", tmp_path / "state"
    (root / "d").mkdir(parents=True)
    for i in range(50):
        (root / "d" / f"f{i}").write_bytes(b"x")
    b = LocalBackend(root, state_dir=state)
    try:
        d = b.lookup(b.root(), b"d")
        ids = {e.name: e.fileid for e in b.readdir(d)}
    finally:
        b.close()
    b = LocalBackend(root, state_dir=state, scan_limit=0)  # no rescan can find them
    try:
        assert b.getattr(ids[b"f7"]).fileid == ids[b"f7"]
        assert b.getattr(ids[b"f49"]).size == 1
    finally:
        b.close()


def test_fd_cache_defers_close_while_leased() -> None:
    from ferry.backends._fdcache import FdCache

    cache = FdCache(capacity=1)
    r, w = os.pipe()
    os.close(r)
    lease = cache.insert(1, w, writable=True)
    cache.insert(2, os.dup(w), writable=False)  # evicts 1, which is still leased
    os.fstat(lease.fd)  # still open
    cache.release(lease)
    with pytest.raises(OSError):
        os.fstat(w)
    assert cache.acquire(2, writable=True) is None
    two = cache.acquire(2, writable=False)
    assert two is not None
    cache.release(two)
    cache.clear()


def test_fd_cache_closes_idle_descriptors_but_not_leased_ones() -> None:
    from ferry.backends._fdcache import FdCache

    closed: list[int] = []
    cache = FdCache(capacity=4, closer=closed.append)
    cache.release(cache.insert(1, 101, writable=True))
    held = cache.insert(2, 102, writable=False)
    assert cache.close_idle(60.0) == 0 and not closed  # used just now
    time.sleep(0.05)
    assert cache.close_idle(0.01) == 1 and closed == [101]  # 2 is leased: kept
    assert cache.acquire(1, writable=False) is None and len(cache) == 1
    cache.release(held)
    cache.clear()
    assert closed == [101, 102]


def test_local_bad_root(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        LocalBackend(tmp_path / "missing", tmp_path / "state")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConfigError):
        LocalBackend(tmp_path / "file", tmp_path / "state")


def test_local_state_of_other_export_discarded(tmp_path: Path) -> None:
    e1, e2 = tmp_path / "e1", tmp_path / "e2"
    e1.mkdir()
    e2.mkdir()
    with LocalBackend(e1, tmp_path / "state") as lb:
        f = mkfile(lb, lb.root(), b"f")
    with LocalBackend(e2, tmp_path / "state") as lb, raises_status(S.STALE):
        lb.getattr(f)


def test_local_names_are_validated(local: LocalBackend) -> None:
    root = local.root()
    for bad in (b"a/b", b"../x", b"", b"a\0b"):
        with raises_status(S.INVAL, S.NOENT):
            local.lookup(root, bad)
        with raises_status(S.INVAL, S.EXIST):
            local.create(root, bad, SetAttr(), True)
    with raises_status(S.EXIST, S.INVAL):
        local.mkdir(root, b"..", SetAttr())
    with raises_status(S.INVAL):
        local.rename(root, b"..", root, b"x")


def test_local_corrupt_state_is_replaced(export: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "fileids.sqlite3").write_bytes(b"this is not a database" * 100)
    with LocalBackend(export, state) as lb:
        f = mkfile(lb, lb.root(), b"f", b"ok")
    assert (state / "fileids.sqlite3.bad").exists()
    with LocalBackend(export, state) as lb:
        assert lb.read(f, 0, 10) == (b"ok", True)


# -- LocalBackend generations (inode numbers are reused) -------------------------------------


def reuse_inode(b: Backend, d: int, name: bytes) -> tuple[int, int, int]:
    """Create ``name`` until the new file gets the inode number of a file just removed
    through ``b``; (that number, old generation, new generation)."""
    fid = mkfile(b, d, name)
    for _ in range(2000):
        gen = b.getattr(fid).generation
        b.remove(d, name)
        new = mkfile(b, d, name)
        if new == fid:
            return fid, gen, b.getattr(new).generation
        fid = new
    pytest.fail("the file system never reused an inode number in 2000 tries (tmpfs does not)")


@pytest.fixture(params=["btime", "counter", "counter-no-statx"])
def gen_local(request: pytest.FixtureRequest, export: Path, tmp_path: Path,
              monkeypatch: pytest.MonkeyPatch) -> Iterator[Factory]:  # fmt: skip
    """LocalBackends with birth-time generations, or forced onto the removal counter (with
    statx, and with the ``os.stat`` reader used where statx is missing)."""
    from ferry.backends import _statx

    if request.param == "counter-no-statx":
        monkeypatch.setattr(_statx, "_STATX", None)
    made: list[LocalBackend] = []

    def factory() -> LocalBackend:
        lb = LocalBackend(export, tmp_path / "state", use_btime=request.param == "btime")
        made.append(lb)
        return lb

    yield factory
    for lb in made:
        lb.close()


def test_local_attr_rows_are_the_rows_of_attrs_in(gen_local: Factory) -> None:
    """``attr_rows_in`` (READDIRPLUS pages; statx straight into rows where there is statx)
    gives ``attrs_in``'s attributes as rows and their generations, for every kind of file
    and for times past 2**32 s and before 1970; None for an entry removed or replaced
    (another inode) since it was listed."""
    b = gen_local()
    root = b.root()
    sub = b.mkdir(root, b"sub", SetAttr(mode=0o750))
    mkfile(b, root, b"data", b"x" * 5000)
    b.symlink(root, b"link", b"data", SetAttr())
    b.mknod(root, b"fifo", Ftype3.FIFO, SetAttr(mode=0o600), (0, 0))
    mkfile(b, root, b"gone")
    b.setattr(sub, SetAttr(atime_ns=(1 << 33) * 10**9 + 5, mtime_ns=-(10**9) - 7))
    entries = b.readdir(root)
    b.remove(root, b"gone")
    entries += [DirEntry(b"data", 10**12), DirEntry(b"missing", 5)]  # replaced, removed
    rows, gens = b.attr_rows_in(root, entries, 77)
    attrs = b.attrs_in(root, entries)
    assert rows == [None if a is None else attr_row(a, 77) for a in attrs]
    assert gens == [None if a is None else a.generation for a in attrs]
    by_name = {e.name: r for e, r in zip(entries, rows[:-2], strict=False)}
    assert by_name[b"gone"] is None and rows[-2:] == [None, None]
    kinds = {r[0] for name, r in by_name.items() if r is not None}
    assert kinds == {Ftype3.DIR, Ftype3.REG, Ftype3.LNK, Ftype3.FIFO}
    row = by_name[b"sub"]
    assert row is not None and row[9:15] == (
        77,
        sub,
        (1 << 33) & 0xFFFFFFFF,
        5,
        -2 & 0xFFFFFFFF,
        10**9 - 7,
    )


def test_local_generation_differs_after_inode_reuse(gen_local: Factory) -> None:
    b = gen_local()
    for i in range(5):
        ino, old, new = reuse_inode(b, b.root(), b"f%d" % i)
        assert old != new, f"inode {ino} reused with the same generation {old}"
    d = b.mkdir(b.root(), b"d", SetAttr())
    gen = b.getattr(d).generation
    b.rmdir(b.root(), b"d")
    again = b.mkdir(b.root(), b"d2", SetAttr())
    assert again != d or b.getattr(again).generation != gen


def test_local_generation_is_stable(gen_local: Factory, export: Path) -> None:
    b = gen_local()
    root = b.root()
    reuse_inode(b, root, b"f")  # the counter variants then have a nonzero generation
    f = b.lookup(root, b"f")
    d = b.mkdir(root, b"d", SetAttr())
    s = b.symlink(root, b"s", b"target", SetAttr())
    gens = {fid: b.getattr(fid).generation for fid in (root, f, d, s)}
    b.write(f, 0, memoryview(b"data"), SYNC)  # getattr through the cached descriptor
    assert {fid: b.getattr(fid).generation for fid in gens} == gens
    plus = {e.fileid: e.attr.generation for e in b.readdir_plus(root) if e.attr}
    assert plus == {fid: gen for fid, gen in gens.items() if fid != root}
    b.rename(root, b"f", d, b"moved")
    b.rename(root, b"d", root, b"d-renamed")
    os.rename(export / "s", export / "d-renamed" / "s2")  # behind the backend's back
    assert {fid: b.getattr(fid).generation for fid in gens} == gens
    b.close()
    assert {fid: gen_local().getattr(fid).generation for fid in gens} == gens


def test_local_generation_kept_while_a_link_remains(gen_local: Factory) -> None:
    b = gen_local()
    root = b.root()
    f = mkfile(b, root, b"a", b"linked")
    gen = b.getattr(f).generation
    b.link(f, root, b"b")
    b.remove(root, b"a")
    assert b.getattr(f).generation == gen
    g = mkfile(b, root, b"c")
    b.link(g, root, b"d")
    b.rename(root, b"b", root, b"d")  # replaces one of g's two names
    assert b.getattr(g).generation == b.getattr(b.lookup(root, b"c")).generation


def test_local_counter_bumped_by_rename_over_a_file(export: Path, tmp_path: Path) -> None:
    with LocalBackend(export, tmp_path / "state", use_btime=False) as b:
        root = b.root()
        victim = mkfile(b, root, b"victim")
        assert b.getattr(victim).generation == 0
        mkfile(b, root, b"src")
        b.rename(root, b"src", root, b"victim")
        assert b._tree.map.generation(victim) == 1
    with LocalBackend(export, tmp_path / "state", use_btime=False) as b:
        assert b._tree.map.generation(victim) == 1  # persisted


def test_local_counter_used_only_without_birth_times(export: Path, tmp_path: Path) -> None:
    with LocalBackend(export, tmp_path / "s1", use_btime=False) as b:
        assert b._tree.counts_removals
    with LocalBackend(export, tmp_path / "s2") as b:
        if b._tree.counts_removals:
            pytest.skip("this file system records no birth times")
        f = mkfile(b, b.root(), b"f")
        b.remove(b.root(), b"f")
        assert b._tree.map.generation(f) == 0  # no SQLite write per removal


def test_local_attrs_match_lstat(local: LocalBackend, export: Path) -> None:
    """The statx struct layout: every field as ``os.lstat`` reports it."""
    root = local.root()
    mkfile(local, root, b"f", b"x" * 5000, mode=0o4751)
    local.mkdir(root, b"d", SetAttr(mode=0o700))
    local.symlink(root, b"s", b"somewhere", SetAttr())
    local.mknod(root, b"p", Ftype3.FIFO, SetAttr(mode=0o640), (0, 0))
    names = ["f", "d", "s", "p"]
    if IS_ROOT:
        local.mknod(root, b"c", Ftype3.CHR, SetAttr(), (1, 3))
        names.append("c")
    os.utime(export / "f", ns=(1_234_567_891_123_456_789, 987_654_321_987_654_321))
    for name in names:
        st = os.lstat(export / name)
        a = local.getattr(st.st_ino)
        assert (a.mode, a.nlink, a.uid, a.gid, a.size, a.used, a.fileid) == (
            stat.S_IMODE(st.st_mode), st.st_nlink, st.st_uid, st.st_gid, st.st_size,
            st.st_blocks * 512, st.st_ino), name  # fmt: skip
        assert (a.atime_ns, a.mtime_ns, a.ctime_ns) == (
            st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns), name  # fmt: skip
        assert a.rdev == (os.major(st.st_rdev), os.minor(st.st_rdev)), name
        assert a.fsid == st.st_dev, name
    assert local.getattr(root).fsid == export.stat().st_dev


def test_fileid_map_generations_persist(tmp_path: Path) -> None:
    from ferry.backends._fileids import FileIdMap

    big = (1 << 64) - 3
    m = FileIdMap(tmp_path / "db", 1, "x")
    assert m.generation(big) == 0
    m.bump(big)
    m.bump(big)
    m.bump(7)
    m.close()
    m = FileIdMap(tmp_path / "db", 1, "x", cache_size=1)
    try:
        assert (m.generation(big), m.generation(7), m.generation(8)) == (2, 1, 0)
    finally:
        m.close()
    m = FileIdMap(tmp_path / "db", 1, "another export")
    try:
        assert m.generation(big) == 0
    finally:
        m.close()


def test_memory_handles_of_a_previous_instance_do_not_alias() -> None:
    """File ids restart at 1 in a new MemoryBackend; the generation tells them apart."""
    from ferry.backends import MemoryBackend

    a, b = MemoryBackend(), MemoryBackend()
    assert a.getattr(a.root()).fileid == b.getattr(b.root()).fileid
    assert a.getattr(a.root()).generation != b.getattr(b.root()).generation


@pytest.mark.parametrize("use_openat2", [True, False])
def test_open_dir_beneath_refuses_symlinks_on_the_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_openat2: bool
) -> None:
    from ferry.backends import _beneath

    monkeypatch.setattr(_beneath, "_openat2_works", use_openat2 and _beneath._openat2_works)
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = _beneath.open_dir_beneath(root_fd, b"a/b")
        assert os.fstat(fd).st_ino == (root / "a" / "b").stat().st_ino
        os.close(fd)
        for bad in (b"link", b"link/x", b"a/../link"):
            with pytest.raises(OSError):
                os.close(_beneath.open_dir_beneath(root_fd, bad))
    finally:
        os.close(root_fd)


@pytest.mark.parametrize("sync", [True, False])
def test_local_namespace_changes_are_fsynced_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sync: bool
) -> None:
    from ferry.backends import LocalBackend, SetAttr

    (tmp_path / "root").mkdir()
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    with LocalBackend(tmp_path / "root", tmp_path / "state", sync_metadata=sync) as b:
        root = b.root()
        steps = [
            lambda: b.create(root, b"f", SetAttr(mode=0o644), False),
            lambda: b.mkdir(root, b"d", SetAttr()),
            lambda: b.rename(root, b"f", root, b"g"),
            lambda: b.link(b.lookup(root, b"g"), root, b"h"),
            lambda: b.symlink(root, b"s", b"g", SetAttr()),
            lambda: b.remove(root, b"h"),
            lambda: b.rmdir(root, b"d"),
        ]
        for step in steps:
            synced.clear()
            step()
            assert bool(synced) == sync


def test_readonly_forwards_every_read() -> None:
    """Each read ``Backend`` implements or gives a default for reaches the inner backend:
    a default left to run on the wrapper would bypass the inner backend's faster override
    (``attrs_in``: one getattr per READDIRPLUS entry instead of one batch)."""
    writes = set(vars(ReadOnlyBackend)) - {"__module__", "__doc__", "__abstractmethods__"}
    reads = {
        name
        for name, member in vars(Backend).items()
        if callable(member) and not name.startswith("_") and name not in writes
    } - {"close"}
    assert reads <= set(vars(ReadOnly)), sorted(reads - set(vars(ReadOnly)))


def test_lookup_attr_is_getattr_of_lookup(b: Backend, kind: str, tmp_path: Path) -> None:
    """``lookup_attr`` (LOOKUP's one call, issue 20) answers as ``getattr(lookup())`` does:
    at the root, below it, through a wrapper, after a directory moved behind the
    backend's back, and with the same errors."""
    root = b.root()
    sub = b.mkdir(root, b"sub", SetAttr(mode=0o755))
    deep = b.mkdir(sub, b"deep", SetAttr(mode=0o755))
    mkfile(b, root, b"top", b"1")
    mkfile(b, deep, b"leaf", b"22")

    def same(d: int, name: bytes, backend: Backend = b) -> None:
        assert backend.lookup_attr(d, name) == backend.getattr(backend.lookup(d, name)), name

    for d, name in [(root, b"top"), (root, b"sub"), (sub, b"deep"), (deep, b"leaf")]:
        same(d, name)
        same(d, name, ReadOnly(b) if kind == "memory" else b)
    for d in (root, sub, deep):
        same(d, b".")
    same(sub, b"..")
    same(deep, b"..")
    for d in (root, deep):
        with raises_status(S.NOENT):
            b.lookup_attr(d, b"missing")
    with raises_status(S.NOTDIR):
        b.lookup_attr(b.lookup(root, b"top"), b"x")
    if kind == "local":  # a move the backend did not make: the map's path is wrong
        export = tmp_path / "export"
        os.rename(export / "sub", export / "moved")
        (export / "sub").mkdir()  # another directory where the map says ``sub`` is
        (export / "sub" / "deep").mkdir()
        same(sub, b"deep")
        same(deep, b"leaf")
        os.rename(export / "moved" / "deep", export / "deep2")
        same(deep, b"leaf")
        assert b.lookup_attr(deep, b"leaf").fileid == b.lookup(deep, b"leaf")

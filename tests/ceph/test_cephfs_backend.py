"""CephFsBackend against a real (throwaway) Ceph cluster.

Every backend contract test of tests/test_backends.py that needs only a backend (``b``) or
a factory of backends over the same storage (``make``) runs here too, on a fresh CephFS
directory; then the CephFS specifics: file ids shared between libcephfs clients (what
several Ferry servers rely on), coherence between them, and failures at start and
mid-flight.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ceph_support import (
    backend_at,
    cephfs_export,
    close_in_background,
    ferry_servers,
    join_closing,
)

import ferry
import test_backends as contract
from ferry.backends import load_backend
from ferry.backends.base import Backend, SetAttr
from ferry.backends.cephfs import CephFsBackend
from ferry.errors import ConfigError
from ferry.nfs3.const import Nfsstat3, StableHow
from ferry.testing import raises_status
from helpers.ceph import CephCluster

pytestmark = [pytest.mark.ceph, pytest.mark.interop]
Factory = Callable[[], Backend]
S = Nfsstat3
SYNC = StableHow.FILE_SYNC

for _name, _test in vars(contract).items():  # the contract suite, on CephFS
    if not _name.startswith("test_") or _name in globals():
        continue
    if set(inspect.signature(_test).parameters) <= {"b", "make"}:
        globals()[_name] = _test


def test_no_fd_leak(make: Factory) -> None:
    join_closing()  # earlier tests' backends close in the background: not during this one
    contract.test_no_fd_leak(make)


@pytest.fixture
def make(ceph_cluster: CephCluster, cephfs_dir: str) -> Iterator[Factory]:
    """Builds backends on one CephFS directory, each with its own libcephfs client."""
    made: list[Backend] = []

    def factory() -> Backend:
        made.append(CephFsBackend(cephfs_dir, conf=str(ceph_cluster.conf)))
        return made[-1]

    yield factory
    for b in made:
        close_in_background(b)


@pytest.fixture
def b(make: Factory) -> Backend:
    return make()


def mkfile(b: Backend, name: bytes, data: bytes = b"") -> int:
    fid = b.create(b.root(), name, SetAttr(), exclusive=True)
    if data:
        b.write(fid, 0, memoryview(data), SYNC)
    return fid


# -- several clients, one file system ------------------------------------------------------


def test_fileids_are_inode_numbers_shared_by_every_client(make: Factory) -> None:
    a, other = make(), make()
    d = a.mkdir(a.root(), b"d", SetAttr())
    f = a.create(d, b"f", SetAttr(mode=0o640), exclusive=True)
    a.write(f, 0, memoryview(b"from a"), SYNC)
    assert f > 1 << 40  # CephFS's inode numbers, not a counter of ours
    # The other client never looked the file up by name: it finds it from the number alone.
    got = other.getattr(f)
    assert (got.fileid, got.mode, got.size) == (f, 0o640, 6)
    assert got.generation == a.getattr(f).generation != 0
    assert other.read(f, 0, 100) == (b"from a", True)
    assert other.lookup(d, b"..") == a.root() and other.lookup(d, b"f") == f


def test_unstable_write_is_seen_by_another_client(make: Factory) -> None:
    a, other = make(), make()
    f = mkfile(a, b"f")
    a.write(f, 0, memoryview(b"buffered"), StableHow.UNSTABLE)  # no COMMIT yet
    assert other.read(f, 0, 100) == (b"buffered", True)
    other.write(f, 8, memoryview(b"+more"), StableHow.UNSTABLE)
    assert a.read(f, 0, 100) == (b"buffered+more", True)


def test_removal_by_another_client_makes_stale(make: Factory) -> None:
    a, other = make(), make()
    f = mkfile(a, b"f", b"x")
    assert other.read(f, 0, 1) == (b"x", True)  # the other client caches a file handle
    a.remove(a.root(), b"f")
    for op in (lambda: other.getattr(f), lambda: other.read(f, 0, 1)):
        with raises_status(S.STALE):
            op()
    with raises_status(S.STALE):
        other.write(f, 0, memoryview(b"y"), SYNC)


def test_generation_changes_when_a_name_is_reused(b: Backend) -> None:
    f = mkfile(b, b"f")
    gen = b.getattr(f).generation
    b.remove(b.root(), b"f")
    g = mkfile(b, b"f")
    assert g != f or b.getattr(g).generation != gen


def test_times_have_sub_second_precision(b: Backend) -> None:
    f = mkfile(b, b"f")
    b.setattr(f, SetAttr(mtime_ns=1_700_000_000_123_456_789))
    assert b.getattr(f).mtime_ns == 1_700_000_000_123_456_789
    stamps = set()
    for i in range(3):
        b.write(f, 0, memoryview(b"%d" % i), SYNC)
        stamps.add(b.getattr(f).mtime_ns % 1_000_000_000)
        time.sleep(0.002)
    assert len(stamps) > 1


def test_sub_path_is_the_root(ceph_cluster: CephCluster, cephfs_dir: str) -> None:
    with backend_at(ceph_cluster, "/") as top:
        inner = top.lookup(top.root(), cephfs_dir.strip("/").encode())
        top.mkdir(inner, b"sub", SetAttr())
    with backend_at(ceph_cluster, cephfs_dir) as b:
        assert b.root() == inner
        assert b.lookup(b.root(), b"..") == inner
        assert {e.name for e in b.readdir(b.root())} == {b"sub"}


def test_builtin_name_and_options(ceph_cluster: CephCluster, cephfs_dir: str) -> None:
    cls = load_backend("cephfs")
    assert cls is CephFsBackend
    b = cls(cephfs_dir, conf=str(ceph_cluster.conf), client_id="admin", op_timeout=5)  # type: ignore[call-arg]
    try:
        assert b.getattr(b.root()).fileid == b.root()
    finally:
        b.close()


def test_attributes_from_a_statx_keep_every_field() -> None:
    from ferry.backends import _libcephfs as lc
    from ferry.backends._cephfsmount import to_attr
    from ferry.backends._statx import mix
    from ferry.vocab import Ftype3

    ts = lc.Timespec
    stx = lc.Statx(
        mask=lc.STATX_WANT, nlink=2, uid=5, gid=6, mode=0o104755, ino=1 << 40, size=(1 << 33) + 1,
        blocks=3, rdev=os.makedev(8, 1), atime=ts(1, 2), ctime=ts(3, 4), mtime=ts(5, 999_999_999),
        btime=ts(7, 8),
    )  # fmt: skip
    a = to_attr(stx)
    assert (a.type, a.mode, a.nlink, a.uid, a.gid) == (Ftype3.REG, 0o4755, 2, 5, 6)
    assert (a.size, a.used, a.rdev, a.fileid) == ((1 << 33) + 1, 3 * 512, (0, 0), 1 << 40)
    assert (a.atime_ns, a.ctime_ns, a.mtime_ns) == (1_000_000_002, 3_000_000_004, 5_999_999_999)
    assert a.generation == mix(7, 8)
    dev = to_attr(lc.Statx(mask=lc.STATX_BASIC, mode=0o020600, rdev=os.makedev(8, 1)))
    assert (dev.type, dev.rdev, dev.generation) == (Ftype3.CHR, (8, 1), 0)


def test_client_log_is_quiet_unless_the_conf_or_settings_set_it(
    ceph_cluster: CephCluster, cephfs_dir: str, tmp_path: Path
) -> None:
    """libcephfs's default in-memory client log costs every call; Ferry turns it off, but
    keeps a level the operator chose in ceph.conf or in the export's settings."""

    def level(**options: object) -> str:
        b = CephFsBackend(cephfs_dir, **{"conf": str(ceph_cluster.conf), **options})  # type: ignore[arg-type]
        try:
            return b._mounted().m.conf_get("debug_client")
        finally:
            close_in_background(b)

    assert level() == "0/0"
    assert level(settings={"debug_client": "0/5"}) == "0/5"
    conf = tmp_path / "ceph.conf"
    conf.write_text(
        ceph_cluster.conf.read_text().replace("[global]\n", "[global]\ndebug_client = 2/5\n")
    )
    assert level(conf=str(conf)) == "2/5"


# -- failures -----------------------------------------------------------------------------------


def test_unreachable_cluster_is_a_clear_error_at_start(tmp_path: os.PathLike[str]) -> None:
    from helpers import peers

    conf = os.path.join(tmp_path, "dead.conf")
    port = peers.free_port()
    with open(conf, "w") as f:
        f.write(f"[global]\nmon host = v2:127.0.0.1:{port}\nauth client required = none\n")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match=r"cephfs '/'.*cannot mount.*(timed out|Connection)"):
        CephFsBackend("/", conf=conf, mount_timeout=2)
    assert time.monotonic() - t0 < 30
    with pytest.raises(ConfigError, match="conf file .*missing.conf not found"):
        CephFsBackend("/", conf=os.path.join(tmp_path, "missing.conf"))


def test_missing_sub_path_is_a_clear_error(ceph_cluster: CephCluster) -> None:
    with pytest.raises(ConfigError, match="cannot mount /no/such/dir: no directory"):
        CephFsBackend("/no/such/dir", conf=str(ceph_cluster.conf))


def test_stalled_cluster_answers_jukebox_then_recovers(
    ceph_cluster: CephCluster, cephfs_dir: str
) -> None:
    """A frozen MDS: metadata calls give JUKEBOX after op_timeout, not a hang; GETATTR too,
    which runs inline (no thread hop) only while the cluster answers promptly."""
    with (
        backend_at(ceph_cluster, cephfs_dir, op_timeout=2) as b,
        backend_at(ceph_cluster, cephfs_dir) as other,
    ):
        root = b.root()
        f = mkfile(b, b"before")
        other.write(f, 0, memoryview(b"changed"), SYNC)  # b's cached attributes are revoked
        mds = ceph_cluster.procs["mds.a"].pid
        os.kill(mds, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with raises_status(S.JUKEBOX):
                b.create(root, b"during", SetAttr(), exclusive=True)
            assert 1.5 < time.monotonic() - t0 < 10
            t0 = time.monotonic()
            with raises_status(S.JUKEBOX):  # needs the MDS: bounded, as the store is suspect
                b.getattr(f)
            assert time.monotonic() - t0 < 10
        finally:
            os.kill(mds, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:  # the stuck create finishes once the MDS runs again
            try:
                assert b.lookup(root, b"during") > 0
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert b.read(mkfile(b, b"after", b"ok"), 0, 10) == (b"ok", True)


def test_evicted_client_mounts_again(
    ceph_cluster: CephCluster, cephfs_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Once the cluster has evicted (blocklisted) Ferry's client, every libcephfs call fails
    (ESHUTDOWN): the backend logs it, answers JUKEBOX while it mounts again with a new
    client, then serves as before; ``write_epoch`` counts the unflushed writes lost."""
    from ferry.testing import status_of

    caplog.set_level(logging.INFO, logger="ferry.backends.cephfs")
    with backend_at(ceph_cluster, cephfs_dir, op_timeout=10) as b:
        f = mkfile(b, b"f", b"data")
        old = b.instance_id()
        for session in _client_ids(ceph_cluster, b):
            ceph_cluster.ceph("tell", "mds.a", "client", "evict", f"id={session}")
        deadline = time.monotonic() + 30
        statuses = set()
        while True:
            try:
                b.write(f, 0, memoryview(b"more"), SYNC)
                break
            except Exception as exc:
                statuses.add(status_of(exc))
            assert time.monotonic() < deadline, "not served again after the eviction"
            time.sleep(0.2)
        assert statuses <= {S.JUKEBOX}, statuses
        assert b.instance_id() != old and b.write_epoch == 1
        assert b.read(f, 0, 10) == (b"more", True)
        assert b.create(b.root(), b"g", SetAttr(), exclusive=True) > 0
    assert "cut this server off" in caplog.text and "mounted again" in caplog.text


def _client_ids(cluster: CephCluster, b: CephFsBackend) -> list[int]:
    import json

    sessions = json.loads(cluster.ceph("tell", "mds.a", "client", "ls", "--format", "json"))
    return [int(s["id"]) for s in sessions if int(s["id"]) == b.instance_id()]


def test_unprivileged_write_clears_setid_bits(
    ceph_cluster: CephCluster, cephfs_dir: str, tmp_path: Path
) -> None:
    """A WRITE as nobody takes the set-ID bits away, as write(2) does, on CephFS too: the
    backend writes as root (whose writes keep them), so the service clears them through it."""
    export = cephfs_export(ceph_cluster, cephfs_dir)
    with ferry_servers(export, tmp_path, 1) as (srv,), ferry.connect(srv.nfs_url) as root:
        root.write_file("f", b"x")
        root.chmod("f", 0o6777)
        nobody = ferry.connect(srv.nfs_url + "?uid=65534&gid=65534")
        with nobody, nobody.open("f", "r+b") as f:
            f.write(b"y")
        assert stat.S_IMODE(root.stat("f").st_mode) == 0o777

"""Several Ferry servers in front of one store (CephFS or S3): one export name, one key.

The servers are real ``ferry serve --config`` processes on their own loopback ports. A file
handle from one works on the other (file ids are CephFS inode numbers, sealed with the
shared key), and a third-party client (libnfs nfs-cp / nfs-cat) writing through one server
and reading through the other gets the same bytes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from ceph_support import ConfiguredFerry, Export, cephfs_export, ferry_servers

import ferry
from ferry.errors import NfsError
from ferry.nfs3.const import Nfsstat3
from helpers import peers
from helpers.ceph import CephCluster
from helpers.tools import require_tool

pytestmark = [pytest.mark.ceph, pytest.mark.interop]


@pytest.fixture(params=["cephfs", "s3"])
def store(request: pytest.FixtureRequest) -> Export:
    """The export of one test's fresh store: a CephFS directory or an RGW bucket."""
    if request.param == "cephfs":
        cluster = request.getfixturevalue("ceph_cluster")
        return cephfs_export(cluster, request.getfixturevalue("cephfs_dir"))
    rgw = request.getfixturevalue("rgw")
    return request.getfixturevalue("bucket"), "s3", {**rgw, "op_timeout": 20}


@pytest.fixture
def any_pair(store: Export, tmp_path: Path) -> Iterator[list[ConfiguredFerry]]:
    with ferry_servers(store, tmp_path, 2) as servers:
        yield servers


def test_a_handle_from_one_server_works_on_the_other(any_pair: list[ConfiguredFerry]) -> None:
    a, b = any_pair
    with ferry.connect(a.nfs_url, attr_cache=0) as ca, ferry.connect(b.nfs_url, attr_cache=0) as cb:
        assert ca.root == cb.root  # the export's root handle is the same everywhere
        ca.makedirs("d")
        ca.write_file("d/f", b"written through A")
        fh, attr = ca.resolve("d/f")
        dir_fh, _ = ca.resolve("d")
        # B never looked these up: it serves them from the handles alone.
        assert cb.nfs.getattr(fh).fileid == attr.fileid
        assert bytes(cb.nfs.read(fh, 0, 100).data) == b"written through A"
        made = cb.nfs.create(dir_fh, "g")
        assert made.obj is not None
        assert ca.nfs.lookup(dir_fh, "g").object == made.obj  # and B's handles work on A
        cb.nfs.remove(dir_fh, "f")
        assert _status_within(lambda: ca.nfs.getattr(fh), 3.0) is Nfsstat3.STALE  # S3: attr_ttl


def _status_within(call: Callable[[], object], seconds: float) -> Nfsstat3 | None:
    """The NFS error ``call`` fails with, retried until it fails or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            call()
        except NfsError as exc:
            return exc.status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def test_a_server_with_another_key_refuses_the_handles(
    pair: list[ConfiguredFerry], ceph_cluster: CephCluster, cephfs_dir: str, tmp_path: Path
) -> None:
    with ferry.connect(pair[0].nfs_url) as ca:
        ca.write_file("f", b"x")
        fh, _ = ca.resolve("f")
    with (
        ferry_servers(cephfs_export(ceph_cluster, cephfs_dir), tmp_path / "o", 1) as (stranger,),
        ferry.connect(stranger.nfs_url) as cs,
    ):
        with pytest.raises(NfsError) as err:
            cs.nfs.getattr(fh)
        assert err.value.status is Nfsstat3.BADHANDLE


@pytest.mark.parametrize(
    "size", [0, 1, (1 << 20) + 1, 20 << 20], ids=["0B", "1B", "1MiB+1", "20MiB"]
)
def test_nfs_cp_through_a_then_b_is_byte_exact(
    any_pair: list[ConfiguredFerry], tmp_path: Path, size: int
) -> None:
    require_tool("nfs-cp", "libnfs-utils")
    a, b = any_pair
    src = tmp_path / "src.bin"
    want = peers.write_random_file(src, size, seed=size)
    peers.nfs_cp(src, a.file_url("f.bin"))
    assert peers.nfs_cat_sha256(b.file_url("f.bin")) == (want, size)
    back = tmp_path / "back.bin"
    peers.nfs_cp(b.file_url("f.bin"), back)
    assert peers.sha256_file(back) == want


def test_serve_stops_with_a_clear_error_when_the_cluster_is_unreachable(tmp_path: Path) -> None:
    dead = tmp_path / "dead.conf"
    dead.write_text(f"[global]\nmon host = v2:127.0.0.1:{peers.free_port()}\n")
    config = tmp_path / "ferry.toml"
    config.write_text(
        '[[export]]\npath = "/"\nname = "/ceph"\nbackend = "cephfs"\n'
        f'options = {{ conf = "{dead}", mount_timeout = 2 }}\n'
    )
    argv = [sys.executable, "-m", "ferry", "serve", "--config", str(config), "--port", "0",
            "--state-dir", str(tmp_path / "state")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(peers.SRC_DIR)}
    cp = subprocess.run(argv, capture_output=True, timeout=60, env=env, check=False)
    err = cp.stderr.decode()
    assert cp.returncode == 2, err
    assert "ferry: error: cephfs '/'" in err and "cannot mount" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "model", [{"model": "prefork", "workers": 3}, {"model": "process"}, {"model": "thread"}],
    ids=["prefork", "process", "thread"],
)  # fmt: skip
def test_every_server_model_serves_cephfs(
    ceph_cluster: CephCluster, cephfs_dir: str, tmp_path: Path, model: dict[str, object]
) -> None:
    """Worker processes forked from a server that mounted CephFS each get their own
    client (a regression: they used to share a network address and hang each other)."""
    require_tool("nfs-cp", "libnfs-utils")
    export = cephfs_export(ceph_cluster, cephfs_dir)
    with ferry_servers(export, tmp_path, 1, **model) as (server,):
        src = tmp_path / "src.bin"
        want = peers.write_random_file(src, (1 << 20) + 1)
        for i in range(3):  # several connections: different workers
            peers.nfs_cp(src, server.file_url(f"f{i}.bin"), timeout=60)
            assert peers.nfs_cat_sha256(server.file_url(f"f{i}.bin"), timeout=60)[0] == want

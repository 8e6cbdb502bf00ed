"""An operator's path to an existing cluster (docs/scale-out.md, "Deploying on an existing
cluster"), walked on the test cluster, which runs with cephx on as real ones do: a
subvolume, a client key limited to it by ``ceph fs authorize``, its keyring, the
``subvolume`` option, one handle key file for two servers; and the mistakes an operator
makes on the way, each reported in one line that names the cause.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from ceph_support import backend_at, ferry_servers

import ferry
from ferry.backends.cephfs import CephFsBackend
from ferry.errors import ConfigError
from helpers import peers
from helpers.ceph import FS_NAME, CephCluster, keyring_text, new_secret

pytestmark = [pytest.mark.ceph, pytest.mark.interop]


def test_two_servers_serve_a_subvolume_with_a_key_authorized_for_it(
    ceph_cluster: CephCluster, tmp_path: Path
) -> None:
    try:
        ceph_cluster.start_mgr()  # subvolumes are the manager's (the volumes module)
        ceph_cluster.ceph("fs", "subvolume", "create", FS_NAME, "ferry-sv")
        where = ceph_cluster.ceph("fs", "subvolume", "getpath", FS_NAME, "ferry-sv").strip()
    finally:
        ceph_cluster.kill("mgr.a")  # ~300 MiB: not needed any more
        ceph_cluster.evict_dead_clients()  # its session holds capabilities on the subvolume
    keyring = ceph_cluster.authorize("ferry-sv", "/volumes/_nogroup/ferry-sv")
    keys = tmp_path / "handle.key"
    keys.write_text(f"# shared by every server of the group\n{os.urandom(32).hex()}\n")
    keys.chmod(0o600)
    options = {
        "conf": str(ceph_cluster.conf), "client_id": "ferry-sv", "keyring": str(keyring),
        "fs_name": FS_NAME, "subvolume": "ferry-sv", "op_timeout": 20,
    }  # fmt: skip
    export = ("/", "cephfs", options)
    with (
        ferry_servers(export, tmp_path, 2, handle_key_file=str(keys)) as (a, b),
        ferry.connect(a.nfs_url) as ca,
        ferry.connect(b.nfs_url) as cb,
    ):
        ca.write_file("through-a", b"written through A")
        fh, _ = ca.resolve("through-a")
        assert bytes(cb.nfs.read(fh, 0, 100).data) == b"written through A"  # A's handle on B
        assert cb.nfs.lookup(cb.root, "..").object == cb.root  # the subvolume is the root
    with backend_at(ceph_cluster, where) as sv:  # the file is in the subvolume's directory
        assert sv.read(sv.lookup(sv.root(), b"through-a"), 0, 100) == (b"written through A", True)


def test_the_key_cannot_reach_beyond_its_path(ceph_cluster: CephCluster, cephfs_dir: str) -> None:
    keyring = ceph_cluster.authorize("ferry-narrow", cephfs_dir)
    narrow = {"client_id": "ferry-narrow", "keyring": str(keyring)}
    with backend_at(ceph_cluster, cephfs_dir, **narrow) as b:
        assert b.lookup(b.root(), b"..") == b.root()
    with pytest.raises(ConfigError, match="client.ferry-narrow may not mount it: its mds caps"):
        CephFsBackend("/", conf=str(ceph_cluster.conf), **narrow)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keyring": "/etc/ceph/no.keyring"}, "keyring file /etc/ceph/no.keyring not found"),
        ({"client_id": "nobody"}, "no keyring for client.nobody: none of"),
        ({"fs_name": "nope"}, "no file system named 'nope'"),
        ({"subvolume": "nope"}, "no subvolume 'nope' in group '_nogroup'"),
    ],
    ids=["keyring-file", "client", "fs_name", "subvolume"],
)
def test_a_mistake_is_one_line_naming_it(
    ceph_cluster: CephCluster, options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        CephFsBackend("/", conf=str(ceph_cluster.conf), **options)  # type: ignore[arg-type]
    assert message in str(err.value) and "\n" not in str(err.value), err.value


def test_a_wrong_key_and_a_missing_directory_say_so(
    ceph_cluster: CephCluster, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong.keyring"
    wrong.write_text(keyring_text("client.admin", new_secret(), {}))
    with pytest.raises(ConfigError, match="authentication failed: the key for client.admin"):
        CephFsBackend("/", conf=str(ceph_cluster.conf), keyring=str(wrong))
    with pytest.raises(ConfigError, match="cannot mount /no/such/dir: no directory /no/such/dir"):
        CephFsBackend("/no/such/dir", conf=str(ceph_cluster.conf))


def test_serve_says_which_keyring_is_missing(ceph_cluster: CephCluster, tmp_path: Path) -> None:
    config = tmp_path / "ferry.toml"
    config.write_text(
        '[[export]]\npath = "/"\nname = "/ceph"\nbackend = "cephfs"\n'
        f'options = {{ conf = "{ceph_cluster.conf}", client_id = "ferry", '
        'keyring = "/etc/ceph/ceph.client.ferry.keyring" }\n'
    )
    argv = [sys.executable, "-m", "ferry", "serve", "--config", str(config), "--port", "0",
            "--state-dir", str(tmp_path / "state")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(peers.SRC_DIR)}
    cp = subprocess.run(argv, capture_output=True, timeout=60, env=env, check=False)
    err = cp.stderr.decode().strip()
    assert cp.returncode == 2, err
    assert err.count("\n") == 0 and err.startswith("ferry: error: cephfs '/'"), err
    assert "keyring file /etc/ceph/ceph.client.ferry.keyring not found" in err

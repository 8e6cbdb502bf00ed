"""Fixtures for the CephFS tests: one throwaway Ceph cluster per session and a fresh CephFS
directory per test (helpers for Ferry servers over it are in ceph_support.py).

A missing Ceph package fails the tests with the package to install (.ci/run installs
them), never skips them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from ceph_support import (
    ConfiguredFerry,
    backend_at,
    cephfs_export,
    ferry_servers,
    join_closing,
    s3_admin,
)

from ferry.backends.base import SetAttr
from ferry.backends.cephfs import CephFsBackend
from helpers import peers
from helpers.ceph import PACKAGES, CephCluster

_serial = itertools.count()


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[CephCluster]:
    """mon + OSD (bluestore on a sparse file) + MDS on loopback; RGW is started by ``rgw``."""
    cluster = CephCluster(objectstore="bluestore")  # memstore keeps all test data in RAM
    try:
        cluster.start()
    except peers.ToolMissing as exc:
        pytest.fail(f"{exc}\n(the Ceph tests need: apt-get install -y {PACKAGES})", pytrace=False)
    except peers.PeerError as exc:
        pytest.fail(f"could not start the throwaway Ceph cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        join_closing()
        cluster.stop()


@pytest.fixture(scope="session")
def cephfs_top(ceph_cluster: CephCluster) -> Iterator[CephFsBackend]:
    """The whole file system, for test set-up."""
    with backend_at(ceph_cluster, "/") as b:
        yield b


@pytest.fixture
def cephfs_dir(cephfs_top: CephFsBackend, request: pytest.FixtureRequest) -> str:
    """A new, empty directory in CephFS for one test; returns its path inside CephFS."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:80] + f"-{next(_serial)}"
    cephfs_top.mkdir(cephfs_top.root(), name.encode(), SetAttr(mode=0o777))
    return "/" + name


@pytest.fixture(scope="session")
def rgw(ceph_cluster: CephCluster) -> dict[str, str]:
    """RGW (a real S3 server) on the session's cluster and a user: the S3 options."""
    try:
        ceph_cluster.start_rgw()
        access, secret = ceph_cluster.create_s3_user()
    except peers.PeerError as exc:
        pytest.fail(f"could not start radosgw: {exc}", pytrace=False)
    return {"endpoint_url": ceph_cluster.rgw_url, "key": access, "secret": secret}


@pytest.fixture(scope="session")
def rgw_scoped(ceph_cluster: CephCluster, rgw: dict[str, str]) -> dict[str, str]:
    """The S3 options of a second RGW user who owns nothing: a bucket policy (see
    ``ceph_support.grant_prefix``) lets it at one prefix of a bucket."""
    try:
        access, secret = ceph_cluster.create_s3_user("scoped")
    except peers.PeerError as exc:
        pytest.fail(f"could not make a second RGW user: {exc}", pytrace=False)
    return {"endpoint_url": rgw["endpoint_url"], "key": access, "secret": secret}


@pytest.fixture
def bucket(rgw: dict[str, str], request: pytest.FixtureRequest) -> str:
    """A new, empty bucket for one test."""
    name = f"b{next(_serial)}-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())
    name = name[:63].rstrip("-")
    s3_admin(rgw).mkdir(name)
    return name


@pytest.fixture
def pair(
    ceph_cluster: CephCluster, cephfs_dir: str, tmp_path: Path
) -> Iterator[list[ConfiguredFerry]]:
    """Two ``ferry serve --config`` servers over one fresh CephFS directory, one key."""
    with ferry_servers(cephfs_export(ceph_cluster, cephfs_dir), tmp_path, 2) as servers:
        yield servers

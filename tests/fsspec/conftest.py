"""Fixtures for the fsspec tests: one Ferry server (a subprocess on loopback) for the
session, and an ``NfsFileSystem`` connected to it.

``nfs_dir`` gives each test a fresh directory inside the export, so tests never see each
other's files although they share the server.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

import ferry
import fsspec
from ferry.nfsfs.filesystem import NfsFileSystem
from helpers import peers
from helpers.ferry_fixture import running_ferry

_counter = itertools.count()


@pytest.fixture(autouse=True, scope="session")
def _urllib_reads_nfs() -> None:
    """pandas hands nfs:// URLs to urllib; a program teaches urllib them as a user does."""
    ferry.install_urlopen()


def _register() -> None:
    """Installed (``pip install -e .``), Ferry's ``fsspec.specs`` entry point registers
    ``nfs``; run from a source tree (PYTHONPATH=src) it is absent, so register by hand."""
    try:
        cls = fsspec.get_filesystem_class("nfs")
    except (ImportError, ValueError):
        cls = None
    if cls is not NfsFileSystem:
        fsspec.register_implementation("nfs", NfsFileSystem, clobber=True)


@pytest.fixture(scope="session")
def nfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[peers.FerryServer]:
    base = tmp_path_factory.mktemp("fsspec-ferry")
    with running_ferry(base, logs="logs") as server:
        yield server


@pytest.fixture(scope="session")
def nfs_fs(nfs_server: peers.FerryServer) -> Iterator[NfsFileSystem]:
    _register()
    fs = fsspec.filesystem("nfs", host=nfs_server.host, port=nfs_server.port)
    assert isinstance(fs, NfsFileSystem)
    try:
        yield fs
    finally:
        fs.close()
        NfsFileSystem.clear_instance_cache()


@pytest.fixture
def nfs_dir(nfs_fs: NfsFileSystem, nfs_server: peers.FerryServer) -> str:
    """A new, empty directory in the export (a server path, ``/.../export/tN``)."""
    path = f"{nfs_server.export}/t{next(_counter)}"
    nfs_fs.makedirs(path)
    return path


@pytest.fixture
def export_dir(nfs_server: peers.FerryServer, nfs_dir: str) -> Path:
    """The same directory as ``nfs_dir``, seen through the local file system."""
    return Path(nfs_dir)

"""Shared fixtures: Ferry as a subprocess, NFS-Ganesha as a reference peer, tool checks.

Everything here talks to loopback only, and every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import peers
from helpers.ferry_fixture import running_ferry, running_ganesha
from helpers.tools import require_tool

__all__ = ["require_tool"]


@pytest.fixture
def free_port() -> Callable[[], int]:
    """A factory: `free_port()` returns a TCP port that was just free on 127.0.0.1."""
    return peers.free_port


@pytest.fixture
def ferry_server(tmp_path: Path) -> Iterator[peers.FerryServer]:
    """Ferry serving tmp_path/export on 127.0.0.1 (port picked by the server).

    Started with --no-root-squash (tests run as root, like the Ganesha reference config).
    Yields a FerryServer with .host, .port, .export, .state_dir, .url,
    .file_url(rel), .restart(). Teardown stops it (SIGTERM, SIGKILL after 10 s) and
    fails the test if the server wrote a Python traceback to stderr or needed SIGKILL.
    """
    with running_ferry(tmp_path) as server:
        yield server


@pytest.fixture
def ganesha_server(tmp_path: Path) -> Iterator[peers.GaneshaServer]:
    """NFS-Ganesha (VFS, NFSv3, TCP) exporting tmp_path/ganesha-export on explicit free ports.

    Starts `rpcbind -w` first if none is running (and never stops an rpcbind it did
    not start). Use .url / .file_url(rel): they carry nfsport and mountport.
    """
    with running_ganesha(tmp_path / "ganesha-export", tmp_path / "ganesha") as server:
        yield server


@pytest.fixture
def libnfs_tools() -> dict[str, str]:
    """Paths of the libnfs-utils binaries (fails if the package is missing)."""
    return {name: require_tool(name, "libnfs-utils") for name in ("nfs-ls", "nfs-cp", "nfs-cat")}

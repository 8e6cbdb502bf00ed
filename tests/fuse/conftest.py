"""A server (Ferry, or NFS-Ganesha as the reference) and a ``ferry mount`` of it on loopback.

One server and one mount per module and server kind (start-up costs ~1 s each); tests work
in their own sub-directories. Teardown unmounts with SIGTERM and fails if anything stays
mounted, if the mount process failed, or if Ferry wrote a traceback.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import peers
from helpers.tools import require_tool

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mounthelp import Mount, Server, mounted, start_mount  # noqa: E402

SERVERS = (pytest.param("ferry"), pytest.param("ganesha", marks=pytest.mark.interop))
"""Parameters for tests run against each server; NFS-Ganesha's are marked ``interop``."""


def mount_or_fail(server: Server, where: Path, *extra: str) -> Mount:
    require_tool("fusermount3", "fuse3")
    try:
        return start_mount(server, where, *extra)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


def check_stopped(m: Mount, code: int) -> None:
    """What every mount must look like once stopped: unmounted, exit 0, no traceback."""
    text = m.text()
    assert not mounted(m.path), "still mounted after the mount process ended"
    assert code == 0, text
    assert peers.TRACEBACK_MARKER not in text, text


@contextlib.contextmanager
def serving(kind: str, base: Path) -> Iterator[peers.FerryServer | peers.GaneshaServer]:
    """A Ferry or NFS-Ganesha server exporting ``base/export``; fails the test on trouble."""
    server: peers.FerryServer | peers.GaneshaServer
    if kind == "ferry":
        server = peers.FerryServer(
            export=base / "export", state_dir=base / "state", log_dir=base / "logs",
            extra_args=peers.FERRY_PEER_ARGS,
        )  # fmt: skip
    else:
        require_tool("ganesha.nfsd", "nfs-ganesha")
        require_tool("rpcbind", "rpcbind")
        server = peers.GaneshaServer(export=base / "export", workdir=base / "ganesha")
    try:
        server.start()
    except peers.PeerError as exc:
        pytest.fail(f"could not start {kind}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        if isinstance(server, peers.FerryServer):
            assert not server.tracebacks(), server.tracebacks()


@pytest.fixture(scope="module", params=SERVERS)
def nfs_mount(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    """``ferry mount`` of a Ferry server, then of NFS-Ganesha (the test runs once each)."""
    base = tmp_path_factory.mktemp(f"fuse-{request.param}")
    with serving(request.param, base) as server:
        m = mount_or_fail(server, base / "mnt")
        try:
            yield m
        finally:
            check_stopped(m, m.stop())

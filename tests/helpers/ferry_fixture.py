"""Run a Ferry (or NFS-Ganesha) server subprocess for a test or a session, failing the
test on trouble."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import peers
from helpers.tools import require_tool


@contextlib.contextmanager
def running_ferry(base: Path, logs: str = "ferry-logs") -> Iterator[peers.FerryServer]:
    """Ferry serving ``base/export`` (state in ``base/state``) on a free loopback port.

    Stops it afterwards (SIGTERM, SIGKILL after 10 s) and fails the test if the server
    wrote a Python traceback to stderr or needed SIGKILL.
    """
    server = peers.FerryServer(
        export=base / "export",
        state_dir=base / "state",
        log_dir=base / logs,
        extra_args=peers.FERRY_PEER_ARGS,
    )
    try:
        server.start()
    except peers.PeerError as e:
        pytest.fail(f"could not start ferry: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        problems = list(server.problems)
        tb = server.tracebacks()
        if tb:
            problems.append(f"ferry wrote a Python traceback to stderr:\n{tb[-8000:]}")
        if problems:
            pytest.fail("\n".join(problems), pytrace=False)


@contextlib.contextmanager
def running_ganesha(export: Path, workdir: Path) -> Iterator[peers.GaneshaServer]:
    """NFS-Ganesha (VFS, NFSv3, TCP) exporting ``export`` on explicit free ports (config
    and logs in ``workdir``); starts ``rpcbind -w`` first if none runs. A missing package
    or a failed start fails the test; stopped afterwards."""
    require_tool("ganesha.nfsd", "nfs-ganesha")
    require_tool("rpcbind", "rpcbind")
    server = peers.GaneshaServer(export=export, workdir=workdir)
    try:
        server.start()
    except peers.ToolMissing as e:
        pytest.fail(str(e), pytrace=False)
    except peers.PeerError as e:
        pytest.fail(f"could not start ganesha: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()

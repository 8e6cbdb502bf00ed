"""Run a Ferry (or NFS-Ganesha) server subprocess for a test or a session, failing the
test on trouble."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from helpers import peers
from helpers.tools import require_tool

Server = TypeVar("Server", peers.FerryServer, peers.GaneshaServer)
MODELS = ("serial", "thread", "process", "prefork", "async")
EVERY_SERVER = [*MODELS, pytest.param("ganesha", marks=pytest.mark.interop)]
"""Parameters for a test run against a Ferry server of each model and NFS-Ganesha."""


@contextlib.contextmanager
def running_ferry(
    base: Path, logs: str = "ferry-logs", extra: tuple[str, ...] = ()
) -> Iterator[peers.FerryServer]:
    """Ferry serving ``base/export`` (state in ``base/state``) on a free loopback port;
    ``extra``: more ``ferry serve`` arguments (``("--model", "thread")``).

    Stops it afterwards (SIGTERM, SIGKILL after 10 s) and fails the test if the server
    wrote a Python traceback to stderr or needed SIGKILL.
    """
    server = peers.FerryServer(
        export=base / "export",
        state_dir=base / "state",
        log_dir=base / logs,
        extra_args=(*peers.FERRY_PEER_ARGS, *extra),
    )
    with _serving(server, "ferry", _ferry_problems) as running:
        yield running


@contextlib.contextmanager
def running_server(kind: str, base: Path) -> Iterator[peers.FerryServer | peers.GaneshaServer]:
    """``kind`` from EVERY_SERVER: NFS-Ganesha exporting ``base/export``, or Ferry serving
    it with that model."""
    if kind == "ganesha":
        with running_ganesha(base / "export", base / "ganesha") as ganesha:
            yield ganesha
        return
    with running_ferry(base, extra=("--model", kind)) as ferry:
        yield ferry


def _ferry_problems(server: peers.FerryServer) -> list[str]:
    problems = list(server.problems)
    if tb := server.tracebacks():
        problems.append(f"ferry wrote a Python traceback to stderr:\n{tb[-8000:]}")
    return problems


@contextlib.contextmanager
def running_ganesha(export: Path, workdir: Path) -> Iterator[peers.GaneshaServer]:
    """NFS-Ganesha (VFS, NFSv3, TCP) exporting ``export`` on explicit free ports (config
    and logs in ``workdir``); starts ``rpcbind -w`` first if none runs. A missing package
    or a failed start fails the test; stopped afterwards."""
    require_tool("ganesha.nfsd", "nfs-ganesha")
    require_tool("rpcbind", "rpcbind")
    with _serving(peers.GaneshaServer(export=export, workdir=workdir), "ganesha") as running:
        yield running


@contextlib.contextmanager
def _serving(
    server: Server, name: str, problems: Callable[[Server], list[str]] = lambda _: []
) -> Iterator[Server]:
    """``server`` started (a failure to start fails the test), stopped afterwards; the test
    fails too if ``problems(server)`` finds any once it has stopped."""
    try:
        server.start()
    except peers.ToolMissing as e:
        pytest.fail(str(e), pytrace=False)
    except peers.PeerError as e:
        pytest.fail(f"could not start {name}: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()
        if found := problems(server):
            pytest.fail("\n".join(found), pytrace=False)

"""Server outages for tests: a Ferry or NFS-Ganesha server killed (SIGKILL) and started
again on the same port(s) with the same state, so the handles clients hold stay valid."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import peers
from helpers.ferry_fixture import running_ferry, running_ganesha

Server = peers.FerryServer | peers.GaneshaServer
SERVERS = (pytest.param("ferry"), pytest.param("ganesha", marks=pytest.mark.interop))
"""Parameters for tests run against each server; NFS-Ganesha's are marked ``interop``."""


@contextlib.contextmanager
def serving(kind: str, base: Path) -> Iterator[Server]:
    """A Ferry or NFS-Ganesha server exporting ``base/export``; fails the test on trouble."""
    if kind != "ferry":
        with running_ganesha(base / "export", base / "ganesha") as ganesha:
            yield ganesha
        return
    with running_ferry(base, logs="logs") as ferry:
        yield ferry


def pid(server: Server) -> int:
    if isinstance(server, peers.FerryServer):
        assert server.proc is not None
        return server.proc.pid
    assert server.pid is not None
    return server.pid


def _signal(server: Server, sig: int) -> None:
    """``sig`` to every process of the server: a Ferry server is a process group (it runs
    in a session of its own), its workers included; NFS-Ganesha is one process."""
    if isinstance(server, peers.FerryServer):
        os.killpg(pid(server), sig)
    else:
        os.kill(pid(server), sig)


def kill(server: Server) -> None:
    """SIGKILL: the connection drops and the port refuses connections (every process of
    the server is gone: a worker dying a moment after its parent would still accept)."""
    victim = pid(server)
    _signal(server, signal.SIGKILL)
    if isinstance(server, peers.FerryServer):
        assert server.proc is not None
        server.proc.wait(10)
        server.proc = None
        assert peers.wait_until(lambda: not _group_alive(victim), 10), "workers outlived it"
    else:
        assert peers.wait_until(lambda: not Path(f"/proc/{victim}").exists(), 10)
        server.pid = None


def restart(server: Server) -> None:
    """Start again on the same port(s), with the same state (file handles stay valid)."""
    try:
        server.start()
    except peers.PeerError as exc:
        pytest.fail(f"could not restart the server: {exc}", pytrace=False)


@contextlib.contextmanager
def frozen(server: Server) -> Iterator[None]:
    """SIGSTOP: the connection stays up and nothing answers (a hung server: all of its
    processes)."""
    _signal(server, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal(server, signal.SIGCONT)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True

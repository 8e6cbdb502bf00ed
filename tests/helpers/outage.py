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


def kill(server: Server) -> None:
    """SIGKILL: the connection drops and the port refuses connections."""
    victim = pid(server)
    os.kill(victim, signal.SIGKILL)
    if isinstance(server, peers.FerryServer):
        assert server.proc is not None
        server.proc.wait(10)
        server.proc = None
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
    """SIGSTOP: the connection stays up and nothing answers (a hung server)."""
    victim = pid(server)
    os.kill(victim, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(victim, signal.SIGCONT)

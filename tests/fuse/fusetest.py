"""Servers and mounts for the FUSE tests, importable by name (``conftest`` is not: another
directory's conftest may already hold that module name when several are collected)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from mounthelp import Mount, Server, mounted, start_mount

from helpers import peers
from helpers.ferry_fixture import running_ferry, running_ganesha
from helpers.tools import require_tool

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
    if kind != "ferry":
        with running_ganesha(base / "export", base / "ganesha") as ganesha:
            yield ganesha
        return
    with running_ferry(base, logs="logs") as ferry:
        yield ferry

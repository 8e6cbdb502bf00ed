"""Servers and mounts for the FUSE tests, importable by name (``conftest`` is not: another
directory's conftest may already hold that module name when several are collected)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mounthelp import Mount, Server, mounted, start_mount

from helpers import peers
from helpers.outage import SERVERS, serving
from helpers.tools import require_tool

__all__ = ["SERVERS", "check_stopped", "mount_or_fail", "serving"]


def mount_or_fail(server: Server, where: Path, *extra: str, url: str | None = None) -> Mount:
    require_tool("fusermount3", "fuse3")
    try:
        return start_mount(server, where, *extra, url=url)
    except peers.PeerError as exc:
        pytest.fail(str(exc), pytrace=False)


def check_stopped(m: Mount, code: int) -> None:
    """What every mount must look like once stopped: unmounted, exit 0, no traceback."""
    text = m.text()
    assert not mounted(m.path), "still mounted after the mount process ended"
    assert code == 0, text
    assert peers.TRACEBACK_MARKER not in text, text

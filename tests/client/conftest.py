"""Fixtures for the client tests: a Ferry server in-process on loopback, and helpers.

``ferry_url`` serves ``tmp_path/export`` (local backend, root squash off) and yields its
URL with the port in the authority (MOUNT shares it). Tests drive the asyncio client with
``asyncio.run``; every wait is bounded by the client's own timeouts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from rawclient import RunningServer, local_config, serve_in_thread


@pytest.fixture
def ferry_srv(tmp_path: Path) -> Iterator[RunningServer]:
    root = tmp_path / "export"
    root.mkdir()
    with serve_in_thread(local_config(root, tmp_path / "state", root_squash=False)) as srv:
        yield srv


@pytest.fixture
def export_root(ferry_srv: RunningServer) -> Path:
    assert ferry_srv.root is not None
    return ferry_srv.root

"""Fixtures for NFSv3 protocol tests: the real asyncio server on loopback, per backend.

``server`` serves one export (local tmp dir or memory backend, root squash off) and
``nfs`` is an ``Nfs3`` client mounted on it, acting as root. ``start_server`` starts
more servers (read-only, restarted on the same state dir, ...) and ``connect`` opens
more clients; everything is closed at teardown so no socket leaks a ResourceWarning.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nfs3wire import Nfs3
from rawclient import RawClient, RunningServer
from servers import BACKENDS, Servers


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def servers(backend: str, tmp_path: Path) -> Iterator[Servers]:
    s = Servers(backend, tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def server(servers: Servers) -> RunningServer:
    return servers.start()


@pytest.fixture
def nfs(servers: Servers, server: RunningServer) -> Nfs3:
    """A client acting as root on ``server``; ``nfs.root`` is the export's root handle."""
    return servers.connect(server)


@pytest.fixture
def connect(servers: Servers) -> Callable[[RunningServer], Nfs3]:
    return servers.connect


@pytest.fixture
def client(server: RunningServer) -> Iterator[RawClient]:
    """A raw RPC client of whichever ``server`` the test module defines."""
    c = server.client()
    try:
        yield c
    finally:
        c.close()

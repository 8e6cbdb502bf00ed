"""Fixtures for NFSv3 protocol tests: the real asyncio server on loopback, per backend.

``server`` serves one export (local tmp dir or memory backend, root squash off) and
``nfs`` is an ``Nfs3`` client mounted on it, acting as root. ``start_server`` starts
more servers (read-only, restarted on the same state dir, ...) and ``connect`` opens
more clients; everything is closed at teardown so no socket leaks a ResourceWarning.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from nfs3wire import Nfs3  # noqa: E402
from rawclient import RawClient, RunningServer, serve_in_thread  # noqa: E402

from ferry.config import ExportConfig, ServerConfig  # noqa: E402

BACKENDS = ("local", "memory")


def export_config(backend: str, tmp_path: Path, **export_kw: object) -> ServerConfig:
    """A one-export config for ``backend`` with root squash off unless told otherwise."""
    export_kw.setdefault("root_squash", False)
    state = tmp_path / "state"
    if backend == "local":
        root = tmp_path / "export"
        root.mkdir(exist_ok=True)
        export = ExportConfig(path=str(root), **export_kw)  # type: ignore[arg-type]
    else:
        export = ExportConfig(path="/mem", backend="memory", **export_kw)  # type: ignore[arg-type]
    return ServerConfig(exports=[export], state_dir=state)


class Servers:
    """Starts servers and clients, and stops them all at teardown."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self._stack = ExitStack()

    def start(self, **export_kw: object) -> RunningServer:
        cfg = export_config(self.backend, self.tmp_path, **export_kw)
        return self._stack.enter_context(serve_in_thread(cfg))

    def start_config(self, cfg: ServerConfig) -> tuple[RunningServer, Callable[[], None]]:
        """A server that the test stops itself (the returned callable; idempotent)."""
        stack = ExitStack()
        srv = stack.enter_context(serve_in_thread(cfg))
        self._stack.callback(stack.close)
        return srv, stack.close

    def connect(self, srv: RunningServer) -> Nfs3:
        raw = srv.client()
        self._stack.callback(raw.close)
        path = srv.app.config.exports[0].mount_path
        return Nfs3(raw, raw.mount(path))

    def close(self) -> None:
        self._stack.close()


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

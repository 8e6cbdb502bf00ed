"""Servers and clients for the NFSv3 protocol tests, importable by name (unlike conftest)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from nfs3wire import Nfs3
from rawclient import RunningServer, serve_in_thread

from ferry.server.config import ExportConfig, ServerConfig

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

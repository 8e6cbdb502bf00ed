"""Servers and clients for the NFSv3 protocol tests, importable by name (unlike conftest).

Two ways to serve: ``Servers`` runs the asyncio server in a thread of the test process
(its ``App`` at hand: tests may seed or inspect the backend), one per test. ``ModelServers``
runs ``ferry serve --model M`` subprocesses, one per (model, backend) for a whole test
module, each test in a fresh directory of its own (``model_nfs``): so the functional suite
runs over every server model and backend that claims it (``SERVED``) at the cost of a few
server starts per module, not one per test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from nfs3wire import Nfs3
from rawclient import RawClient, RunningServer, serve_in_thread

from ferry.errors import ConfigError
from ferry.server.config import ExportConfig, ServerConfig, validate
from ferry.server.models import MODELS
from helpers import peers
from helpers.ferry_fixture import running_ferry

BACKENDS = ("local", "memory")
IN_THREAD = "async"
"""The model whose servers run in the test process (``serve_in_thread``)."""
WORKERS = {"prefork": 2}
"""``--workers`` for the models that take them: two, so calls really span processes."""


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


def claims(model: str, backend: str) -> bool:
    """Whether ``ferry serve`` accepts ``backend`` under ``model`` (the memory backend
    lives in one process, so the multi-process models refuse it): asked of the config
    validation itself, so the suite follows what the server claims."""
    export = ExportConfig(path="/srv", backend=backend)
    cfg = ServerConfig(exports=[export], model=model, workers=WORKERS.get(model, 0))
    try:
        validate(cfg)
    except ConfigError:
        return False
    return True


def _served() -> list[tuple[str, str]]:
    return [(m, b) for m in MODELS for b in BACKENDS if claims(m, b)]


SERVED = _served()
"""(model, backend) pairs the functional suite runs over."""


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


class ModelServers:
    """``ferry serve --model M`` subprocesses, started on first use, stopped at close (a
    traceback in a server's stderr fails the module then)."""

    def __init__(self, base: Callable[[str], Path]) -> None:
        self._base = base
        self._running: dict[tuple[str, str], peers.FerryServer] = {}
        self._stack = ExitStack()

    def get(self, model: str, backend: str) -> peers.FerryServer:
        key = (model, backend)
        if key not in self._running:
            extra = ["--model", model]
            if model in WORKERS:
                extra += ["--workers", str(WORKERS[model])]
            if backend != "local":
                extra += ["--backend", backend]
            served = running_ferry(self._base(f"{model}-{backend}"), extra=tuple(extra))
            self._running[key] = self._stack.enter_context(served)
        return self._running[key]

    def connect(self, model: str, backend: str, name: str, stack: ExitStack) -> Nfs3:
        """A root client whose ``root`` is a new directory ``name`` of the export, made
        like the export's root (mode), so each test starts from an empty directory."""
        server = self.get(model, backend)
        raw = RawClient(server.port)
        stack.callback(raw.close)
        nfs = Nfs3(raw, raw.mount(str(server.export)))
        mode = nfs.attr(nfs.root).mode & 0o7777
        nfs.root = nfs.new_dir(nfs.root, _safe(name), mode=mode)
        assert nfs.attr(nfs.root).mode & 0o7777 == mode
        return nfs

    def close(self) -> None:
        self._stack.close()


def _safe(name: str) -> bytes:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:200].encode()

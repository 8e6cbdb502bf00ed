"""From a ``ServerConfig`` to a running server: ``serve(config)`` (what ``ferry serve``
runs). It settles how many processes serve calls (``models.worker_processes``: by default
one per CPU for the async model where the backends allow it), builds the ``App``
(checking exports, reading or making the handle keys) before any fork,
binds the listeners (TCP, portmapper, per-worker UDP), starts the metrics exporter, hands
everything to the configured model and returns once it stopped (SIGTERM or SIGINT).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

from ferry.errors import ConfigError
from ferry.nfs3.mount import MountRegistry
from ferry.server.app import App, build_app
from ferry.server.config import ServerConfig, validate
from ferry.server.connection import Limits
from ferry.server.gctune import freeze_startup, tune_gc
from ferry.server.listen import bind_listener
from ferry.server.metrics import Metrics, exporting
from ferry.server.models import MODELS, describe, single_process_backends, worker_processes
from ferry.server.shared import FileMountTable
from ferry.server.skeleton import ServerSpec
from ferry.server.stopping import defer_signals
from ferry.server.udp import bind_udp

__all__ = ["serve"]

log = logging.getLogger("ferry")


def serve(config: ServerConfig, ready: Callable[[App, int], object] | None = None) -> None:
    """Serve ``config`` (see ``ferry.server.config``) until SIGTERM or SIGINT, with its model.

    Call it from the main thread of a process of its own (the models install signal
    handlers, and most fork). ``ready(app, port)`` runs once the listeners are bound
    (``port``: the NFS port, useful with ``port = 0``) and before serving starts; the
    ``ferry serve`` banner is printed there. A bad config or a port in use raises
    ``ConfigError``."""
    validate(config)
    workers = worker_processes(config)  # the banner and the log say it: describe(config)
    shared = MODELS[config.model].shares_state(workers)
    if shared and (held := single_process_backends(config)):
        log.warning(
            "backend %s keeps state in its process (not multiprocess_safe): with %d "
            "processes, a call may miss what another process holds (--workers 1 avoids it)",
            ", ".join(held), workers,
        )  # fmt: skip
    # first, so that a forked metrics exporter (several processes) holds no App or socket
    with exporting(config.metrics, config.resolved_state_dir(), shared) as metrics:
        _serve(config, workers, metrics, ready)


def _serve(
    config: ServerConfig,
    workers: int,
    metrics: Metrics,
    ready: Callable[[App, int], object] | None,
) -> None:
    model = MODELS[config.model]
    shared = model.shares_state(workers)
    defer_signals()  # a SIGTERM between the banner and the model's handlers stops cleanly
    tune_gc()
    app = build_app(config, metrics=metrics)  # checks exports, makes the key, before forks
    listeners: list[socket.socket] = []
    datagrams: list[list[socket.socket]] = []
    try:
        listeners, port = _listen(config)
        table: MountRegistry = app.mount.table
        if shared:
            app.close()  # each worker opens its own backends after the fork
            table = FileMountTable(config.resolved_state_dir() / "mounts.json", reset=True)
        spec = ServerSpec(
            config, listeners, port, Limits.from_config(config), workers,
            app.nfs.write_verifier, table, None if shared else app, keys=app.keys,
        )  # fmt: skip
        spec.datagrams = datagrams = _listen_udp(config, port, workers)
        spec.metrics = metrics
        if ready is not None:
            ready(app, port)
        log.info("%s", describe(config))
        freeze_startup()
        model(spec).run()
        log.info("stopped")
    finally:
        for sock in [*listeners, *(s for group in datagrams for s in group)]:
            sock.close()
        if not shared:
            app.close()


def _listen(config: ServerConfig) -> tuple[list[socket.socket], int]:
    """The NFS/MOUNT listener (and the portmapper's); returns them and the bound NFS port."""
    nfs = bind_listener(config.bind, config.port, "NFS")
    listeners = [nfs]
    try:
        if config.portmapper:
            listeners.append(bind_listener(config.bind, config.portmapper_port, "portmapper"))
    except ConfigError:
        nfs.close()
        raise
    return listeners, int(nfs.getsockname()[1])


def _listen_udp(config: ServerConfig, port: int, workers: int) -> list[list[socket.socket]]:
    """With ``udp``, per worker its own UDP sockets on the NFS (and portmapper) port: one
    SO_REUSEPORT group per port, so the kernel keeps each client on one worker."""
    if not config.udp:
        return []
    ports = [(port, "NFS")] + (
        [(config.portmapper_port, "portmapper")] if config.portmapper else []
    )
    groups: list[list[socket.socket]] = []
    try:
        for _ in range(workers):
            groups.append([])
            for number, what in ports:
                groups[-1].append(bind_udp(config.bind, number, what, shared=workers > 1))
    except ConfigError:
        for sock in (s for group in groups for s in group):
            sock.close()
        raise
    return groups

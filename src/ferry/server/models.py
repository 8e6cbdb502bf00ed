"""The server model registry: ``ferry serve --model NAME`` picks ``MODELS[NAME]``; and how
many processes serve calls, decided here once for the launcher, the banner and the log."""

from __future__ import annotations

from ferry.server.aio import AsyncModel
from ferry.server.app import backend_class
from ferry.server.config import ServerConfig
from ferry.server.prefork import PreforkServer
from ferry.server.process import ProcessServer
from ferry.server.serial import SerialServer
from ferry.server.skeleton import ServerModel
from ferry.server.thread import ThreadServer

__all__ = ["MODELS", "describe", "single_process_backends", "worker_processes"]

MODELS: dict[str, type[ServerModel]] = {
    "serial": SerialServer,  # one connection at a time
    "prefork": PreforkServer,  # N serial workers made up front
    "process": ProcessServer,  # a forked child per connection
    "thread": ThreadServer,  # a thread per connection
    "async": AsyncModel,  # event loops: one per CPU by default, N with --workers N
}


def worker_processes(config: ServerConfig) -> int:
    """The worker processes ``config`` runs: ``workers`` if set, else its model's default
    for its exports (``ServerModel.default_workers``: the async model's is one per CPU
    when every backend can be shared by processes, else 1)."""
    return config.workers or MODELS[config.model].default_workers(config)


def single_process_backends(config: ServerConfig) -> list[str]:
    """The backends of ``config`` that keep state in their process
    (``Backend.multiprocess_safe`` False), each named once, in config order."""
    names = [e.backend for e in config.exports if not backend_class(e).multiprocess_safe]
    return list(dict.fromkeys(names))


def describe(config: ServerConfig) -> str:
    """How calls are served, for the banner and the log: ``async model, 2 worker
    processes (one per CPU, at most 4; --workers 1 for one)``."""
    model, workers = config.model, worker_processes(config)
    if model == "process":
        return "process model, a process per connection"
    if workers == 1:
        text = f"{model} model, 1 process"
        held = single_process_backends(config) if model == "async" else []
        if held and not config.workers:
            text += f" (backend {', '.join(held)} keeps its state in one process)"
        return text
    text = f"{model} model, {workers} worker processes"
    if model == "async" and not config.workers:
        text += f" (one per CPU, at most {AsyncModel.MAX_DEFAULT_WORKERS}; --workers 1 for one)"
    return text

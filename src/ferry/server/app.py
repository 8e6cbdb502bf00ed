"""Assembling a server: backends from config, the NFS/MOUNT/portmap programs, the dispatcher.

Every server model serves the ``Dispatcher`` built here; nothing protocol-specific is
decided by a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import ipaddress
import os
import threading
from pathlib import Path

from ferry.backends import LocalBackend, MemoryBackend, ReadOnly, load_backend
from ferry.backends.base import Backend
from ferry.errors import ConfigError
from ferry.nfs3 import mount
from ferry.nfs3 import procedures as nfs_procedures
from ferry.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3
from ferry.nfs3.exports import Export
from ferry.nfs3.filehandle import HandleCodec
from ferry.nfs3.mount import MountRegistry, MountService, MountTable, mount_program
from ferry.nfs3.program import nfs_program
from ferry.nfs3.service import Nfs3Service
from ferry.rpc.dispatch import Dispatcher
from ferry.rpc.drc import DuplicateRequestCache, ReplyCache
from ferry.rpc.portmap import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    PMAP_PROGRAM,
    PMAP_V2,
    Mapping,
    portmap_program,
)
from ferry.server.config import ExportConfig, ServerConfig
from ferry.server.inline import InlinePolicy
from ferry.server.keys import load_key_file, load_or_create_key
from ferry.server.metrics import NO_METRICS, Metrics

NON_IDEMPOTENT: frozenset[tuple[int, int, int]] = frozenset(
    [(NFS_PROGRAM, NFS_V3, proc) for proc in nfs_procedures.NON_IDEMPOTENT]
    + [(MOUNT_PROGRAM, MOUNT_V3, proc) for proc in mount.NON_IDEMPOTENT]
)
"""(program, version, procedure) whose replies the duplicate request cache keeps: the
procedure tables' idempotency columns (``nfs3.procedures``, ``nfs3.mount``)."""


@dataclasses.dataclass(slots=True)
class App:
    """The protocol side of a server, ready to be put behind any IO model."""

    config: ServerConfig
    nfs: Nfs3Service
    mount: MountService
    exports: list[Export]
    drc: ReplyCache | None = None
    metrics: Metrics = NO_METRICS
    """What the dispatcher and the IO adapters report to (``ferry.server.metrics``)."""
    keys: tuple[bytes, ...] = ()
    """The handle keys it was built with (the first signs), read once at start: worker
    processes, restarted ones included, get these rather than reading the file again."""

    def dispatcher(self, port: int) -> Dispatcher:
        """A dispatcher whose portmapper advertises NFS and MOUNT on ``port`` (over TCP, and
        UDP when enabled). Every dispatcher of this App shares its DRC."""
        protocols = [IPPROTO_TCP] + ([IPPROTO_UDP] if self.config.udp else [])
        maps = [
            Mapping(prog, vers, prot, at)
            for prot in protocols
            for prog, vers, at in (
                (NFS_PROGRAM, NFS_V3, port),
                (MOUNT_PROGRAM, MOUNT_V3, port),
                (PMAP_PROGRAM, PMAP_V2, self.config.portmapper_port),
            )
        ]
        programs = [nfs_program(self.nfs), mount_program(self.mount), portmap_program(maps)]
        observer = self.metrics if self.metrics.enabled else None  # none: no hot-path cost
        return Dispatcher(programs, self.drc, observer)

    def inline_policy(self) -> InlinePolicy:
        """Which calls an event loop may answer itself (``ferry.server.inline``): decided
        here, once per server, from the config and every export's backend."""
        backends = [export.backend for export in self.exports]
        return InlinePolicy.for_backends(self.config.inline_calls, backends)

    def close(self) -> None:
        for export in self.exports:
            export.backend.close()


def build_app(
    config: ServerConfig,
    write_verifier: bytes | None = None,
    table: MountRegistry | None = None,
    metrics: Metrics = NO_METRICS,
    drc: ReplyCache | None = None,
    keys: tuple[bytes, ...] = (),
) -> App:
    """Open every export's backend and build the services; raises ConfigError.

    Worker processes of one server pass the same ``write_verifier`` (made once per run),
    handle ``keys``, a shared MOUNT ``table`` and a shared ``drc``; by default each call
    gets its own (keys from the config, the DRC in this process's memory unless
    ``drc_entries`` is 0)."""
    state_dir = config.resolved_state_dir()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        keys = keys or tuple(_handle_keys(config, state_dir))
    except OSError as exc:
        raise ConfigError(f"state directory {state_dir} is not usable: {exc}") from exc
    exports = [_export(e, state_dir) for e in config.exports]
    codec, verifier = HandleCodec(keys[0], keys[1:]), write_verifier or os.urandom(8)
    nfs = Nfs3Service(exports, codec, verifier, new_lock=threading.Lock)  # calls run on threads
    if drc is None and config.drc_entries > 0:
        drc = DuplicateRequestCache(
            NON_IDEMPOTENT, config.drc_entries, config.drc_bytes, lock=threading.Lock()
        )
    mount = MountService(nfs, table if table is not None else MountTable(threading.Lock()))
    mount.warm()
    return App(config, nfs, mount, exports, drc, metrics, keys)


def _handle_keys(config: ServerConfig, state_dir: Path) -> list[bytes]:
    """The handle keys: the configured one, those of the key file, or this server's own."""
    if config.handle_key_file is not None:
        return load_key_file(config.handle_key_file)
    return [config.handle_key or load_or_create_key(state_dir)]


def _export(cfg: ExportConfig, state_dir: Path) -> Export:
    backend = _backend(cfg, state_dir)
    if cfg.read_only:
        backend = ReadOnly(backend)
    clients = tuple(ipaddress.ip_network(c, strict=False) for c in cfg.clients)
    return Export(
        cfg.mount_path,
        backend,
        cfg.read_only,
        clients,
        cfg.root_squash,
        cfg.all_squash,
        cfg.anonuid,
        cfg.anongid,
        cfg.id,
    )


def backend_class(cfg: ExportConfig) -> type[Backend]:
    """The class that serves export ``cfg`` (imported, not instantiated); ConfigError."""
    if cfg.backend == "memory":
        return MemoryBackend
    if cfg.backend == "local":
        return LocalBackend
    return load_backend(cfg.backend)


def _backend(cfg: ExportConfig, state_dir: Path) -> Backend:
    if cfg.backend == "memory":
        return MemoryBackend(**cfg.options)
    if cfg.backend != "local":
        cls = load_backend(cfg.backend)
        options = dict(cfg.options)
        if "state_dir" in inspect.signature(cls).parameters and "state_dir" not in options:
            digest = hashlib.sha256(f"{cfg.backend}:{cfg.path}".encode()).hexdigest()[:16]
            options["state_dir"] = str(state_dir / f"export-{digest}")
        try:  # other backends get the export path first, then their options
            return cls(cfg.path, **options)  # type: ignore[call-arg]
        except TypeError as exc:
            raise ConfigError(f"backend {cfg.backend}: bad options: {exc}") from exc
    root = Path(cfg.path)
    if not root.exists():
        raise ConfigError(f"export path does not exist: {root}")
    if not root.is_dir():
        raise ConfigError(f"export path is not a directory: {root}")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    sub = state_dir / f"export-{digest}"
    return LocalBackend(root.resolve(), state_dir=sub)

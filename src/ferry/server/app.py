"""Assembling a server: backends from config, the NFS/MOUNT/portmap programs, the dispatcher.

Every server model serves the ``Dispatcher`` built here; nothing protocol-specific is
decided by a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from pathlib import Path

from ferry.backends import LocalBackend, MemoryBackend, ReadOnly, load_backend
from ferry.backends.base import Backend
from ferry.config import ExportConfig, ServerConfig
from ferry.errors import ConfigError
from ferry.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3
from ferry.nfs3.exports import Export
from ferry.nfs3.filehandle import HandleCodec, load_or_create_key
from ferry.nfs3.mount import MountRegistry, MountService, mount_program
from ferry.nfs3.procedures import nfs_program
from ferry.nfs3.service import Nfs3Service
from ferry.rpc.dispatch import Dispatcher
from ferry.rpc.portmap import IPPROTO_TCP, PMAP_PROGRAM, PMAP_V2, Mapping, portmap_program


@dataclasses.dataclass(slots=True)
class App:
    """The protocol side of a server, ready to be put behind any IO model."""

    config: ServerConfig
    nfs: Nfs3Service
    mount: MountService
    exports: list[Export]

    def dispatcher(self, port: int) -> Dispatcher:
        """A dispatcher whose portmapper advertises NFS and MOUNT on ``port``."""
        maps = [
            Mapping(NFS_PROGRAM, NFS_V3, IPPROTO_TCP, port),
            Mapping(MOUNT_PROGRAM, MOUNT_V3, IPPROTO_TCP, port),
            Mapping(PMAP_PROGRAM, PMAP_V2, IPPROTO_TCP, self.config.portmapper_port),
        ]
        return Dispatcher([nfs_program(self.nfs), mount_program(self.mount), portmap_program(maps)])

    def close(self) -> None:
        for export in self.exports:
            export.backend.close()


def build_app(
    config: ServerConfig,
    write_verifier: bytes | None = None,
    table: MountRegistry | None = None,
) -> App:
    """Open every export's backend and build the services; raises ConfigError.

    Worker processes of one server pass the same ``write_verifier`` (made once per run)
    and a shared MOUNT ``table``; by default each call gets its own."""
    state_dir = config.resolved_state_dir()
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        key = config.handle_key or load_or_create_key(state_dir)
    except OSError as exc:
        raise ConfigError(f"state directory {state_dir} is not usable: {exc}") from exc
    exports = [_export(e, state_dir) for e in config.exports]
    nfs = Nfs3Service(exports, HandleCodec(key), write_verifier)
    return App(config, nfs, MountService(nfs, table), exports)


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


def _backend(cfg: ExportConfig, state_dir: Path) -> Backend:
    if cfg.backend == "memory":
        return MemoryBackend(**cfg.options)
    if cfg.backend != "local":
        cls = load_backend(cfg.backend)
        try:  # third-party backends get the export path first, then their options
            return cls(cfg.path, **cfg.options)  # type: ignore[call-arg]
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

"""Server configuration: the TOML file format, command-line overrides, and validation.

Example::

    [server]
    bind = "0.0.0.0"
    port = 2049
    state_dir = "/var/lib/ferry"    # handle key and per-export state
    handle_key_file = "/etc/ferry/handle.key"  # or: handle_key = "64 hex digits"; default:
                                    # a key made in state_dir (one per server)
    portmapper = false              # also answer portmap on port 111
    max_record_size = 4259840
    model = "async"                 # serial, prefork, process, thread or async
    workers = 0                     # processes for prefork/async; 0: the model's default
                                    # (async: one per CPU, at most 4, if every backend is
                                    # multiprocess_safe, else 1)
    max_connections = 1024          # per process; also caps threads and child processes
    max_in_flight = 64              # calls per connection at once (async model)
    inline_calls = true             # async model: NULL and metadata reads of local/memory
                                    # exports run on the event loop (no thread hop)
    idle_timeout = 300              # seconds without a byte before a connection is closed
    record_timeout = 60             # seconds a started record may take to arrive whole
    send_timeout = 60               # seconds a reply may wait for the client to read it
    udp = false                     # also serve NFS, MOUNT (and portmap) over UDP
    drc_entries = 4096              # duplicate request cache size; 0 disables it
    drc_bytes = 8388608             # ... and its bound on cached reply bytes
    metrics = "127.0.0.1:9100"      # serve Prometheus metrics there ("": off; docs/metrics.md)

    [[export]]
    path = "/srv/share"             # directory served (local backend)
    name = "/share"                 # what clients MOUNT; defaults to path
    read_only = false
    clients = ["127.0.0.1", "10.0.0.0/8"]
    root_squash = true
    all_squash = false
    anonuid = 65534
    anongid = 65534
    backend = "local"               # or "memory", "cephfs", "s3", or "package.module:Class"
    options = {}                    # keyword arguments for the backend (cephfs, s3, custom)

    [[export]]                      # CephFS (docs/scale-out.md): path is inside CephFS
    path = "/shared"
    name = "/ceph"
    backend = "cephfs"
    [export.options]                # also fs_name, mount_timeout, settings = {...}
    conf = "/etc/ceph/ceph.conf"
    client_id = "admin"
    keyring = "/etc/ceph/ceph.client.admin.keyring"
    op_timeout = 30                 # seconds before a stuck call answers JUKEBOX

Every error is a ``ConfigError`` naming the key at fault.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any

from ferry.errors import ConfigError
from ferry.nfs3.exports import export_id_for
from ferry.rpc.auth import NOBODY
from ferry.rpc.record import DEFAULT_MAX_RECORD

DEFAULT_PORT = 2049
MODELS = ("serial", "prefork", "process", "thread", "async")
"""Server models (``ferry.server.models.MODELS`` maps each to its class)."""
MAX_WORKERS = 256
UDP_MODELS = MODELS
"""Models that serve UDP too (``ferry.server.udp``): all of them."""


@dataclasses.dataclass(slots=True)
class ExportConfig:
    path: str
    name: str = ""
    backend: str = "local"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    read_only: bool = False
    clients: tuple[str, ...] = ()
    root_squash: bool = True
    all_squash: bool = False
    anonuid: int = NOBODY
    anongid: int = NOBODY
    id: int = 0

    @property
    def mount_path(self) -> str:
        return self.name or self.path


@dataclasses.dataclass(slots=True)
class ServerConfig:
    exports: list[ExportConfig]
    bind: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    state_dir: Path | None = None
    portmapper: bool = False
    portmapper_port: int = 111
    max_record_size: int = DEFAULT_MAX_RECORD
    idle_timeout: float = 300.0
    record_timeout: float = 60.0
    send_timeout: float = 60.0
    max_connections: int = 1024
    max_in_flight: int = 64
    model: str = "async"
    workers: int = 0
    handle_key: bytes | None = None
    handle_key_file: Path | None = None
    """Keys in a file (one hex key a line: the first signs handles, the others are still
    accepted), read at start; see ``ferry.server.keys.load_key_file``."""
    udp: bool = False
    drc_entries: int = 4096
    drc_bytes: int = 8 << 20
    metrics: str = ""
    """ADDR:PORT of the Prometheus ``/metrics`` endpoint; empty: no metrics."""
    inline_calls: bool = True
    """Async model: answer calls that wait on no slow IO on the event loop, without a thread
    hop (``ferry.server.inline``); False runs every call on the call threads."""

    def resolved_state_dir(self) -> Path:
        """Where handle keys and backend state live; by default keyed by the export set."""
        if self.state_dir is not None:
            return self.state_dir
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        digest = hashlib.sha256("\0".join(e.path for e in self.exports).encode()).hexdigest()
        return base / "ferry" / digest[:16]


_SERVER_KEYS = {
    "bind",
    "port",
    "state_dir",
    "portmapper",
    "portmapper_port",
    "max_record_size",
    "idle_timeout",
    "record_timeout",
    "send_timeout",
    "max_connections",
    "max_in_flight",
    "model",
    "workers",
    "handle_key",
    "handle_key_file",
    "udp",
    "drc_entries",
    "drc_bytes",
    "metrics",
    "inline_calls",
}
_EXPORT_KEYS = {f.name for f in dataclasses.fields(ExportConfig)}


def load(path: Path) -> ServerConfig:
    """Read and validate a TOML config file."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return from_dict(data, origin=str(path))


def from_dict(data: dict[str, Any], origin: str = "config") -> ServerConfig:
    unknown = set(data) - {"server", "export"}
    if unknown:
        raise ConfigError(f"{origin}: unknown section(s): {', '.join(sorted(unknown))}")
    server = _typed(data.get("server", {}), dict, f"{origin}: [server]")
    _check_keys(server, _SERVER_KEYS, f"{origin}: [server]")
    raw_exports = data.get("export", [])
    if not isinstance(raw_exports, list):
        raise ConfigError(f"{origin}: export must be an array of tables ([[export]])")
    exports = [_export(e, f"{origin}: [[export]] #{i + 1}") for i, e in enumerate(raw_exports)]
    cfg = ServerConfig(exports=exports)
    for key, value in server.items():
        if key in ("state_dir", "handle_key_file"):
            value = Path(_typed(value, str, f"{origin}: server.{key}"))
        elif key == "handle_key":
            value = _hex_key(value, f"{origin}: server.handle_key")
        else:
            value = _typed(value, type(getattr(cfg, key)), f"{origin}: server.{key}")
        setattr(cfg, key, value)
    validate(cfg, origin)
    return cfg


def _export(raw: Any, where: str) -> ExportConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table")
    _check_keys(raw, _EXPORT_KEYS, where)
    if "path" not in raw:
        raise ConfigError(f"{where}: 'path' is required")
    cfg = ExportConfig(path=_typed(raw["path"], str, f"{where}.path"))
    for key, value in raw.items():
        if key == "clients":
            value = tuple(
                _typed(v, str, f"{where}.clients") for v in _typed(value, list, f"{where}.clients")
            )
        elif key != "path":
            value = _typed(value, type(getattr(cfg, key)), f"{where}.{key}")
        setattr(cfg, key, value)
    if not cfg.path:
        raise ConfigError(f"{where}.path: must not be empty")
    for key, top in (("anonuid", 0xFFFFFFFF), ("anongid", 0xFFFFFFFF), ("id", 0xFFFF)):
        if not 0 <= getattr(cfg, key) <= top:
            raise ConfigError(f"{where}.{key}: {getattr(cfg, key)} out of range 0..{top}")
    for c in cfg.clients:
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError as exc:
            raise ConfigError(f"{where}.clients: {c!r} is not an address or network") from exc
    return cfg


def validate(cfg: ServerConfig, origin: str = "config") -> None:
    if not cfg.exports:
        raise ConfigError(f"{origin}: no export given (add an [[export]] table or a PATH)")
    if cfg.handle_key is not None and cfg.handle_key_file is not None:
        raise ConfigError(f"{origin}: give handle_key or handle_key_file, not both")
    for key in ("port", "portmapper_port"):
        if not 0 <= getattr(cfg, key) <= 65535:
            raise ConfigError(f"{origin}: {key} {getattr(cfg, key)} out of range")
    if cfg.max_connections < 1:
        raise ConfigError(f"{origin}: max_connections must be at least 1")
    names = [e.mount_path for e in cfg.exports]
    if len(set(names)) != len(names):
        raise ConfigError(f"{origin}: two exports have the same name")
    ids = [e.id or export_id_for(e.mount_path) for e in cfg.exports]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{origin}: two exports have the same id (set a distinct 'id')")
    if cfg.max_record_size < 64 * 1024:
        raise ConfigError(f"{origin}: max_record_size must be at least 65536")
    _validate_serving(cfg, origin)


def _validate_serving(cfg: ServerConfig, origin: str) -> None:
    """The server model, its worker count and the per-connection limits."""
    if cfg.model not in MODELS:
        raise ConfigError(f"{origin}: model {cfg.model!r} is not one of {', '.join(MODELS)}")
    if not 0 <= cfg.workers <= MAX_WORKERS:
        raise ConfigError(f"{origin}: workers must be between 0 and {MAX_WORKERS}")
    if cfg.workers > 1 and cfg.model not in ("prefork", "async"):
        raise ConfigError(f"{origin}: workers applies to the prefork and async models only")
    for key in ("idle_timeout", "record_timeout", "send_timeout"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{origin}: {key} must not be negative (0 disables it)")
    if cfg.max_in_flight < 1:
        raise ConfigError(f"{origin}: max_in_flight must be at least 1")
    if cfg.drc_entries < 0 or cfg.drc_bytes < 0:
        raise ConfigError(f"{origin}: drc_entries and drc_bytes must not be negative")
    if cfg.metrics:
        parse_address(cfg.metrics, f"{origin}: metrics")
    if cfg.udp and cfg.model not in UDP_MODELS:
        raise ConfigError(f"{origin}: udp is served by the {' and '.join(UDP_MODELS)} models only")
    several = cfg.model in ("prefork", "process") or (cfg.model == "async" and cfg.workers > 1)
    if several and any(e.backend == "memory" for e in cfg.exports):
        raise ConfigError(
            f"{origin}: the memory backend lives in one process; "
            f"use model thread, serial or async with one worker"
        )


def parse_address(text: str, where: str = "metrics") -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (loopback) -> (host, port); ConfigError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{where}: expected ADDR:PORT, got {text!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return host or "127.0.0.1", int(port)


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s): {', '.join(sorted(unknown))}")


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def _hex_key(value: Any, where: str) -> bytes:
    try:
        key = bytes.fromhex(_typed(value, str, where))
    except ValueError as exc:
        raise ConfigError(f"{where}: must be hex") from exc
    if len(key) < 16:
        raise ConfigError(f"{where}: must be at least 16 bytes (32 hex digits)")
    return key

"""The ``ferry`` command line."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ferry import __version__
from ferry.backends.base import ReadOnlyBackend
from ferry.cli.mount import FUSE_INSTALL
from ferry.errors import ConfigError
from ferry.nfs3.exports import Export
from ferry.rpc.auth import Credentials
from ferry.server import config as cfgmod
from ferry.server import serve
from ferry.server.app import App
from ferry.server.models import describe

log = logging.getLogger("ferry")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(name)s[%(process)d] %(levelname)s %(message)s",  # workers apart
    )
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"ferry: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferry", description="A user-space NFSv3 toolkit.")
    parser.add_argument("--version", action="version", version=f"ferry {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a directory (or a config file's exports)")
    serve.add_argument("path", nargs="?", help="directory to export")
    serve.add_argument("--port", type=int, help=f"TCP port (default {cfgmod.DEFAULT_PORT})")
    serve.add_argument("--bind", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--read-only", action="store_true", help="refuse every change")
    serve.add_argument("--config", type=Path, help="TOML config file (see ferry.server.config)")
    serve.add_argument("--state-dir", type=Path, help="where handle keys and state are kept")
    serve.add_argument("--backend", help="'local' (default), 'memory' or 'module:Class'")
    serve.add_argument(
        "--no-root-squash",
        action="store_true",
        help="let client root act as root (default: squash to nobody)",
    )
    serve.add_argument("--portmapper", action="store_true", help="also answer portmap (v2)")
    serve.add_argument("--portmapper-port", type=int, help="portmap port (default 111)")
    serve.add_argument(
        "--model", choices=cfgmod.MODELS, help="how connections are served (default async)"
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="processes for prefork/async (async: one per CPU, at most 4, if the backend "
        "allows; 1: one process)",
    )
    serve.add_argument("--max-connections", type=int, help="connections per process (1024)")
    serve.add_argument("--idle-timeout", type=float, help="seconds a silent client may stay")
    serve.add_argument("--record-timeout", type=float, help="seconds a record may take")
    serve.add_argument("--send-timeout", type=float, help="seconds a reply may wait")
    serve.add_argument("--udp", action="store_true", help="also serve over UDP")
    serve.add_argument(
        "--no-inline",
        action="store_true",
        help="run every call on the call threads, none on the event loop (async model)",
    )
    serve.add_argument("--metrics", metavar="ADDR:PORT", help="serve Prometheus /metrics there")
    serve.set_defaults(func=cmd_serve)
    from ferry.cli.client import add_client_commands  # here: `serve` needs no fsspec/rich

    add_client_commands(sub)
    from ferry.cli.proxy import add_proxy_command

    add_proxy_command(sub)
    from ferry.cli.mount import add_mount_command

    add_mount_command(sub)
    from ferry.cli.bench import add_bench_command

    add_bench_command(sub)
    return parser


_OVERRIDES = (
    "port",
    "bind",
    "state_dir",
    "portmapper_port",
    "model",
    "workers",
    "max_connections",
    "idle_timeout",
    "record_timeout",
    "send_timeout",
    "metrics",
)


def server_config(args: argparse.Namespace) -> cfgmod.ServerConfig:
    """The config from --config and/or PATH, with command-line overrides applied."""
    if args.config is not None:
        config = cfgmod.load(args.config)
    elif args.path is None:
        raise ConfigError("give a directory to serve, or --config FILE")
    else:
        config = cfgmod.ServerConfig(exports=[])
    if args.path is not None:
        path = Path(args.path)
        if args.backend in (None, "local"):
            if not path.exists():
                raise ConfigError(f"export path does not exist: {path}")
            if not path.is_dir():
                raise ConfigError(f"export path is not a directory: {path}")
            path = path.resolve()
        config.exports.append(
            cfgmod.ExportConfig(
                path=str(path),
                backend=args.backend or "local",
                read_only=args.read_only,
                root_squash=not args.no_root_squash,
            )
        )
    for key in ("port", "portmapper_port"):
        value = getattr(args, key)
        if value is not None and not 0 <= value <= 65535:
            raise ConfigError(f"--{key.replace('_', '-')} {value}: out of range (0-65535)")
    for key in _OVERRIDES:
        if getattr(args, key) is not None:
            setattr(config, key, getattr(args, key))
    config.portmapper = config.portmapper or args.portmapper
    config.udp = config.udp or args.udp
    config.inline_calls = config.inline_calls and not args.no_inline
    origin = "command line" if args.config is None else f"{args.config} with the command line"
    cfgmod.validate(config, origin)
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    config = server_config(args)
    serve(config, ready=lambda app, port: print(instructions(app, config.bind, port), flush=True))
    return 0


def instructions(app: App, bind: str, port: int) -> str:
    """What the server does and how to reach it, printed at start-up: per export, what backs
    it, who may mount it, who client users act as, and the commands to mount or list it
    (only those the printed host may use)."""
    host = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
    shown = f"[{host}]" if ":" in host else host
    transports = "TCP and UDP" if app.config.udp else "TCP"
    lines = []
    for export, cfg in zip(app.exports, app.config.exports, strict=True):
        p = export.path
        read_only = export.read_only or isinstance(export.backend, ReadOnlyBackend)
        mode = "read-only" if read_only else "read-write"
        lines += [
            f"ferry: serving {p} on {shown}:{port} (NFSv3 + MOUNTv3 over {transports}, {mode})",
            f"  backing: {_backing(cfg)}",
            f"  clients: {_clients(export)}",
            f"  users:   {_squashing(export)}",
        ]
        if not read_only and (note := _write_note(export, cfg)):
            lines.append(f"  note:    {note}")
        if not export.allows(host):
            lines.append(f"  ({host} may not mount this export, so no commands are shown for it)")
            continue
        lines += [
            f"  Linux:   sudo mount -t nfs -o vers=3,proto=tcp,port={port},mountport={port},"
            f"nolock {shown}:{p} /mnt",
            f"  macOS:   sudo mount_nfs -o vers=3,tcp,port={port},mountport={port},nolocks,"
            f"resvport {shown}:{p} /Volumes/ferry",
            f"  libnfs:  nfs-ls 'nfs://{shown}{p}?version=3&nfsport={port}&mountport={port}'",
            f"  Ferry:   ferry ls 'nfs://{shown}:{port}{p}'",
            (
                f"  FUSE:    ferry mount 'nfs://{shown}:{port}{p}' /mnt/ferry  (no root needed)"
                if importlib.util.find_spec("pyfuse3") is not None
                else f"  FUSE:    `ferry mount` needs {FUSE_INSTALL}"
            ),
        ]
    lines.append(f"ferry: {describe(app.config)}")
    return "\n".join(lines)


def _backing(cfg: cfgmod.ExportConfig) -> str:
    if cfg.backend != "local":
        return f"backend {cfg.backend}" + (f", {cfg.path}" if cfg.backend != "memory" else "")
    try:
        st = os.stat(cfg.path)
    except OSError:
        return f"directory {cfg.path}"
    return f"directory {cfg.path} (owner {st.st_uid}:{st.st_gid}, mode {st.st_mode & 0o7777:04o})"


def _clients(export: Export) -> str:
    if not export.clients:
        return "any address may mount it"
    return "only " + ", ".join(str(net) for net in export.clients) + " may mount it"


def _squashing(export: Export) -> str:
    anon = f"{export.anonuid}:{export.anongid}"
    if export.all_squash:
        return f"every client user acts as {anon} (all_squash)"
    if export.root_squash:
        return f"client root acts as {anon} (root_squash), other users as themselves"
    return "client root acts as root (no root_squash), other users as themselves"


def _write_note(export: Export, cfg: cfgmod.ExportConfig) -> str:
    """Why the user running this server, as a client on this machine, could not write the
    export's top directory (empty if they could, or if that cannot be told)."""
    if cfg.backend != "local":
        return ""
    uid, gid = os.getuid(), os.getgid()
    cred = export.squash(Credentials(uid=uid, gid=gid))
    if cred.uid == 0:
        return ""
    try:
        st = os.stat(cfg.path)
    except OSError:
        return ""
    bits = 0o200 if st.st_uid == cred.uid else 0o020 if st.st_gid == cred.gid else 0o002
    if st.st_mode & bits:
        return ""
    who = "client root" if uid == 0 else f"uid {uid}"
    fix = f"chown {cred.uid}:{cred.gid} {cfg.path}" if uid == 0 else "serve a directory you own"
    return (
        f"{who} acts as {cred.uid}:{cred.gid} here, who may not write to {cfg.path}"
        f" (owner {st.st_uid}:{st.st_gid}, mode {st.st_mode & 0o7777:04o}): {fix}"
    )


if __name__ == "__main__":
    sys.exit(main())

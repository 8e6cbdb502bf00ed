"""The ``ferry`` command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from ferry import config as cfgmod
from ferry.backends.base import ReadOnlyBackend
from ferry.errors import ConfigError
from ferry.server.aio import AsyncServer, Limits
from ferry.server.app import App, build_app

log = logging.getLogger("ferry")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
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
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve a directory (or a config file's exports)")
    serve.add_argument("path", nargs="?", help="directory to export")
    serve.add_argument("--port", type=int, help=f"TCP port (default {cfgmod.DEFAULT_PORT})")
    serve.add_argument("--bind", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--read-only", action="store_true", help="refuse every change")
    serve.add_argument("--config", type=Path, help="TOML config file (see ferry.config)")
    serve.add_argument("--state-dir", type=Path, help="where handle keys and state are kept")
    serve.add_argument("--backend", help="'local' (default), 'memory' or 'module:Class'")
    serve.add_argument(
        "--no-root-squash",
        action="store_true",
        help="let client root act as root (default: squash to nobody)",
    )
    serve.add_argument("--portmapper", action="store_true", help="also answer portmap (v2)")
    serve.add_argument("--portmapper-port", type=int, help="portmap port (default 111)")
    serve.set_defaults(func=cmd_serve)
    return parser


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
    for key in ("port", "bind", "state_dir", "portmapper_port"):
        if getattr(args, key) is not None:
            setattr(config, key, getattr(args, key))
    config.portmapper = config.portmapper or args.portmapper
    cfgmod.validate(config)
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    config = server_config(args)
    app = build_app(config)
    try:
        _install_uvloop()
        return asyncio.run(_serve(app))
    finally:
        app.close()


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def _serve(app: App) -> int:
    config = app.config
    limits = Limits(
        max_record=config.max_record_size,
        idle_timeout=config.idle_timeout,
        max_connections=config.max_connections,
    )
    server: AsyncServer | None = None
    try:
        port = config.port
        server = AsyncServer(app.dispatcher(port), limits)
        bound = await _listen(server, config.bind, port, "NFS")
        if port == 0:  # the portmapper must advertise the real port
            server.dispatcher = app.dispatcher(bound)
        if config.portmapper:
            await _listen(server, config.bind, config.portmapper_port, "portmapper")
        print(instructions(app, config.bind, bound), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down")
        return 0
    finally:
        if server is not None:
            await server.close()


async def _listen(server: AsyncServer, host: str, port: int, what: str) -> int:
    try:
        return await server.listen(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(f"{what} port {port} on {host} is already in use") from exc
        if exc.errno == errno.EACCES:
            raise ConfigError(f"no permission to listen on {what} port {port}") from exc
        if exc.errno in (errno.EADDRNOTAVAIL, socket.EAI_NONAME):
            raise ConfigError(f"cannot listen on {host}: {exc.strerror}") from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc


def instructions(app: App, bind: str, port: int) -> str:
    """How to reach the server, printed at start-up."""
    host = "127.0.0.1" if bind in ("0.0.0.0", "::", "") else bind
    shown = f"[{host}]" if ":" in host else host
    lines = []
    for export in app.exports:
        p = export.path
        read_only = export.read_only or isinstance(export.backend, ReadOnlyBackend)
        mode = "read-only" if read_only else "read-write"
        lines += [
            f"ferry: serving {p} on {shown}:{port} (NFSv3 + MOUNTv3 over TCP, {mode})",
            f"  Linux:  sudo mount -t nfs -o vers=3,proto=tcp,port={port},mountport={port},"
            f"nolock {shown}:{p} /mnt",
            f"  macOS:  sudo mount_nfs -o vers=3,tcp,port={port},mountport={port},nolocks,"
            f"resvport {shown}:{p} /Volumes/ferry",
            f"  libnfs: nfs-ls 'nfs://{shown}{p}?version=3&nfsport={port}&mountport={port}'",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

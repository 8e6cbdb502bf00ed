"""``ferry mount URL MOUNTPOINT``: the command line of the FUSE mount (``ferry.fusemount``).

Foreground mode serves until unmounted or signalled. Background mode (the default) forks
before anything else starts; the child mounts, tells the parent through a pipe, detaches
(new session, standard streams to /dev/null) and serves; the parent exits 0 once the
mount is up, or 1 with the child's error.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ferry import loops
from ferry.cli_retry import add_retry_options, at_least, retry_keywords

_READY = b"ok\n"


def add_mount_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("mount", help="mount an NFSv3 export on a local directory (FUSE)")
    p.add_argument("url", help="nfs://host[:port]/export[?nfsport=N&mountport=M&uid=U&gid=G]")
    p.add_argument("mountpoint", type=Path, help="an existing directory")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("--read-only", action="store_true", help="mount read-only")
    p.add_argument(
        "--uid",
        type=int,
        help="AUTH_SYS uid sent for every caller (default: each caller's own uid, gid and groups)",
    )
    p.add_argument("--gid", type=int, help="AUTH_SYS gid sent for every caller")
    p.add_argument("--attr-timeout", type=at_least(0.0), default=1.0, help="seconds (default 1)")
    p.add_argument("--entry-timeout", type=at_least(0.0), default=1.0, help="seconds (default 1)")
    add_retry_options(p, retry_for=math.inf)  # --hard/--soft, --timeout, --retrans, ...
    p.add_argument(
        "--read-ahead", type=at_least(0, int), default=2048, metavar="KIB",
        help="the kernel's read-ahead for the mount, KiB (default 2048; 0: the kernel's)",
    )  # fmt: skip
    p.add_argument(
        "--direct-io", action="store_true",
        help="bypass the kernel's page cache: faster large reads, no shared mmap",
    )  # fmt: skip
    p.add_argument("--allow-other", action="store_true", help="let other users in (root only)")
    p.add_argument("--fuse-debug", action="store_true", help="libfuse debug output")
    p.set_defaults(func=cmd_mount)


def cmd_mount(args: argparse.Namespace) -> int:
    try:
        from ferry.fusemount import MountOptions, mount
    except ImportError as exc:
        print(f"ferry: error: mount needs pyfuse3 (pip install 'ferry-nfs[fuse]'): {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    if not args.mountpoint.is_dir():
        print(f"ferry: error: mount point is not a directory: {args.mountpoint}", file=sys.stderr)
        return 2
    options = MountOptions(
        read_only=args.read_only,
        uid=args.uid,
        gid=args.gid,
        attr_timeout=args.attr_timeout,
        entry_timeout=args.entry_timeout,
        **retry_keywords(args),
        allow_other=args.allow_other,
        debug=args.fuse_debug,
        read_ahead_kib=args.read_ahead,
        direct_io=args.direct_io,
    )
    where = str(args.mountpoint.resolve())
    if args.foreground:

        def ready() -> None:
            print(f"ferry: mounted {args.url} on {where}", flush=True)

        return _run(lambda: mount(args.url, where, options, ready))
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        return _wait_ready(read_end, args.url, where)
    os.close(read_end)
    report = [write_end]  # emptied once the parent has been told

    def detach() -> None:
        os.setsid()
        os.write(report.pop(), _READY)
        os.close(write_end)
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)

    code = _run(lambda: mount(args.url, where, options, detach), report)
    os._exit(code)


def _run(start: Callable[[], Coroutine[Any, Any, None]], report: list[int] | None = None) -> int:
    """Run the mount; errors become one line on stderr (or down the pipe) and exit 1."""
    try:
        loops.run(start())
    except KeyboardInterrupt:
        return 130
    except (OSError, RuntimeError, ValueError) as exc:
        message = f"ferry: error: cannot mount: {exc}\n"
        if report:
            os.write(report[0], message.encode())
        else:
            sys.stderr.write(message)
        return 1
    return 0


def _wait_ready(fd: int, url: str, where: str) -> int:
    with os.fdopen(fd, "rb") as pipe:
        said = pipe.read()
    if said.startswith(_READY):
        print(f"ferry: mounted {url} on {where}", flush=True)
        return 0
    sys.stderr.write(said.decode(errors="replace") or "ferry: error: mount failed\n")
    return 1

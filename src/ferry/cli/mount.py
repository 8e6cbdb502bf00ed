"""``ferry mount URL MOUNTPOINT`` and ``ferry umount MOUNTPOINT``: the command line of the
FUSE mount (``ferry.fuse.mount``).

Foreground mode serves until unmounted or signalled. Background mode (the default) forks
before anything else starts; the child mounts, tells the parent through a pipe, detaches
(new session, standard streams to /dev/null) and serves; the parent exits 0 once the
mount is up, or 1 with the child's error. ``umount`` is ``fusermount3 -u`` for a mount
that /proc/self/mountinfo says is Ferry's (type ``fuse.ferry``); the mount process ends
when the kernel lets go of it.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ferry import loops
from ferry.cli.retry import add_retry_options, at_least, retry_keywords

_READY = b"ok\n"
FUSE_INSTALL = (
    "pyfuse3: pip install 'ferry-nfs[fuse]' (it builds against libfuse3: Debian packages"
    " fuse3 libfuse3-dev pkg-config gcc python3-dev)"
)
"""What ``ferry mount`` needs, said where it is missing (here and in the serve banner)."""
MOUNTINFO = Path("/proc/self/mountinfo")
FUSE_TYPE = "fuse.ferry"


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
    p = sub.add_parser("umount", help="unmount a `ferry mount` (fusermount3 -u)")
    p.add_argument("mountpoint", nargs="+", type=Path)
    p.add_argument("-z", "--lazy", action="store_true",
                   help="detach now, clean up once no longer busy (fusermount3 -z)")  # fmt: skip
    p.set_defaults(func=cmd_umount)


def cmd_mount(args: argparse.Namespace) -> int:
    try:
        from ferry.fuse.mount import mount
        from ferry.fuse.options import MountOptions
    except ImportError as exc:
        print(f"ferry: error: mount needs {FUSE_INSTALL}: {exc}", file=sys.stderr)
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


def cmd_umount(args: argparse.Namespace) -> int:
    """Each mount point in turn; status 1 if any failed, one line each, as umount does."""
    tool = shutil.which("fusermount3")
    if tool is None:
        print("ferry: umount needs fusermount3 (Debian/Ubuntu: apt install fuse3)",
              file=sys.stderr)  # fmt: skip
        return 2
    code = 0
    for where in args.mountpoint:
        problem = _umount(tool, where, args.lazy)
        if problem:
            print(f"ferry: umount: '{where}': {problem}", file=sys.stderr)
            code = 1
    return code


def _umount(tool: str, where: Path, lazy: bool) -> str | None:
    """``None`` once unmounted, else why not."""
    full = os.path.abspath(where)  # the mount point itself is not touched: it may hang
    target = os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full))
    kind = mount_type(target)
    if kind is None:
        return "not mounted"
    if kind != FUSE_TYPE:
        return f"not a ferry mount (type {kind}); use umount"
    argv = [tool, "-u", *(["-z"] if lazy else []), target]
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=60, check=False)  # fmt: skip
    if res.returncode:
        said = res.stderr.strip().splitlines()
        return said[-1].split(": ")[-1] if said else f"fusermount3 failed ({res.returncode})"
    return None


def mount_type(path: str) -> str | None:
    """The file system type mounted at ``path`` (the last mount there), from mountinfo."""
    found = None
    for line in MOUNTINFO.read_text().splitlines():
        fields = line.split()
        dash = fields.index("-")
        if _unescape(fields[4]) == path:
            found = fields[dash + 1]
    return found


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    for code in ("040", "011", "012", "134"):
        field = field.replace("\\" + code, chr(int(code, 8)))
    return field

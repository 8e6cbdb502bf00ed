"""The client half of the ``ferry`` command line: ls, cat, cp, stat, mkdir, rm, mv.

Every command takes ``nfs://`` URLs (the syntax of ``ferry.client.url``) and, where it makes
sense (cat, cp), local paths, and does its work through ``NfsFileSystem`` so the CLI and
the fsspec layer cannot drift apart. Errors are one line, ``ferry: error: ...``, exit
status 1 (2 for a malformed URL, as argparse does for other usage errors); never a
traceback. Progress bars (rich) go to stderr, by default only when it is a terminal.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import functools
import os
import posixpath
import shutil
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from ferry.errors import FerryError
from ferry.filesystem import NfsFileSystem

Handler = Callable[[argparse.Namespace], int]
COPY_BLOCK = 4 << 20


class UsageError(Exception):
    """A malformed argument (exit status 2)."""


def add_client_commands(sub: Any) -> None:
    """Register the client commands on ``ferry``'s subparsers (called from ``cli``)."""
    p = sub.add_parser("ls", help="list a directory on an NFS server")
    p.add_argument("url", nargs="+")
    p.add_argument("-l", dest="long", action="store_true", help="long listing")
    p.add_argument("-R", dest="recursive", action="store_true", help="list subdirectories")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("cat", help="print files (nfs:// or local) to stdout")
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_cat)
    p = sub.add_parser("cp", help="copy between nfs:// URLs and local paths")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None, help="always show")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show")
    p.set_defaults(func=cmd_cp)
    p = sub.add_parser("stat", help="show a file's attributes")
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_stat)
    p = sub.add_parser("mkdir", help="make directories")
    p.add_argument("-p", dest="parents", action="store_true", help="make parents, no error")
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_mkdir)
    p = sub.add_parser("rm", help="remove files (and directories with -r)")
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser("mv", help="rename or move within one NFS server")
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(func=cmd_mv)


# -- plumbing ----------------------------------------------------------------------------


def _guarded(func: Handler) -> Handler:
    """One-line errors and an exit status instead of tracebacks; connections closed."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except UsageError as exc:
            return _fail(str(exc), 2)
        except BrokenPipeError:
            _silence_stdout()
            return 141  # like a coreutils tool killed by SIGPIPE (128 + 13)
        except OSError as exc:
            return _fail(_describe(exc), 1)
        except (FerryError, ValueError) as exc:
            return _fail(str(exc), 1)
        finally:
            for fs in _OPEN.values():
                fs.close()
            _OPEN.clear()

    return run


def _fail(message: str, status: int) -> int:
    print(f"ferry: error: {message}", file=sys.stderr)
    return status


def _describe(exc: OSError) -> str:
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno and os.strerror(exc.errno) not in reason:  # asyncio: "Connect call failed"
        reason = f"{os.strerror(exc.errno)} ({reason})"
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


_OPEN: dict[tuple[Any, ...], NfsFileSystem] = {}


def _fs(url: str) -> tuple[AbstractFileSystem, str]:
    """The file system and path for ``url``: nfs:// URLs go to NfsFileSystem (one per
    server and user for the whole command), anything else is a local path."""
    if not url.startswith("nfs://"):
        return LocalFileSystem(), os.path.abspath(url)
    try:
        kwargs = NfsFileSystem._get_kwargs_from_urls(url)
        path = NfsFileSystem._strip_protocol(url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    key = tuple(sorted(kwargs.items()))
    if key not in _OPEN:
        _OPEN[key] = NfsFileSystem(**kwargs, skip_instance_cache=True)
    return _OPEN[key], path


def _is_nfs(fs: AbstractFileSystem) -> bool:
    return isinstance(fs, NfsFileSystem)


# -- ls, stat, cat -------------------------------------------------------------------------


@_guarded
def cmd_ls(args: argparse.Namespace) -> int:
    for i, url in enumerate(args.url):
        fs, path = _fs(url)
        if fs.info(path)["type"] != "directory":
            _print_entries([fs.info(path)], args.long, full=True)
            continue
        tree = fs.walk(path, detail=True) if args.recursive else [(path, None, None)]
        for j, (root, _, _) in enumerate(tree):
            if args.recursive or len(args.url) > 1:
                print(("\n" if i or j else "") + f"{root}:")
            _print_entries(fs.ls(root, detail=True), args.long)
    return 0


def _print_entries(entries: list[dict[str, Any]], long: bool, full: bool = False) -> None:
    for e in sorted(entries, key=lambda e: str(e["name"])):
        name = str(e["name"]) if full else posixpath.basename(str(e["name"]))
        print(_long_line(e, name) if long else name)


def _long_line(e: dict[str, Any], name: str) -> str:
    mode = e.get("mode", stat.S_IFDIR if e["type"] == "directory" else stat.S_IFREG)
    when = datetime.datetime.fromtimestamp(e.get("mtime", 0)).strftime("%Y-%m-%d %H:%M")
    fields = (stat.filemode(mode), e.get("nlink", 1), e.get("uid", 0), e.get("gid", 0))
    return "{} {:>3} {:>5} {:>5} {:>12} {} {}".format(*fields, e["size"], when, name)


@_guarded
def cmd_stat(args: argparse.Namespace) -> int:
    for url in args.url:
        fs, path = _fs(url)
        e = fs.info(path)
        mode = int(e.get("mode", 0))
        print(f"  File: {path}")
        print(f"  Size: {e['size']:<12} Type: {e['type']}")
        print(f"  Mode: ({stat.S_IMODE(mode):04o}/{stat.filemode(mode)})  "
              f"Uid: {e.get('uid', '?')}  Gid: {e.get('gid', '?')}")  # fmt: skip
        print(f" Inode: {e.get('ino', '?'):<12} Links: {e.get('nlink', '?')}")
        for label in ("mtime", "ctime", "atime"):
            if label in e:
                when = datetime.datetime.fromtimestamp(float(e[label])).astimezone()
                print(f"{label[0].upper()}time: {when.isoformat(sep=' ')}")
    return 0


@_guarded
def cmd_cat(args: argparse.Namespace) -> int:
    out = sys.stdout.buffer
    for url in args.url:
        fs, path = _fs(url)
        if _is_nfs(fs):
            fs.get_file(path, None, outfile=out)
        else:
            with fs.open(path, "rb") as f:
                shutil.copyfileobj(f, out, COPY_BLOCK)
    out.flush()
    return 0


# -- cp ----------------------------------------------------------------------------------


@_guarded
def cmd_cp(args: argparse.Namespace) -> int:
    (sfs, src), (dfs, dst) = _fs(args.src), _fs(args.dst)
    pairs = _copy_plan(sfs, src, dfs, dst, args.recursive)
    files = [(s, d, size) for s, d, size in pairs if size is not None]
    show = sys.stderr.isatty() if args.progress is None else args.progress
    with _progress(show, sum(size for _, _, size in files)) as advance:
        for s, d, size in pairs:
            if size is None:
                dfs.makedirs(d, exist_ok=True)
            else:
                _copy_one(sfs, s, dfs, d, advance(posixpath.basename(s)))
    return 0


def _copy_plan(
    sfs: AbstractFileSystem, src: str, dfs: AbstractFileSystem, dst: str, recursive: bool
) -> list[tuple[str, str, int | None]]:
    """(source, destination, size or None for a directory), parents first. As with cp,
    an existing destination directory receives the source under its own name."""
    info = sfs.info(src)
    if dfs.isdir(dst):
        dst = posixpath.join(dst, posixpath.basename(src.rstrip("/")))
    if info["type"] != "directory":
        return [(src, dst, int(info["size"]))]
    if not recursive:
        raise IsADirectoryError(errno.EISDIR, "Is a directory (use -r)", src)
    plan: list[tuple[str, str, int | None]] = [(src, dst, None)]
    for path, e in sorted(sfs.find(src, withdirs=True, detail=True).items()):
        target = posixpath.join(dst, posixpath.relpath(path, src))
        plan.append((path, target, None if e["type"] == "directory" else int(e["size"])))
    return plan


def _copy_one(
    sfs: AbstractFileSystem, src: str, dfs: AbstractFileSystem, dst: str, cb: Callback
) -> None:
    """The fastest route: pipelined get/put when one side is NFS, streams otherwise."""
    if _is_nfs(sfs) and not _is_nfs(dfs):
        sfs.get_file(src, dst, callback=cb)
    elif _is_nfs(dfs) and not _is_nfs(sfs):
        dfs.put_file(src, dst, callback=cb)
    elif sfs is dfs and _is_nfs(sfs):
        sfs.cp_file(src, dst, callback=cb)
    else:
        dfs.makedirs(dfs._parent(dst), exist_ok=True)
        with sfs.open(src, "rb") as f, dfs.open(dst, "wb") as g:
            for _ in range(1 << 40):  # bounded: stops at end of file
                block = f.read(COPY_BLOCK)
                if not block:
                    break
                g.write(block)
                cb.relative_update(len(block))


class _BarCallback(Callback):  # type: ignore[misc]
    """fsspec progress events (possibly from the IO thread) into one rich task."""

    def __init__(self, progress: Progress, task: Any) -> None:
        super().__init__()
        self.progress, self.task = progress, task

    def set_size(self, size: int) -> None:  # the overall total is known up front
        pass

    def relative_update(self, inc: int = 1) -> None:
        self.progress.advance(self.task, inc)


@contextmanager
def _progress(show: bool, total: int) -> Iterator[Callable[[str], Callback]]:
    """A factory of per-file callbacks feeding one bar (bytes, MB/s); silent if not shown."""
    if not show:
        yield lambda name: DEFAULT_CALLBACK
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
        TransferSpeedColumn(), TimeRemainingColumn(),
    )  # fmt: skip
    console = Console(stderr=True, force_terminal=True)
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=total)

        def advance(name: str) -> Callback:
            progress.update(task, description=name)
            return _BarCallback(progress, task)

        yield advance


# -- mkdir, rm, mv -------------------------------------------------------------------------


@_guarded
def cmd_mkdir(args: argparse.Namespace) -> int:
    for url in args.url:
        fs, path = _fs(url)
        if args.parents:
            fs.makedirs(path, exist_ok=True)
        else:
            fs.mkdir(path, create_parents=False)
    return 0


@_guarded
def cmd_rm(args: argparse.Namespace) -> int:
    for url in args.url:
        fs, path = _fs(url)
        if fs.info(path)["type"] == "directory":
            if not args.recursive:
                raise IsADirectoryError(errno.EISDIR, "Is a directory (use -r)", path)
            fs.rm(path, recursive=True)
        else:
            fs.rm_file(path)
    return 0


@_guarded
def cmd_mv(args: argparse.Namespace) -> int:
    (sfs, src), (dfs, dst) = _fs(args.src), _fs(args.dst)
    if sfs is not dfs or not _is_nfs(sfs):
        raise UsageError("mv works within one NFS server; use cp and rm across servers")
    sfs.info(src)  # a missing source is an error naming it, not a silent no-op
    sfs.mv(src, dst, recursive=True)
    return 0

"""The client half of the ``ferry`` command line: ls, cat, get, put, cp, stat, df, mkdir,
rm, mv.

Every command takes ``nfs://`` URLs (the syntax of ``ferry.client.url``) and, where it makes
sense, local paths, and does its work through ``NfsFileSystem`` so the CLI and the fsspec
layer cannot drift apart. Behaviour follows coreutils:

* Each operand is handled on its own: a failure prints one line naming it (``ferry: cannot
  access 'X': No such file or directory``), the others still run, and the status is 1 if
  any failed. A malformed URL or argument is a usage error, status 2. Never a traceback.
* ``*``, ``?`` and ``[...]`` in the last path components of ``ls``, ``cat``, ``rm``,
  ``get`` and ``cp``/``put`` sources are expanded on the server (sorted); a pattern that
  matches nothing is a missing file. In a URL, ``?`` starts the query only when what
  follows it is ``key=value`` pairs.
* Progress bars (rich, bytes and throughput) go to stderr, by default only when stderr
  is a terminal: nothing extra when piped.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import functools
import math
import os
import posixpath
import re
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

from ferry.cli_retry import add_retry_options, retry_keywords
from ferry.client.url import is_query
from ferry.errors import FerryError, NoSuchExport
from ferry.filesystem import NfsFileSystem
from ferry.nfs3.types import FsstatRes

Handler = Callable[[argparse.Namespace], int]
Match = tuple[AbstractFileSystem, str, str]  # file system, path, name to show in messages
COPY_BLOCK = 4 << 20
MAGIC = re.compile(r"[*?[]")
TRANSFER_FLAGS = "[-r] [--progress | --no-progress]"
COMMANDS = ("ls", "cat", "get", "put", "cp", "stat", "df", "mkdir", "rm", "mv")


class UsageError(Exception):
    """A malformed argument (exit status 2)."""


class Failure(Exception):
    """A failure whose message is complete as it is (exit status 1)."""


def add_client_commands(sub: Any) -> None:
    """Register the client commands on ``ferry``'s subparsers (called from ``cli``)."""
    p = sub.add_parser("ls", help="list directories on an NFS server (globs allowed)")
    p.add_argument("url", nargs="+")
    p.add_argument("-l", dest="long", action="store_true", help="long listing")
    p.add_argument("-R", dest="recursive", action="store_true", help="list subdirectories")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("cat", help="print files (nfs:// or local, globs allowed) to stdout")
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_cat)
    p = sub.add_parser("get", help="download: URL... [LOCAL] (LOCAL defaults to .)",
                       usage=f"ferry get {TRANSFER_FLAGS} URL... [LOCAL]")  # fmt: skip
    p.add_argument("operands", nargs="+", metavar="URL")
    _transfer_options(p, cmd_get)
    p = sub.add_parser("put", help="upload: LOCAL... URL",
                       usage=f"ferry put {TRANSFER_FLAGS} LOCAL... URL")  # fmt: skip
    p.add_argument("operands", nargs="+", metavar="LOCAL")
    _transfer_options(p, cmd_put)
    p = sub.add_parser("cp", help="copy between nfs:// URLs and local paths: SRC... DST")
    p.add_argument("operands", nargs="+", metavar="SRC")
    _transfer_options(p, cmd_cp)
    p = sub.add_parser("stat", help="show a file's attributes")
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_stat)
    p = sub.add_parser("df", add_help=False, help="an export's size, use and free space")
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("-h", "--human-readable", dest="human", action="store_true",
                   help="sizes in powers of 1024 (1.5G)")  # fmt: skip
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_df)
    p = sub.add_parser("mkdir", help="make directories")
    p.add_argument("-p", dest="parents", action="store_true", help="make parents, no error")
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_mkdir)
    p = sub.add_parser("rm", help="remove files (and directories with -r; globs allowed)")
    p.add_argument("-r", "--recursive", action="store_true")
    p.add_argument("-f", "--force", action="store_true", help="ignore missing files")
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser("mv", help="rename or move within one NFS server")
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(func=cmd_mv)
    for name in COMMANDS:  # all ride over a server restart alike (client.retry)
        add_retry_options(sub.choices[name])


def _transfer_options(p: argparse.ArgumentParser, func: Handler) -> None:
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None,
                     help="always show a progress bar (default: only on a terminal)")  # fmt: skip
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show")
    p.set_defaults(func=func)


# -- plumbing ----------------------------------------------------------------------------


def _guarded(func: Handler) -> Handler:
    """One-line errors and an exit status instead of tracebacks; connections closed."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        _RETRY.clear()
        _RETRY.update(retry_keywords(args))
        try:
            return func(args)
        except UsageError as exc:
            return _fail(str(exc), 2)
        except BrokenPipeError:
            _silence_stdout()
            return 141  # like a coreutils tool killed by SIGPIPE (128 + 13)
        except Failure as exc:
            return _fail(str(exc), 1)
        except OSError as exc:
            where = f"'{exc.filename}': " if exc.filename else ""
            return _fail(where + _reason(exc), 1)
        except (FerryError, ValueError) as exc:
            return _fail(str(exc), 1)
        finally:
            for fs in _OPEN.values():
                fs.close()
            _OPEN.clear()

    return run


def _fail(message: str, status: int) -> int:
    print(f"ferry: {message}", file=sys.stderr, flush=True)
    return status


def _reason(exc: BaseException) -> str:
    """``No such file or directory``: the error without the name it is about (the errno's
    own text when there is one, as coreutils print it; a missing export says which there
    are)."""
    if isinstance(exc, NoSuchExport):
        return str(exc.strerror)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


class _Status:
    """The exit status of a command that goes on after a failed operand, as coreutils do."""

    def __init__(self) -> None:
        self.code = 0

    @contextmanager
    def operand(self, what: str, name: str) -> Iterator[None]:
        """Report a failure inside as ``ferry: WHAT 'NAME': reason`` (``NAME: reason``
        without WHAT) and carry on; usage errors and broken pipes still end the command."""
        try:
            yield
        except (Failure, OSError, FerryError, ValueError) as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            self.code = 1
            if isinstance(exc, Failure):
                _fail(str(exc), 1)
            else:
                _fail(f"{what} '{name}': {_reason(exc)}" if what else f"{name}: {_reason(exc)}", 1)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


_OPEN: dict[tuple[Any, ...], NfsFileSystem] = {}
_RETRY: dict[str, Any] = {}  # this command's --hard/--soft, --timeout, ... (cli_retry)


def _is_url(operand: str) -> bool:
    return operand.startswith("nfs://")


def _escape_globs(url: str) -> str:
    """A ``?`` is a glob character unless it starts a ``key=value&...`` query: escape the
    others so the URL parser keeps them in the path."""
    base, sep, query = url.rpartition("?")
    if sep and is_query(query):
        return base.replace("?", "%3F") + "?" + query
    return url.replace("?", "%3F")


def _fs(url: str) -> tuple[AbstractFileSystem, str]:
    """The file system and path for ``url``: nfs:// URLs go to NfsFileSystem (one per
    server and user for the whole command), anything else is a local path."""
    if not _is_url(url):
        return LocalFileSystem(), os.path.abspath(url)
    try:
        url = _escape_globs(url)
        kwargs = {**NfsFileSystem._get_kwargs_from_urls(url), **_RETRY}
        path = NfsFileSystem._strip_protocol(url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    key = tuple(sorted(kwargs.items()))
    if key not in _OPEN:
        _OPEN[key] = NfsFileSystem(**kwargs, skip_instance_cache=True)
    return _OPEN[key], path


def _expand(url: str) -> list[Match]:
    """What ``url`` names: itself, or the sorted matches of its glob pattern. A pattern
    matching nothing is a missing file (as a shell passes it through and ls reports it)."""
    fs, path = _fs(url)
    if not MAGIC.search(path):
        return [(fs, path, url)]
    found = sorted(str(p) for p in fs.glob(path))
    if found:
        return [(fs, p, p) for p in found]
    if fs.exists(path):  # a name that only looks like a pattern
        return [(fs, path, url)]
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), url)


def _is_nfs(fs: AbstractFileSystem) -> bool:
    return isinstance(fs, NfsFileSystem)


# -- ls, stat, cat, df ---------------------------------------------------------------------


@_guarded
def cmd_ls(args: argparse.Namespace) -> int:
    st, found = _Status(), []
    for url in args.url:
        with st.operand("cannot access", url):
            found += [(fs, path, fs.info(path)) for fs, path, _ in _expand(url)]
    files = [info for _, _, info in found if info["type"] != "directory"]
    _print_entries(files, args.long, full=True)
    headers, first = len(found) > 1 or args.recursive, not files
    for fs, path, _ in (f for f in found if f[2]["type"] == "directory"):
        with st.operand("cannot open directory", path):
            tree = fs.walk(path, detail=True) if args.recursive else [(path, None, None)]
            for root, _, _ in tree:
                if headers:
                    print(("" if first else "\n") + f"{root}:")
                    first = False
                _print_entries(fs.ls(root, detail=True), args.long)
    return st.code


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
    st = _Status()
    for url in args.url:
        with st.operand("cannot stat", url):
            fs, path = _fs(url)
            _print_stat(path, fs.info(path))
    return st.code


def _print_stat(path: str, e: dict[str, Any]) -> None:
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


@_guarded
def cmd_cat(args: argparse.Namespace) -> int:
    st, out = _Status(), sys.stdout.buffer
    for url in args.url:
        with st.operand("", url):
            for fs, path, name in _expand(url):
                with st.operand("", name):
                    if fs.isdir(path):
                        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
                    if _is_nfs(fs):
                        fs.get_file(path, None, outfile=out)
                    else:
                        with fs.open(path, "rb") as f:
                            shutil.copyfileobj(f, out, COPY_BLOCK)
    out.flush()
    return st.code


DF_HEADERS = {
    False: ("Filesystem", "1K-blocks", "Used", "Available", "Use%", "Files", "IFree"),
    True: ("Filesystem", "Size", "Used", "Avail", "Use%", "Files", "IFree"),
}


@_guarded
def cmd_df(args: argparse.Namespace) -> int:
    """FSSTAT (RFC 1813 section 3.3.18) as df shows it: used = total - free; Use% is
    used / (used + available to this user), rounded up; IFree is the caller's free slots."""
    st, rows = _Status(), list[tuple[str, ...]]()
    rows.append(DF_HEADERS[args.human])
    for url in args.url:
        with st.operand("", url):
            fs, path = _fs(url)
            if not isinstance(fs, NfsFileSystem):
                raise UsageError(f"df: not an nfs:// URL: '{url}'")
            export, res = fs._run(path, _fsstat, fs, path)
            rows.append(_df_row(f"{fs.url.host}:{export}", res, args.human))
    if len(rows) > 1:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            cells = [r[0].ljust(widths[0])] + [
                c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
            ]
            print(" ".join(cells))
    return st.code


async def _fsstat(fs: NfsFileSystem, path: str) -> tuple[str, FsstatRes]:
    client, rel = await fs._where(path)
    fh, _ = await client.resolve(rel, True)
    return client.export, await client.fsstat(fh)


def _df_row(name: str, r: FsstatRes, human: bool) -> tuple[str, ...]:
    used = max(r.tbytes - r.fbytes, 0)
    pct = f"{math.ceil(used * 100 / (used + r.abytes))}%" if used + r.abytes else "-"
    sizes = [r.tbytes, used, r.abytes]
    shown = [_human(n) for n in sizes] if human else [str(-(-n // 1024)) for n in sizes]
    files = [_human(r.tfiles), _human(r.afiles)] if human else [str(r.tfiles), str(r.afiles)]
    return (name, *shown, pct, *files)


def _human(n: int) -> str:
    """df -h: powers of 1024, rounded up, one decimal below 10 (``0``, ``9.5K``, ``12G``)."""
    units = "KMGTPEZY"
    if n < 1024:
        return str(n)
    value, i = n / 1024, 0
    for _ in units[1:]:
        if value < 1024:
            break
        value, i = value / 1024, i + 1
    if value < 10 and math.ceil(value * 10) < 100:
        return f"{math.ceil(value * 10) / 10:.1f}{units[i]}"
    rounded = math.ceil(value)
    if rounded >= 1024 and i < len(units) - 1:
        return f"1.0{units[i + 1]}"
    return f"{rounded}{units[i]}"


# -- get, put, cp --------------------------------------------------------------------------


@_guarded
def cmd_get(args: argparse.Namespace) -> int:
    sources = list(args.operands)
    local = sources.pop() if len(sources) > 1 and not _is_url(sources[-1]) else "."
    for src in sources:
        if not _is_url(src):
            raise UsageError(f"get: not an nfs:// URL: '{src}' (cp copies local files)")
    return _copy(sources, local, args)


@_guarded
def cmd_put(args: argparse.Namespace) -> int:
    *sources, dst = args.operands
    if not sources or not _is_url(dst):
        raise UsageError("put: give LOCAL... and then an nfs:// URL")
    for src in sources:
        if _is_url(src):
            raise UsageError(f"put: '{src}' is not a local path (cp copies between URLs)")
    return _copy(sources, dst, args)


@_guarded
def cmd_cp(args: argparse.Namespace) -> int:
    *sources, dst = args.operands
    if not sources:
        raise UsageError(f"cp: missing destination file operand after '{dst}'")
    return _copy(sources, dst, args)


Plan = list[tuple[str, str, int | None]]  # (source, destination, size or None for a dir)


def _copy(sources: list[str], dst: str, args: argparse.Namespace) -> int:
    """cp's rules: several sources need an existing destination directory; each source
    that fails is reported and skipped; one progress bar covers the whole transfer."""
    st, matches = _Status(), []
    dfs, dpath = _fs(dst)
    for src in sources:
        with st.operand("cannot stat", src):
            matches += _expand(src)
    if len(matches) > 1 and not dfs.isdir(dpath):
        raise Failure(f"target '{dst}' is not a directory")
    plans: list[tuple[AbstractFileSystem, Plan]] = []
    for sfs, spath, name in matches:
        with st.operand("cannot stat", name):
            plans.append((sfs, _copy_plan(sfs, spath, name, dfs, dpath, args.recursive)))
    show = sys.stderr.isatty() if args.progress is None else args.progress
    total = sum(size or 0 for _, plan in plans for _, _, size in plan)
    with _progress(show, total) as advance:
        for sfs, plan in plans:
            for s, d, size in plan:
                with st.operand(f"cannot copy '{s}' to", d):
                    if size is None:
                        dfs.makedirs(d, exist_ok=True)
                    else:
                        _copy_one(sfs, s, dfs, d, advance(posixpath.basename(s)))
    return st.code


def _copy_plan(
    sfs: AbstractFileSystem, src: str, name: str, dfs: AbstractFileSystem, dst: str,
    recursive: bool,
) -> Plan:  # fmt: skip
    """Parents first. As with cp, an existing destination directory receives the source
    under its own name."""
    info = sfs.info(src)
    if dfs.isdir(dst):
        dst = posixpath.join(dst, posixpath.basename(src.rstrip("/")))
    if info["type"] != "directory":
        return [(src, dst, int(info["size"]))]
    if not recursive:
        raise Failure(f"-r not specified; omitting directory '{name}'")
    plan: Plan = [(src, dst, None)]
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
    st = _Status()
    for url in args.url:
        with st.operand("cannot create directory", url):
            fs, path = _fs(url)
            if args.parents:
                fs.makedirs(path, exist_ok=True)
            else:
                fs.mkdir(path, create_parents=False)
    return st.code


@_guarded
def cmd_rm(args: argparse.Namespace) -> int:
    st = _Status()
    for url in args.url:
        with st.operand("cannot remove", url):
            try:
                matches = _expand(url)
            except FileNotFoundError:
                if args.force:
                    continue
                raise
            for fs, path, name in matches:
                with st.operand("cannot remove", name):
                    _remove(fs, path, args.recursive, args.force)
    return st.code


def _remove(fs: AbstractFileSystem, path: str, recursive: bool, force: bool) -> None:
    try:
        is_dir = fs.info(path)["type"] == "directory"
    except FileNotFoundError:
        if force:
            return
        raise
    if not is_dir:
        fs.rm_file(path)
    elif not recursive:
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    else:
        fs.rm(path, recursive=True)


@_guarded
def cmd_mv(args: argparse.Namespace) -> int:
    (sfs, src), (dfs, dst) = _fs(args.src), _fs(args.dst)
    if sfs is not dfs or not _is_nfs(sfs):
        raise UsageError("mv works within one NFS server; use cp and rm across servers")
    st = _Status()
    with st.operand("cannot stat", args.src):
        sfs.info(src)  # a missing source is an error naming it, not a silent no-op
        with st.operand(f"cannot move '{args.src}' to", args.dst):
            sfs.mv(src, dst, recursive=True)
    return st.code

"""``ferry get``, ``put`` and ``cp``: copies between ``nfs://`` URLs and local paths, by
GNU cp's rules.

* Destinations: several sources need an existing directory; an existing directory
  receives each source under its own name; a trailing ``/`` on a file's missing
  destination is an error (``Not a directory``). The destination's parent must exist:
  nothing makes missing parent directories (as cp and scp; ``ferry mkdir -p`` first),
  only the directory a ``-r`` copy names.
* Never a short file under the final name: each file is written to a hidden temporary in
  its destination directory (``.NAME.ferry-XXXXXXXX``), given its mode and times, and
  renamed over the final name once complete. A failure, Ctrl-C or SIGTERM removes the
  temporary; a destination that existed keeps its old contents until the rename. Only
  SIGKILL, or a server gone for good, can leave a temporary behind (its name says so).
* Modes: a new file gets the source's permission bits less the umask, an existing one
  keeps its own; ``-p`` copies permission bits and access/modification times (set-id
  bits dropped: owners are not copied), a directory's after its contents.
* ``-r`` copies symbolic links inside a tree as links; operands are followed (``cp -H``).
* One progress bar (rich, binary units, the file name from the first frame) for the whole
  transfer, by default only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from errno import ENOENT, ENOTDIR
from typing import Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractFileSystem
from rich.console import Console
from rich.filesize import pick_unit_and_suffix
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ferry.cli.common import (
    COPY_BLOCK,
    Failure,
    Handler,
    Place,
    Status,
    UsageError,
    ends_with_slash,
    expand,
    guarded,
    is_url,
    place,
    reason,
    stat_or_none,
)
from ferry.cli.paths import Meta, NfsSide
from ferry.nfsfs.filesystem import NfsFileSystem, _temp_name

TRANSFER_FLAGS = "[-r] [-p] [--progress | --no-progress]"
SET_ID = stat.S_ISUID | stat.S_ISGID
MAX_STEPS = 1 << 40
CREATED_MODE = 0o644  # what NfsFileSystem gives a file it creates: no SETATTR needed


def add_transfer_commands(sub: Any) -> None:
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


def _transfer_options(p: argparse.ArgumentParser, func: Handler) -> None:
    p.add_argument("-r", "--recursive", action="store_true", help="copy directories")
    p.add_argument("-p", "--preserve", action="store_true",
                   help="keep permission bits and access/modification times")  # fmt: skip
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", action="store_true", default=None,
                     help="always show a progress bar (default: only on a terminal)")  # fmt: skip
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show")
    p.set_defaults(func=func)


@guarded
def cmd_get(args: argparse.Namespace) -> int:
    sources = list(args.operands)
    local = sources.pop() if len(sources) > 1 and not is_url(sources[-1]) else "."
    for src in sources:
        if not is_url(src):
            raise UsageError(f"get: not an nfs:// URL: '{src}' (cp copies local files)")
    return _copy(sources, local, args)


@guarded
def cmd_put(args: argparse.Namespace) -> int:
    *sources, dst = args.operands
    if not sources or not is_url(dst):
        raise UsageError("put: give LOCAL... and then an nfs:// URL")
    for src in sources:
        if is_url(src):
            raise UsageError(f"put: '{src}' is not a local path (cp copies between URLs)")
    return _copy(sources, dst, args)


@guarded
def cmd_cp(args: argparse.Namespace) -> int:
    *sources, dst = args.operands
    if not sources:
        raise UsageError(f"cp: missing destination file operand after '{dst}'")
    return _copy(sources, dst, args)


# -- the plan ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    """One thing to make at ``dst``: a file, directory or link like ``src`` (whose
    attributes are ``meta``); ``old`` is what ``dst`` was before (``None``: nothing)."""

    src: Place
    dst: Place
    meta: Meta
    old: Meta | None


def _copy(sources: list[str], dst_operand: str, args: argparse.Namespace) -> int:
    """Check every destination first, then copy; each source that fails is reported and
    skipped, as cp does."""
    st, matches = Status(), list[Place]()
    for operand in sources:
        with st.operand("cannot stat", operand):
            matches += expand(operand)
    dst = place(dst_operand)
    try:
        dmeta = _meta_or_none(dst)
    except OSError as exc:
        raise Failure(f"cannot stat '{dst.name}': {reason(exc)}") from None
    into = dmeta is not None and dmeta.is_dir
    if max(len(sources), len(matches)) > 1 and not into:
        raise Failure(f"target '{dst.name}': " + os.strerror(ENOTDIR if dmeta else ENOENT))
    if ends_with_slash(dst_operand) and dmeta is not None and not into:
        raise Failure(f"cannot stat '{dst.name}': Not a directory")
    plan: list[Step] = []
    for src in matches:
        with st.operand("cannot stat", src.name):
            target = dst.child(posixpath.basename(src.path)) if into else dst
            plan += _plan(src, target, into, ends_with_slash(dst_operand), args.recursive)
    _run_plan(plan, args, st)
    return st.code


def _meta_or_none(where: Place) -> Meta | None:
    """Attributes of ``where`` (links followed); ``None`` if nothing can be there."""
    try:
        return stat_or_none(where)
    except NotADirectoryError:
        return None


def _plan(src: Place, dst: Place, into: bool, slash: bool, recursive: bool) -> list[Step]:
    """The steps for one source operand, parents first, after cp's checks."""
    meta, old = src.side.stat(src.path), _meta_or_none(dst)
    what = "directory" if meta.is_dir else "regular file"
    if meta.is_dir and not recursive:
        raise Failure(f"-r not specified; omitting directory '{src.name}'")
    if meta.is_dir and old is not None and not old.is_dir:
        raise Failure(f"cannot overwrite non-directory '{dst.name}' with directory '{src.name}'")
    if not meta.is_dir and old is not None and old.is_dir:
        raise Failure(f"cannot overwrite directory '{dst.name}' with non-directory")
    if not meta.is_dir and slash and not into:
        raise Failure(f"cannot create regular file '{dst.name}': Not a directory")
    if old is None and not into:
        parent = _meta_or_none(dst.at(posixpath.dirname(dst.path)))
        if parent is None or not parent.is_dir:
            reason = "No such file or directory" if parent is None else "Not a directory"
            raise Failure(f"cannot create {what} '{dst.name}': {reason}")
    if old is not None and _same_file(src, dst, meta, old):
        raise Failure(f"'{src.name}' and '{dst.name}' are the same file")
    if meta.is_dir and _same_side(src, dst) and dst.path.startswith(src.path.rstrip("/") + "/"):
        raise Failure(f"cannot copy a directory, '{src.name}', into itself, '{dst.name}'")
    first = Step(src, dst, meta, old)
    return [first, *_tree(first)] if meta.is_dir else [first]


def _same_side(a: Place, b: Place) -> bool:
    return a.fs is b.fs or not (a.is_nfs or b.is_nfs)


def _same_file(a: Place, b: Place, ma: Meta, mb: Meta) -> bool:
    return _same_side(a, b) and (ma.dev, ma.ino) == (mb.dev, mb.ino)


def _tree(top: Step) -> list[Step]:
    """Everything below a directory step, parents first, in name order; links are not
    followed. What is already at the destination comes from one listing per directory."""
    steps, todo = [], [top]
    for _ in range(MAX_STEPS):  # bounded by the tree
        if not todo:
            break
        here = todo.pop()
        if here is not top:
            steps.append(here)
        if not here.meta.is_dir:
            continue
        old = here.old is not None and here.old.is_dir
        there = {e.name: e.meta for e in here.dst.side.scan(here.dst.path)} if old else {}
        below = [
            Step(here.src.child(e.name), here.dst.child(e.name), e.meta, there.get(e.name))
            for e in here.src.side.scan(here.src.path)
        ]
        todo.extend(reversed(below))
    return steps


# -- carrying it out -------------------------------------------------------------------------


def _run_plan(plan: list[Step], args: argparse.Namespace, st: Status) -> None:
    """Every step, parents first; a directory that could not be made takes its contents
    with it; with -p (or a mode that had to wait) directories get theirs last."""
    umask = _umask()
    failed: list[str] = []
    later: list[tuple[Step, int]] = []
    files = [s for s in plan if s.meta.kind == "file"]
    total = sum(s.meta.size for s in files)
    show = sys.stderr.isatty() if args.progress is None else args.progress
    first = posixpath.basename(files[0].src.path) if files else ""
    with _progress(show, total, first) as advance:
        for step in plan:
            if any(_under(step.dst.path, f) for f in failed):
                continue
            kind = step.meta.kind
            if kind == "directory":
                made = False
                with st.operand("cannot create directory", step.dst.name):
                    later += _make_dir(step, args.preserve, umask)
                    made = True
                if not made:
                    failed.append(step.dst.path)
            elif kind == "link":
                with st.operand("cannot create symbolic link", step.dst.name):
                    _make_link(step)
            elif kind == "file":
                with st.operand(f"cannot copy '{step.src.name}' to", step.dst.name):
                    cb = advance(posixpath.basename(step.src.path))
                    _copy_file(step, cb, _mode(step, args.preserve, umask), args.preserve)
            else:
                with st.operand("", step.src.name):
                    raise Failure(f"cannot copy special file '{step.src.name}'")
    for step, mode in reversed(later):
        with st.operand("cannot preserve mode and times of", step.dst.name):
            times = (step.meta.atime_ns, step.meta.mtime_ns) if args.preserve else None
            step.dst.side.set_meta(step.dst.path, mode, times)


def _under(path: str, top: str) -> bool:
    return path.startswith(top.rstrip("/") + "/")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _mode(step: Step, preserve: bool, umask: int) -> int:
    """cp's mode for a copied file (set-id bits never: the owner is not copied)."""
    if preserve:
        return stat.S_IMODE(step.meta.mode) & ~SET_ID
    if step.old is not None and step.old.kind == "file":
        return stat.S_IMODE(step.old.mode) & ~SET_ID
    return stat.S_IMODE(step.meta.mode) & 0o777 & ~umask


def _make_dir(step: Step, preserve: bool, umask: int) -> list[tuple[Step, int]]:
    """A missing directory is made writable for us (its contents come next); its own mode
    (and with -p its times) are set once its contents are in: returned for later."""
    want = stat.S_IMODE(step.meta.mode) & (0o7777 if preserve else 0o777 & ~umask)
    if step.old is not None:
        if not step.old.is_dir:
            what = f"non-directory '{step.dst.name}' with directory '{step.src.name}'"
            raise Failure(f"cannot overwrite {what}")
        return [(step, want)] if preserve else []
    step.dst.side.mkdir(step.dst.path, want | 0o700)
    return [(step, want)] if preserve or want != want | 0o700 else []


def _make_link(step: Step) -> None:
    if step.old is not None and step.old.is_dir:
        raise Failure(f"cannot overwrite directory '{step.dst.name}' with non-directory")
    side, tmp = step.dst.side, _temp_name(step.dst.path)
    side.symlink(step.src.side.readlink(step.src.path), tmp)
    _commit(step.dst, tmp, lambda: None)


def _copy_file(step: Step, cb: Callback, mode: int, preserve: bool) -> None:
    """The data into a temporary beside the destination, then its mode and times, then a
    rename over the destination; the temporary is removed on any failure."""
    if step.old is not None and step.old.is_dir:
        raise Failure(f"cannot overwrite directory '{step.dst.name}' with non-directory")
    times = (step.meta.atime_ns, step.meta.mtime_ns) if preserve else None
    tmp = _temp_name(step.dst.path)

    def finish() -> None:
        if times is not None or mode != CREATED_MODE or not step.dst.is_nfs:
            step.dst.side.set_meta(tmp, mode, times)

    try:
        _transfer(step.src, step.dst.fs, tmp, cb)
    except BaseException:
        step.dst.side.discard(tmp)
        raise
    _commit(step.dst, tmp, finish)


def _commit(dst: Place, tmp: str, finish: Callable[[], None]) -> None:
    try:
        finish()
        dst.side.rename(tmp, dst.path)
    except BaseException:
        dst.side.discard(tmp)
        raise


def _transfer(src: Place, dfs: AbstractFileSystem, tmp: str, cb: Callback) -> None:
    """The fastest route: pipelined get/put when one side is NFS, streams otherwise."""
    if isinstance(src.fs, NfsFileSystem) and not isinstance(dfs, NfsFileSystem):
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            NfsSide(src.fs).run(src.path, src.fs._get, src.path, out, cb)
    elif isinstance(dfs, NfsFileSystem) and not isinstance(src.fs, NfsFileSystem):
        NfsSide(dfs).run(tmp, dfs._put, src.path, tmp, cb, True)
    elif src.fs is dfs and isinstance(dfs, NfsFileSystem):
        NfsSide(dfs).run(src.path, dfs._copy, src.path, tmp, cb)
    else:
        opener = dfs.open if isinstance(dfs, NfsFileSystem) else open
        with src.fs.open(src.path, "rb") as f, opener(tmp, "xb") as g:
            for _ in range(MAX_STEPS):  # bounded: stops at end of file
                block = f.read(COPY_BLOCK)
                if not block:
                    break
                g.write(block)
                cb.relative_update(len(block))


# -- progress ------------------------------------------------------------------------------


class _BarCallback(Callback):  # type: ignore[misc]
    """fsspec progress events (possibly from the IO thread) into one rich task."""

    def __init__(self, progress: Progress, task: Any) -> None:
        super().__init__()
        self.progress, self.task = progress, task

    def set_size(self, size: int) -> None:  # the overall total is known up front
        pass

    def relative_update(self, inc: int = 1) -> None:
        self.progress.advance(self.task, inc)


class _BinarySpeed(ProgressColumn):
    """The transfer rate in powers of 1024 (``112.4 MiB/s``), as the sizes beside it."""

    UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"]

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("?", style="progress.data.speed")
        unit, suffix = pick_unit_and_suffix(int(speed), self.UNITS, 1024)
        return Text(f"{speed / unit:.1f} {suffix}/s", style="progress.data.speed")


@contextmanager
def _progress(show: bool, total: int, first: str) -> Iterator[Callable[[str], Callback]]:
    """A factory of per-file callbacks feeding one bar; silent if not shown. The first
    file's name is there before the first frame is drawn."""
    if not show:
        yield lambda name: DEFAULT_CALLBACK
        return
    columns = (
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
        _BinarySpeed(), TimeRemainingColumn(),
    )  # fmt: skip
    progress = Progress(*columns, console=Console(stderr=True, force_terminal=True))
    task = progress.add_task(first, total=total)

    def advance(name: str) -> Callback:
        progress.update(task, description=name)
        return _BarCallback(progress, task)

    with progress:
        yield advance

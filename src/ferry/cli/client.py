"""The client half of the ``ferry`` command line: ls, stat, cat, df, exports, mkdir, rm,
mv (get, put and cp live in ``cli_transfer``, what they all share in ``cli_common``).

Every command takes ``nfs://`` URLs (the syntax of ``ferry.client.url``); ls, stat and cat
also take local paths. Behaviour follows coreutils: symbolic links are shown and removed
as links (``ls -l``, ``stat``, ``rm -r``) and ``-L`` follows them; ``rm -r`` refuses an
export's root as GNU rm refuses ``/``.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import math
import os
import posixpath
import shutil
import stat
import sys
from typing import Any

from ferry.cli.common import (
    COPY_BLOCK,
    Failure,
    Place,
    Status,
    UsageError,
    expand,
    file_system,
    guarded,
    require_url,
    stat_or_none,
    url_parts,
)
from ferry.cli.paths import Entry, Meta, NfsSide
from ferry.cli.retry import add_retry_options
from ferry.cli.transfer import add_transfer_commands
from ferry.client.exports import export_list
from ferry.nfs3.types import FsstatRes
from ferry.nfsfs.filesystem import NfsFileSystem

MAX_DEPTH = 4096  # ls -R: deeper than any path NFS can name
COMMANDS = ("ls", "cat", "get", "put", "cp", "stat", "df", "exports", "mkdir", "rm", "mv")


def add_client_commands(sub: Any) -> None:
    """Register the client commands on ``ferry``'s subparsers (called from ``cli``)."""
    p = sub.add_parser("ls", help="list directories on an NFS server (globs allowed)")
    p.add_argument("url", nargs="+")
    p.add_argument("-l", dest="long", action="store_true", help="long listing")
    p.add_argument("-R", dest="recursive", action="store_true", help="list subdirectories")
    p.add_argument("-L", "--dereference", dest="deref", action="store_true",
                   help="show what symbolic links point to, not the links")  # fmt: skip
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("cat", help="print files (nfs:// or local, globs allowed) to stdout")
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_cat)
    add_transfer_commands(sub)
    p = sub.add_parser("stat", help="show a file's attributes (a link's own, unless -L)")
    p.add_argument("url", nargs="+")
    p.add_argument("-L", "--dereference", dest="deref", action="store_true",
                   help="follow symbolic links")  # fmt: skip
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
    root = p.add_mutually_exclusive_group()
    root.add_argument("--preserve-root", dest="preserve_root", action="store_true",
                      default=True, help="refuse an export's root with -r (default)")  # fmt: skip
    root.add_argument("--no-preserve-root", dest="preserve_root", action="store_false",
                      help="with -r, empty an export given as its root")  # fmt: skip
    p.add_argument("url", nargs="+")
    p.set_defaults(func=cmd_rm)
    p = sub.add_parser("mv", help="rename or move within one NFS server")
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(func=cmd_mv)
    p = sub.add_parser("exports", help="list a server's exports (like showmount -e)")
    p.add_argument("url", nargs="+", metavar="nfs://HOST[:PORT]")
    p.set_defaults(func=cmd_exports)
    for name in COMMANDS:  # all ride over a server restart alike (client.retry)
        add_retry_options(sub.choices[name])


# -- ls, stat, cat, df ---------------------------------------------------------------------


@guarded
def cmd_ls(args: argparse.Namespace) -> int:
    """GNU ls: a link given on the command line is followed unless -l; -L follows all."""
    st, files, dirs = Status(), list[tuple[Place, Entry]](), list[tuple[Place, Meta]]()
    for url in args.url:
        with st.operand("cannot access", url):
            for found in expand(url):
                entry = _operand_entry(found, args.deref or not args.long, args.long)
                if entry.meta.is_dir:
                    dirs.append((found, entry.meta))
                else:
                    files.append((found, entry))
    for found, entry in files:
        _print_entry(entry, args.long, found.path)
    headers, first = len(files) + len(dirs) > 1 or args.recursive, not files
    for top, meta in dirs:
        todo, seen = [top], {(meta.dev, meta.ino)}
        for _ in range(MAX_DEPTH * 1024):  # bounded by the tree
            if not todo:
                break
            here = todo.pop()
            if headers:
                print(("" if first else "\n") + f"{here.path}:")
                first = False
            with st.operand("cannot open directory", here.name):
                below = _listing(here, args)
                for e in below:
                    _print_entry(e, args.long)
                if args.recursive:
                    fresh = [e for e in below if e.meta.is_dir and _first_visit(seen, e.meta)]
                    todo.extend(here.child(e.name) for e in reversed(fresh))
    return st.code


def _first_visit(seen: set[tuple[int, int]], meta: Meta) -> bool:
    """ls -RL: a directory reached twice through links is listed once (no loop)."""
    key = (meta.dev, meta.ino)
    if key in seen:
        return False
    seen.add(key)
    return True


def _operand_entry(found: Place, follow: bool, long: bool) -> Entry:
    """A command-line operand: followed if asked (a dangling link shows as itself)."""
    side = found.side
    try:
        meta = side.stat(found.path, follow)
    except FileNotFoundError:
        if not follow:
            raise
        meta = side.stat(found.path, False)
    target = side.readlink(found.path) if long and meta.kind == "link" else None
    return Entry(posixpath.basename(found.path), meta, target)


def _listing(here: Place, args: argparse.Namespace) -> list[Entry]:
    """A directory's entries, lstat's view; with -L, each link as what it points to."""
    side = here.side
    entries = side.scan(here.path, targets=args.long and not args.deref)
    if not args.deref:
        return entries
    out = []
    for e in entries:
        if e.meta.kind == "link":
            try:
                e = Entry(e.name, side.stat(posixpath.join(here.path, e.name)))
            except OSError:  # dangling: shown as the link it is
                e = Entry(e.name, e.meta, side.readlink(posixpath.join(here.path, e.name)))
        out.append(e)
    return out


def _print_entry(e: Entry, long: bool, shown: str | None = None) -> None:
    name = e.name if shown is None else shown
    print(_long_line(e.meta, name, e.target) if long else name)


def _long_line(m: Meta, name: str, target: str | None) -> str:
    when = datetime.datetime.fromtimestamp(m.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M")
    link = f" -> {target}" if target is not None else ""
    fields = (stat.filemode(m.mode), m.nlink, m.uid, m.gid, m.size, when, name, link)
    return "{} {:>3} {:>5} {:>5} {:>12} {} {}{}".format(*fields)


@guarded
def cmd_stat(args: argparse.Namespace) -> int:
    st = Status()
    for url in args.url:
        with st.operand("cannot stat", url):
            for found in expand(url):
                meta = found.side.stat(found.path, args.deref)
                target = found.side.readlink(found.path) if meta.kind == "link" else None
                _print_stat(found.name, meta, target)
    return st.code


_TYPE_NAMES = {
    stat.S_IFREG: "regular file", stat.S_IFDIR: "directory", stat.S_IFLNK: "symbolic link",
    stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket", stat.S_IFCHR: "character special file",
    stat.S_IFBLK: "block special file",
}  # fmt: skip


def _print_stat(name: str, m: Meta, target: str | None) -> None:
    kind = _TYPE_NAMES.get(stat.S_IFMT(m.mode), "unknown")
    print(f"  File: {name}" + (f" -> {target}" if target is not None else ""))
    print(f"  Size: {m.size:<12} Type: {kind}")
    print(f"  Mode: ({stat.S_IMODE(m.mode):04o}/{stat.filemode(m.mode)})  "
          f"Uid: {m.uid}  Gid: {m.gid}")  # fmt: skip
    print(f" Inode: {m.ino:<12} Links: {m.nlink}")
    for label, ns in (("Mtime", m.mtime_ns), ("Ctime", m.ctime_ns), ("Atime", m.atime_ns)):
        when = datetime.datetime.fromtimestamp(ns // 10**9).astimezone()
        print(f"{label}: {when.strftime('%Y-%m-%d %H:%M:%S')}.{ns % 10**9:09d} "
              f"{when.strftime('%z')}")  # fmt: skip


@guarded
def cmd_cat(args: argparse.Namespace) -> int:
    st, out = Status(), sys.stdout.buffer
    for url in args.url:
        with st.operand("cannot read", url):
            for found in expand(url):
                with st.operand("cannot read", found.name):
                    fs, path = found.fs, found.path
                    if fs.isdir(path):
                        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
                    if found.is_nfs:
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


@guarded
def cmd_df(args: argparse.Namespace) -> int:
    """FSSTAT (RFC 1813 section 3.3.18) as df shows it: used = total - free; Use% is
    used / (used + available to this user), rounded up; IFree is the caller's free slots."""
    st, rows = Status(), list[tuple[str, ...]]()
    rows.append(DF_HEADERS[args.human])
    for url in args.url:
        require_url("df", url)
        with st.operand("cannot stat", url):
            fs, path = file_system(url)
            assert isinstance(fs, NfsFileSystem)
            export, res = NfsSide(fs).run(path, _fsstat, fs, path)
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
    return client.export, await client.nfs.fsstat(fh)


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


@guarded
def cmd_exports(args: argparse.Namespace) -> int:
    """``showmount -e``: MOUNT EXPORT, each export with the client groups it names."""
    st = Status()
    for url in args.url:
        require_url("exports", url)
        with st.operand("cannot list exports of", url):
            fs, path = file_system(url)
            assert isinstance(fs, NfsFileSystem)
            found = NfsSide(fs).run(path, fs._on_mount_port, export_list)
            print(f"Export list for {url_parts(url)[0][len('nfs://') :]}:")
            width = max((len(e.path) for e in found), default=0)
            for e in found:
                print(f"{e.path.ljust(width)} {','.join(e.groups) or '(everyone)'}")
    return st.code


# -- mkdir, rm, mv -------------------------------------------------------------------------


@guarded
def cmd_mkdir(args: argparse.Namespace) -> int:
    st = Status()
    for url in args.url:
        require_url("mkdir", url)
        with st.operand("cannot create directory", url):
            fs, path = file_system(url)
            if args.parents:
                fs.makedirs(path, exist_ok=True)
            else:
                fs.mkdir(path, create_parents=False)
    return st.code


@guarded
def cmd_rm(args: argparse.Namespace) -> int:
    st = Status()
    for url in args.url:
        require_url("rm", url)
        with st.operand("cannot remove", url):
            try:
                matches = expand(url)
            except FileNotFoundError:
                if args.force:
                    continue
                raise
            for found in matches:
                with st.operand("cannot remove", found.name):
                    _remove(found, args)
    return st.code


def _remove(found: Place, args: argparse.Namespace) -> None:
    """GNU rm: links are removed, never followed; -r refuses an export's root (and what
    lies above the exports) before removing anything, unless --no-preserve-root."""
    side = found.side
    assert isinstance(side, NfsSide)
    meta = stat_or_none(found, follow=False)
    if meta is None:
        if args.force:
            return
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), found.path)
    if not meta.is_dir:
        side.remove(found.path)
    elif not args.recursive:
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), found.path)
    elif side.fs._pseudo_dir(found.path):
        raise Failure(f"cannot remove '{found.name}': it lies above the server's exports")
    elif not side.is_export_root(found.path):
        side.remove_tree(found.path)
    elif args.preserve_root:
        raise Failure(f"it is dangerous to operate recursively on '{found.name}' (the root "
                      "of an export): use --no-preserve-root to empty it")  # fmt: skip
    else:
        side.remove_tree(found.path, keep_top=True)


@guarded
def cmd_mv(args: argparse.Namespace) -> int:
    (sfs, src), (dfs, dst) = file_system(args.src), file_system(args.dst)
    if sfs is not dfs or not isinstance(sfs, NfsFileSystem):
        raise UsageError("mv works within one NFS server; use cp and rm across servers")
    st = Status()
    with st.operand("cannot stat", args.src):
        sfs.info(src)  # a missing source is an error naming it, not a silent no-op
        with st.operand(f"cannot move '{args.src}' to", args.dst):
            sfs.mv(src, dst, recursive=True)
    return st.code

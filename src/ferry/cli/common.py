"""What every client command of ``ferry`` shares: operands and their names, errors and
exit statuses, coreutils' way.

* An operand is a ``Place``: its file system (``NfsFileSystem``, one per server and user
  for the whole command, or the local one), that file system's path (a server path for
  NFS) and its name as the user typed it. A name found by a glob or inside a tree is
  spelled in the style of its operand (a URL keeps its host, port and query), so every
  message names what the user would type, never the server's own path.
* Each operand is handled on its own (``Status.operand``): a failure prints one line,
  ``ferry: VERB 'NAME': reason``, the others still run, and the status is 1 if any failed.
  A malformed URL or argument is a usage error, status 2. Never a traceback; Ctrl-C
  exits 130, SIGTERM 143 (both unwind, so ``finally`` blocks run).
* Every command that talks to a server takes ``--hard``/``--soft``, ``--timeout``,
  ``--retrans`` and ``--retry-for`` (``cli_retry``): ``guarded`` reads them and
  ``file_system`` gives them to each ``NfsFileSystem``, over the URL's own arguments.
* ``*``, ``?`` and ``[...]`` in the last path components are expanded on the server
  (sorted); a pattern that matches nothing is a missing file. In a URL, ``?`` starts the
  query only when what follows it is ``key=value`` pairs.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import posixpath
import re
import signal
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

from ferry.cli.paths import Meta, Side, side_of
from ferry.cli.retry import retry_keywords
from ferry.client.url import is_query
from ferry.errors import FerryError, NoSuchExport, root_squash_hint
from ferry.nfsfs.filesystem import NfsFileSystem

Handler = Callable[[argparse.Namespace], int]
COPY_BLOCK = 4 << 20
MAGIC = re.compile(r"[*?[]")


class UsageError(Exception):
    """A malformed argument (exit status 2)."""


class Failure(Exception):
    """A failure whose message is complete as it is (exit status 1)."""


class Terminated(BaseException):
    """SIGTERM or SIGHUP: like Ctrl-C, unwinds so temporary files are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def guarded(func: Handler) -> Handler:
    """One-line errors and an exit status instead of tracebacks; connections closed."""

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        _RETRY.clear()
        _RETRY.update(retry_keywords(args))
        try:
            with _signals_unwind():
                return func(args)
        except UsageError as exc:
            return fail(str(exc), 2)
        except BrokenPipeError:
            _silence_stdout()
            return 141  # like a coreutils tool killed by SIGPIPE (128 + 13)
        except Failure as exc:
            return fail(str(exc), 1)
        except OSError as exc:
            where = f"'{exc.filename}': " if exc.filename else ""
            return fail(where + reason(exc), 1)
        except (FerryError, ValueError) as exc:
            return fail(str(exc), 1)
        except Terminated as exc:
            return 128 + exc.signum
        finally:
            for fs in _OPEN.values():
                fs.close()
            _OPEN.clear()

    return run


@contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGTERM and SIGHUP raise ``Terminated`` while inside, so ``finally`` blocks run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def unwind(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    old = {s: signal.signal(s, unwind) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def fail(message: str, status: int) -> int:
    print(f"ferry: {message}", file=sys.stderr, flush=True)
    return status


def reason(exc: BaseException) -> str:
    """``No such file or directory``: the error without the name it is about (the errno's
    own text when there is one, as coreutils print it; a missing export says which there
    are)."""
    if isinstance(exc, NoSuchExport):
        return str(exc.strerror)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno) + root_squash_hint(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


class Status:
    """The exit status of a command that goes on after a failed operand, as coreutils do."""

    def __init__(self) -> None:
        self.code = 0

    @contextmanager
    def operand(self, what: str, name: str) -> Iterator[None]:
        """Report a failure inside as ``ferry: WHAT 'NAME': reason`` and carry on; usage
        errors, broken pipes and signals still end the command."""
        try:
            yield
        except (Failure, OSError, FerryError, ValueError) as exc:
            if isinstance(exc, BrokenPipeError):
                raise
            self.code = 1
            fail(str(exc) if isinstance(exc, Failure) else f"{what} '{name}': {reason(exc)}", 1)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush is quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


_OPEN: dict[tuple[Any, ...], NfsFileSystem] = {}
_RETRY: dict[str, Any] = {}  # this command's --hard/--soft, --timeout, ... (cli_retry)


def is_url(operand: str) -> bool:
    return operand.startswith("nfs://")


def require_url(command: str, operand: str) -> None:
    if not is_url(operand):
        raise UsageError(f"{command}: not an nfs:// URL: '{operand}'")


def url_parts(url: str) -> tuple[str, str, str]:
    """``nfs://host:port``, the path as typed, and ``?query`` (or ``""``)."""
    base, sep, query = url.rpartition("?")
    head, tail = (base, f"?{query}") if sep and is_query(query) else (url, "")
    cut = head.find("/", len("nfs://"))
    return (head, "", tail) if cut < 0 else (head[:cut], head[cut:], tail)


def ends_with_slash(operand: str) -> bool:
    """Whether the path part of ``operand`` ends with ``/`` (cp: it must be a directory)."""
    path = url_parts(operand)[1] if is_url(operand) else operand
    return len(path) > 1 and path.endswith("/")


def _escape_globs(url: str) -> str:
    """A ``?`` is a glob character unless it starts a ``key=value&...`` query: escape the
    others so the URL parser keeps them in the path."""
    head, path, tail = url_parts(url)
    return head + path.replace("?", "%3F") + tail


@dataclass(frozen=True, slots=True)
class Place:
    """A file as a command sees it: its file system, that file system's path (a server
    path for NFS), and its name as the user would type it (for messages)."""

    fs: AbstractFileSystem
    path: str
    name: str

    @property
    def side(self) -> Side:
        return side_of(self.fs)

    @property
    def is_nfs(self) -> bool:
        return isinstance(self.fs, NfsFileSystem)

    def child(self, rel: str) -> Place:
        """``rel`` below this place, named below this place's name."""
        return Place(self.fs, posixpath.join(self.path, rel), _name_below(self.name, rel))

    def at(self, path: str) -> Place:
        """Another path on the same file system, named in the style of this one."""
        return Place(self.fs, path, _name_of(self.name, path))


def _name_below(name: str, rel: str) -> str:
    if not is_url(name):
        return os.path.join(name, rel)
    head, path, tail = url_parts(name)
    return f"{head}{path.rstrip('/')}/{_quote(rel)}{tail}"


def _name_of(operand: str, path: str) -> str:
    """How the user would type ``path`` in the style of ``operand`` (a glob's match)."""
    if not is_url(operand):
        return path if os.path.isabs(operand) else os.path.relpath(path)
    head, _, tail = url_parts(operand)
    return head + _quote(path) + tail


def _quote(path: str) -> str:
    """Escape what the URL parser would not keep in a path."""
    return urllib.parse.quote(path, safe="/ !$&'()*+,;=:@~[]")


def file_system(url: str) -> tuple[AbstractFileSystem, str]:
    """The file system and path for ``url``: nfs:// URLs go to NfsFileSystem (one per
    server and user for the whole command, with the command's retry options), anything
    else is a local path."""
    if not is_url(url):
        return LocalFileSystem(), os.path.abspath(url)
    try:
        url = _escape_globs(url)
        kwargs = {**NfsFileSystem._get_kwargs_from_urls(url), **_RETRY}
        path = NfsFileSystem._strip_protocol(url)
        key = tuple(sorted(kwargs.items()))
        if key not in _OPEN:
            _OPEN[key] = NfsFileSystem(**kwargs, skip_instance_cache=True)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _OPEN[key], path


def place(operand: str) -> Place:
    fs, path = file_system(operand)
    return Place(fs, path, operand)


def expand(operand: str) -> list[Place]:
    """What ``operand`` names: itself, or the sorted matches of its glob pattern. A pattern
    matching nothing is a missing file (as a shell passes it through and ls reports it)."""
    where = place(operand)
    if not MAGIC.search(where.path):
        return [where]
    found = sorted(str(p) for p in where.fs.glob(where.path))
    if found:
        return [where.at(p) for p in found]
    if where.fs.exists(where.path):  # a name that only looks like a pattern
        return [where]
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), operand)


def stat_or_none(where: Place, follow: bool = True) -> Meta | None:
    """``where``'s attributes, ``None`` if it does not exist (a path no export holds is
    an error: it names the exports there are)."""
    try:
        return where.side.stat(where.path, follow)
    except NoSuchExport:
        raise
    except FileNotFoundError:
        return None

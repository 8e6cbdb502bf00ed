"""Helpers for testing backends, public so third-party backends can reuse them.

``check_backend(backend)`` runs a short conformance scenario against an empty backend
and raises ``AssertionError`` on the first deviation from the contract; Ferry's own
suite (tests/test_backends.py) goes much further using the helpers below.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ferry.backends.base import Backend
from ferry.errors import NfsError, status_from_oserror
from ferry.vocab import FileId, Ftype3, Nfsstat3, SetAttr, StableHow


def status_of(exc: BaseException) -> Nfsstat3:
    """The NFS status a backend exception becomes on the wire (as the service maps it)."""
    if isinstance(exc, NfsError):
        return exc.status
    if isinstance(exc, OSError):
        return status_from_oserror(exc)
    raise AssertionError(f"backend raised {exc!r}, neither NfsError nor OSError")


@contextlib.contextmanager
def raises_status(*expected: Nfsstat3) -> Iterator[None]:
    """Assert that the block fails with one of ``expected`` NFS statuses."""
    try:
        yield
    except (NfsError, OSError) as exc:
        got = status_of(exc)
        if got not in expected:
            names = "/".join(s.name for s in expected)
            raise AssertionError(f"expected {names}, got {got.name} ({exc})") from exc
    else:
        raise AssertionError(f"expected {'/'.join(s.name for s in expected)}, got success")


def open_fds() -> set[int]:
    """Descriptors open in this process (Linux), to spot leaks."""
    return {int(n) for n in os.listdir("/proc/self/fd")}


def names(backend: Backend, dir_fid: FileId) -> set[bytes]:
    """The names in a directory."""
    return {e.name for e in backend.readdir(dir_fid)}


def check_backend(backend: Backend) -> None:
    """A quick tour of the contract on an empty, writable backend."""
    root = backend.root()
    assert backend.getattr(root).type is Ftype3.DIR
    assert backend.lookup(root, b"..") == root
    sub = backend.mkdir(root, b"sub", SetAttr(mode=0o750))
    assert backend.getattr(sub).mode == 0o750
    assert backend.getattr(root).nlink == 3
    f = backend.create(sub, b"f", SetAttr(mode=0o600), exclusive=True)
    with raises_status(Nfsstat3.EXIST):
        backend.create(sub, b"f", SetAttr(), exclusive=True)
    backend.write(f, 0, memoryview(b"hello"), StableHow.FILE_SYNC)
    assert backend.read(f, 0, 100) == (b"hello", True)
    assert backend.lookup(sub, b"f") == f
    assert backend.lookup(sub, b"..") == root
    lnk = backend.symlink(sub, b"l", b"f", SetAttr())
    assert backend.getattr(lnk).type is Ftype3.LNK
    assert backend.readlink(lnk) == b"f"
    backend.rename(sub, b"f", root, b"g")
    assert backend.lookup(root, b"g") == f
    assert names(backend, sub) == {b"l"}
    backend.link(f, sub, b"h")
    assert backend.getattr(f).nlink == 2
    backend.remove(root, b"g")
    backend.remove(sub, b"h")
    with raises_status(Nfsstat3.STALE):
        backend.getattr(f)
    with raises_status(Nfsstat3.NOTEMPTY, Nfsstat3.EXIST):
        backend.rmdir(root, b"sub")
    backend.remove(sub, b"l")
    backend.rmdir(root, b"sub")
    assert names(backend, root) == set()

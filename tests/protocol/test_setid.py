"""Set-user-ID and set-group-ID bits are cleared when an unprivileged caller writes a file,
as POSIX write(2) does on a local file system: against Ferry (each backend) and against
NFS-Ganesha, the reference, with the same calls and the same expectations.

The rule is Linux's (``setattr_should_drop_suidgid``, which NFS-Ganesha gets from the
kernel by writing with the caller's identity): set-user-ID always goes; set-group-ID goes
if the group may execute the file, or if the writer is not in the file's group; a write by
root keeps both; a zero-length write changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rawclient import RawClient, nfs_create, nfs_getattr, nfs_write, serve_in_thread
from servers import export_config

from ferry.nfs3.const import Nfsstat3
from ferry.xdr import Packer
from helpers.ferry_fixture import running_ganesha

NOBODY = 65534
TARGETS = ["ferry-local", "ferry-memory", pytest.param("ganesha", marks=pytest.mark.interop)]


@dataclass
class Served:
    """A root handle and a client of each of the server's programs (Ganesha has two ports)."""

    nfs: RawClient
    root: bytes
    kind: str


@contextlib.contextmanager
def _served(kind: str, tmp_path: Path) -> Iterator[Served]:
    if kind == "ganesha":
        export = tmp_path / "ganesha-export"
        with running_ganesha(export, tmp_path / "ganesha") as g:
            mnt, nfs = RawClient(g.mnt_port), RawClient(g.nfs_port)
            try:
                yield Served(nfs, mnt.mount(str(g.export)), kind)
            finally:
                mnt.close()
                nfs.close()
        return
    cfg = export_config(kind.removeprefix("ferry-"), tmp_path)
    with serve_in_thread(cfg) as srv:
        c = srv.client()
        try:
            yield Served(c, c.mount(cfg.exports[0].mount_path), kind)
        finally:
            c.close()


@pytest.fixture(params=TARGETS)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Served]:
    with _served(request.param, tmp_path) as s:
        yield s


def setattr_as_root(
    c: RawClient,
    fh: bytes,
    mode: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    size: int | None = None,
) -> Nfsstat3:
    def build(p: Packer) -> None:
        p.pack_opaque(fh)
        for value in (mode, uid, gid):
            p.pack_optional(value, p.pack_uint)
        p.pack_optional(size, p.pack_uhyper)
        p.pack_uint(0)  # atime DONT_CHANGE
        p.pack_uint(0)  # mtime DONT_CHANGE
        p.pack_bool(False)  # no guard

    return c.nfs(2, build)[0]


def make_file(s: Served, name: str, mode: int, owner: tuple[int, int] = (0, 0)) -> bytes:
    """A one-byte file ``name`` with ``mode`` and ``owner``, set up as root over NFS."""
    s.nfs.as_user(0, 0)
    status, fh, _ = nfs_create(s.nfs, s.root, name, mode=0o644)
    assert status == Nfsstat3.OK and fh is not None
    assert nfs_write(s.nfs, fh, b"x")[0] == Nfsstat3.OK
    assert setattr_as_root(s.nfs, fh, uid=owner[0], gid=owner[1]) == Nfsstat3.OK
    assert setattr_as_root(s.nfs, fh, mode=mode) == Nfsstat3.OK  # after chown, which clears
    assert mode_of(s, fh) == mode
    return fh


def mode_of(s: Served, fh: bytes) -> int:
    status, attr = nfs_getattr(s.nfs, fh)
    assert status == Nfsstat3.OK and attr is not None
    return attr.mode & 0o7777


@pytest.mark.parametrize(
    ("mode", "owner", "writer", "after"),
    [
        (0o4777, (0, 0), (NOBODY, NOBODY), 0o777),
        (0o2777, (0, 0), (NOBODY, NOBODY), 0o777),
        (0o6777, (0, 0), (NOBODY, NOBODY), 0o777),
        (0o6777, (0, 0), (NOBODY, 0), 0o777),  # in the group, but the group may execute
        (0o2767, (0, 0), (NOBODY, NOBODY), 0o767),  # no group x, writer not in the group
        (0o2767, (0, 0), (NOBODY, 0), 0o2767),  # no group x, writer in the group: a lock mark
        (0o4755, (1000, 1000), (1000, 1000), 0o755),  # the owner is not privileged either
        (0o6777, (0, 0), (0, 0), 0o6777),  # root may write and keep them
        (0o6777, (1000, 1000), (0, 0), 0o6777),
    ],
    ids=[
        "u-nobody",
        "g-nobody",
        "ug-nobody",
        "ug-in-group",
        "g-no-x",
        "g-no-x-in-group",
        "u-owner",
        "ug-root",
        "ug-root-not-owner",
    ],
)
def test_write_by_an_unprivileged_caller_clears_setid_bits(
    served: Served, mode: int, owner: tuple[int, int], writer: tuple[int, int], after: int
) -> None:
    fh = make_file(served, "f", mode, owner)
    served.nfs.as_user(*writer)
    assert nfs_write(served.nfs, fh, b"hello", offset=1)[0] == Nfsstat3.OK
    served.nfs.as_user(0, 0)
    assert mode_of(served, fh) == after


def test_a_zero_length_write_keeps_setid_bits(served: Served) -> None:
    fh = make_file(served, "f", 0o6777)
    served.nfs.as_user(NOBODY, NOBODY)
    assert nfs_write(served.nfs, fh, b"")[0] == Nfsstat3.OK
    served.nfs.as_user(0, 0)
    assert mode_of(served, fh) == 0o6777


def test_the_write_reply_shows_the_cleared_mode(served: Served) -> None:
    """The post-operation attributes of the WRITE are those after the bits went: a client
    caching them must not go on showing a set-user-ID file."""
    fh = make_file(served, "f", 0o4777)
    served.nfs.as_user(NOBODY, NOBODY)

    def build(p: Packer) -> None:
        p.pack_opaque(fh)
        p.pack_uhyper(0)
        p.pack_uint(2)
        p.pack_uint(2)  # FILE_SYNC
        p.pack_opaque(b"hi")

    status, u = served.nfs.nfs(7, build)
    assert status == Nfsstat3.OK
    if u.unpack_bool():  # pre_op_attr
        u.unpack_uhyper()
        for _ in range(4):
            u.unpack_uint()
    assert u.unpack_bool(), "no post-operation attributes"
    u.unpack_uint()  # type
    assert u.unpack_uint() & 0o7777 == 0o777


@pytest.mark.parametrize("backend", ["ferry-local", "ferry-memory"])
@pytest.mark.parametrize(
    ("caller", "size", "after"),
    [
        ((NOBODY, NOBODY), 0, 0o777),  # truncate
        ((NOBODY, NOBODY), 100, 0o777),  # extend
        ((NOBODY, NOBODY), 1, 0o777),  # same size: ftruncate(2) clears them too
        ((0, 0), 0, 0o6777),
    ],
    ids=["truncate", "extend", "same-size", "root"],
)
def test_setattr_of_the_size_by_an_unprivileged_caller_clears_setid_bits(
    backend: str, tmp_path: Path, caller: tuple[int, int], size: int, after: int
) -> None:
    """As truncate(2) on a local file system. Ferry only: NFS-Ganesha 4.3 (like knfsd, whose
    SETATTR sets the size alone) keeps the bits on a SETATTR of the size."""
    with _served(backend, tmp_path) as s:
        fh = make_file(s, "f", 0o6777)
        s.nfs.as_user(*caller)
        assert setattr_as_root(s.nfs, fh, size=size) == Nfsstat3.OK
        s.nfs.as_user(0, 0)
        assert mode_of(s, fh) == after


@pytest.mark.parametrize("backend", ["ferry-local", "ferry-memory"])
def test_setattr_of_size_and_mode_together_sets_the_mode_given(
    backend: str, tmp_path: Path
) -> None:
    """A mode in the same SETATTR is what the caller asked for: it wins over the clearing."""
    with _served(backend, tmp_path) as s:
        fh = make_file(s, "f", 0o6777, owner=(1000, 1000))
        s.nfs.as_user(1000, 1000)
        assert setattr_as_root(s.nfs, fh, mode=0o6755, size=0) == Nfsstat3.OK
        s.nfs.as_user(0, 0)
        assert mode_of(s, fh) == 0o6755

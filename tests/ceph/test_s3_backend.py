"""S3Backend against RGW, Ceph's S3 server (a real one, not a mock).

The backend contract tests of tests/test_backends.py that an object store can pass run
here; the others need what S3 does not have (modes, owners, hard and symbolic links,
special files, non-UTF-8 names, a file id kept across rename, directory link counts).
Then the S3 specifics: handles that survive a restart and work on another instance,
read-ahead, multipart upload, copy+delete renames, refused directory renames, and
failures at start and mid-flight.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import test_backends as contract
from ferry.backends import load_backend
from ferry.backends.base import Backend, SetAttr
from ferry.backends.s3 import S3Backend
from ferry.errors import ConfigError
from ferry.nfs3.const import Ftype3, Nfsstat3, StableHow
from ferry.testing import names, raises_status
from helpers import peers
from helpers.ceph import CephCluster

pytestmark = [pytest.mark.ceph, pytest.mark.interop]
Factory = Callable[..., S3Backend]
S = Nfsstat3
SYNC, UNSTABLE = StableHow.FILE_SYNC, StableHow.UNSTABLE

APPLICABLE = (
    "test_root", "test_exclusive_create_exists", "test_unchecked_create_opens_and_truncates",
    "test_lookup_errors", "test_lookup_dotdot", "test_read_write", "test_sparse_write",
    "test_used_and_size", "test_write_times", "test_remove_makes_stale",
    "test_remove_and_rmdir_types", "test_fsstat", "test_readonly", "test_concurrent_writes",
)  # fmt: skip
for _name in APPLICABLE:
    globals()[_name] = getattr(contract, _name)


@pytest.fixture
def make(rgw: dict[str, str], bucket: str, tmp_path: Any) -> Iterator[Factory]:
    """Builds backends on one bucket (each its own s3fs client and caches)."""
    made: list[S3Backend] = []

    def factory(**options: Any) -> S3Backend:
        made.append(S3Backend(bucket, spool_dir=str(tmp_path), **{**rgw, **options}))
        return made[-1]

    yield factory
    for b in made:
        b.close()


@pytest.fixture
def b(make: Factory) -> Backend:
    return make()


def mkfile(b: Backend, name: bytes, data: bytes = b"", d: int | None = None) -> int:
    fid = b.create(b.root() if d is None else d, name, SetAttr(), exclusive=True)
    if data:
        b.write(fid, 0, memoryview(data), SYNC)
    return fid


def test_handles_survive_a_restart_and_work_on_another_server(make: Factory) -> None:
    a = make()
    d = a.mkdir(a.root(), b"dir", SetAttr())
    e = a.mkdir(d, b"deeper", SetAttr())
    f = mkfile(a, b"f", b"payload", d=e)
    a.close()
    other = make()  # knows nothing: finds the ids by listing the bucket
    assert other.getattr(f).size == 7 and other.read(f, 0, 100) == (b"payload", True)
    assert other.getattr(e).type is Ftype3.DIR and other.lookup(e, b"..") == d
    assert other.lookup(d, b"deeper") == e


def test_uncommitted_writes_are_not_in_the_store_until_commit(make: Factory) -> None:
    a, other = make(), make(attr_ttl=0)
    f = mkfile(a, b"f")
    a.write(f, 0, memoryview(b"spooled"), UNSTABLE)
    assert a.read(f, 0, 100) == (b"spooled", True)
    assert other.getattr(f).size == 0
    a.commit(f, 0, 0)
    assert other.read(f, 0, 100) == (b"spooled", True)


def test_reads_use_ranged_gets_with_read_ahead(make: Factory) -> None:
    b = make(readahead=1 << 20)
    data = os.urandom(3 << 20)
    f = mkfile(b, b"f", data)
    gets: list[tuple[int, int]] = []
    cat = b._fs.cat_file

    def counting(path: str, start: int, end: int) -> bytes:
        gets.append((start, end))
        return cat(path, start=start, end=end)  # type: ignore[no-any-return]

    b._fs.cat_file = counting
    got = b"".join(bytes(b.read(f, off, 65536)[0]) for off in range(0, len(data), 65536))
    assert got == data
    assert gets == [(0, 1 << 20), (1 << 20, 2 << 20), (2 << 20, 3 << 20)]


def test_large_files_are_uploaded_in_parts(make: Factory, rgw: dict[str, str], bucket: str) -> None:
    b = make(chunk=5 << 20)
    data = os.urandom(12 << 20)
    f = mkfile(b, b"big")
    for off in range(0, len(data), 1 << 20):
        b.write(f, off, memoryview(data[off : off + (1 << 20)]), UNSTABLE)
    b.commit(f, 0, 0)
    etag = b._fs.info(f"{bucket}/big")["ETag"].strip('"')
    assert etag.endswith("-3"), etag  # a multipart upload: parts of 5, 5 and 2 MiB
    assert make().read(f, 0, len(data)) == (data, True)


def test_rename_copies_a_file_and_refuses_a_directory(b: Backend) -> None:
    root = b.root()
    d = b.mkdir(root, b"d", SetAttr())
    f = mkfile(b, b"f", b"content")
    b.rename(root, b"f", d, b"g")
    g = b.lookup(d, b"g")
    assert b.read(g, 0, 100) == (b"content", True)
    with raises_status(S.STALE):
        b.getattr(f)  # a copy is a new object: the old handle is gone
    assert names(b, root) == {b"d"}
    with raises_status(S.XDEV):
        b.rename(root, b"d", root, b"e")
    mkfile(b, b"h", b"new")
    b.rename(root, b"h", d, b"g")  # replaces
    assert b.read(b.lookup(d, b"g"), 0, 100) == (b"new", True)


def test_a_directory_outlives_its_last_file(b: Backend) -> None:
    d = b.mkdir(b.root(), b"d", SetAttr())
    mkfile(b, b"f", b"x", d=d)
    b.remove(d, b"f")
    assert b.lookup(b.root(), b"d") == d and names(b, d) == set()


def test_what_an_object_store_lacks(b: Backend) -> None:
    root = b.root()
    f = mkfile(b, b"f", b"x")
    for op in (
        lambda: b.symlink(root, b"l", b"f", SetAttr()),
        lambda: b.link(f, root, b"h"),
        lambda: b.mknod(root, b"p", Ftype3.FIFO, SetAttr(), (0, 0)),
    ):
        with raises_status(S.NOTSUPP):
            op()
    b.setattr(f, SetAttr(mode=0o600, uid=5, mtime_ns=1))  # accepted, not stored
    assert b.getattr(f).mode == 0o644
    with raises_status(S.INVAL):
        b.create(root, b"\xff not utf-8", SetAttr(), exclusive=True)
    b.setattr(f, SetAttr(size=3))
    assert b.read(f, 0, 10) == (b"x\0\0", True)


def test_builtin_name(rgw: dict[str, str], bucket: str) -> None:
    assert load_backend("s3") is S3Backend


def test_unreachable_store_or_missing_bucket_is_a_clear_error(rgw: dict[str, str]) -> None:
    dead = {**rgw, "endpoint_url": f"http://127.0.0.1:{peers.free_port()}", "connect_timeout": 1}
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="s3 'bucket'.*cannot list bucket 'bucket'"):
        S3Backend("bucket", **dead)  # type: ignore[arg-type]
    assert time.monotonic() - t0 < 30
    with pytest.raises(ConfigError, match="cannot list bucket 'no-such-bucket'"):
        S3Backend("no-such-bucket/prefix", **rgw)


def test_stalled_store_answers_jukebox_then_recovers(
    make: Factory, ceph_cluster: CephCluster
) -> None:
    b = make(op_timeout=2, attr_ttl=0)
    f = mkfile(b, b"f", b"before")
    rgw = ceph_cluster.procs["rgw.a"].pid
    os.kill(rgw, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with raises_status(S.JUKEBOX):
            b.getattr(f)
        assert time.monotonic() - t0 < 10
    finally:
        os.kill(rgw, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while True:
        try:
            assert b.read(f, 0, 100) == (b"before", True)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

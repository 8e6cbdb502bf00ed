"""S3Backend against RGW, Ceph's S3 server (a real one, not a mock).

The backend contract tests of tests/test_backends.py that an object store can pass run
here; the others need what S3 does not have (modes, owners, hard and symbolic links,
special files, non-UTF-8 names, a file id kept across rename, directory link counts).
Then the S3 specifics: handles that survive a restart and work on another instance,
read-ahead, multipart upload, copy+delete renames, refused directory renames, and
failures at start and mid-flight.
"""

from __future__ import annotations

import logging
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
        made.append(S3Backend(bucket, **{"spool_dir": str(tmp_path), **rgw, **options}))
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
    with pytest.raises(ConfigError, match="cannot list prefix 'prefix' of bucket 'no-such-bucket'"):
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


# -- several writers: a COMMIT never uploads a stale whole object over another's data ----

MIB = 1 << 20


@pytest.mark.parametrize("size", [2 * MIB, 10 * MIB], ids=["put", "multipart"])
def test_a_commit_merges_over_what_another_server_committed(make: Factory, size: int) -> None:
    a, b = make(chunk=5 << 20), make(chunk=5 << 20)  # multipart from 10 MiB
    f = mkfile(a, b"f", bytes(size))
    half = size // 2
    mine, theirs, tail = os.urandom(half), os.urandom(size - half), os.urandom(1000)
    a.write(f, 0, memoryview(mine), UNSTABLE)
    b.write(f, half, memoryview(theirs), UNSTABLE)
    b.write(f, size, memoryview(tail), UNSTABLE)  # and B makes the file longer
    a.commit(f, 0, 0)
    b.commit(f, 0, 0)
    assert make().read(f, 0, size + 2000) == (mine + theirs + tail, True)


def test_a_file_sync_write_merges_too_and_a_truncate_is_replayed(make: Factory) -> None:
    a, b = make(), make()
    f = mkfile(a, b"f", b"0123456789")
    b.write(f, 2, memoryview(b"bb"), UNSTABLE)
    a.write(f, 6, memoryview(b"AA"), SYNC)
    b.setattr(f, SetAttr(size=5))  # B's write and truncate, over A's committed "AA"
    assert make().read(f, 0, 100) == (b"01bb4", True)
    b.write(f, 7, memoryview(b"B"), UNSTABLE)
    a.write(f, 0, memoryview(b"A"), SYNC)
    b.commit(f, 0, 0)
    assert make().read(f, 0, 100) == (b"A1bb4\0\0B", True)


def test_a_commit_that_keeps_conflicting_answers_jukebox_and_keeps_its_data(
    make: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = make(), make()
    f = mkfile(a, b"f", b"0000")
    a.write(f, 0, memoryview(b"AA"), UNSTABLE)
    put, tries = a._store.put, []

    def interfered(path: str, source: str, if_match: str) -> str:
        tries.append(if_match)  # another server commits a new version each time:
        b.write(f, 3, memoryview(bytes([len(tries)])), SYNC)
        return put(path, source, if_match)

    monkeypatch.setattr(a._store, "put", interfered)
    with raises_status(S.JUKEBOX):
        a.commit(f, 0, 0)
    assert len(tries) == 6 and len(set(tries)) == 6  # each try based on the newest version
    monkeypatch.setattr(a._store, "put", put)
    a.commit(f, 0, 0)  # the spool was kept: the client's retry succeeds
    got, _ = make().read(f, 0, 10)
    assert got[:3] == b"AA0" and len(got) == 4


def test_a_versioned_bucket_merges_too(
    make: Factory, rgw: dict[str, str], bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """RGW 16 refuses every If-Match on a versioned bucket: ETag checked by a HEAD."""
    from ceph_support import s3_admin

    caplog.set_level(logging.WARNING, logger="ferry.backends.s3")
    admin = s3_admin(rgw)
    admin.call_s3("put_bucket_versioning", Bucket=bucket,
                  VersioningConfiguration={"Status": "Enabled"})  # fmt: skip
    for _ in range(50):  # RGW may take a moment to version new objects (seen under load)
        if admin.call_s3("put_object", Bucket=bucket, Key="probe", Body=b"").get("VersionId"):
            break
        time.sleep(0.1)
    else:
        pytest.fail("RGW did not start versioning the bucket within 5 s")
    a, b = make(), make()
    f = mkfile(a, b"f", bytes(100))
    a.write(f, 0, memoryview(b"A" * 50), UNSTABLE)
    b.write(f, 50, memoryview(b"B" * 50), UNSTABLE)
    a.commit(f, 0, 0)
    b.commit(f, 0, 0)
    assert make().read(f, 0, 200) == (b"A" * 50 + b"B" * 50, True)
    assert "refuses If-Match even for the object's current ETag" in caplog.text


def test_a_commit_to_an_object_removed_elsewhere_is_stale(make: Factory) -> None:
    a, b = make(), make()
    f = mkfile(a, b"f", b"data")
    a.write(f, 0, memoryview(b"DATA"), UNSTABLE)
    b.remove(b.root(), b"f")
    with raises_status(S.STALE):
        a.commit(f, 0, 0)
    with raises_status(S.NOENT):
        make().lookup(b.root(), b"f")  # not brought back by the stale spool


def test_a_same_size_rewrite_within_one_second_changes_the_times(make: Factory) -> None:
    a, other, third = make(), make(attr_ttl=0), make(attr_ttl=0)
    f = mkfile(a, b"f", b"x" * 100)
    for _ in range(5):  # bounded: until both versions have the same LastModified second
        before = other.getattr(f)
        a.write(f, 0, memoryview(os.urandom(100)), SYNC)
        after = other.getattr(f)
        if before.mtime_ns // 10**9 == after.mtime_ns // 10**9:
            break
    else:
        pytest.fail("five rewrites each crossed a second boundary")
    assert after.size == before.size
    assert after.mtime_ns != before.mtime_ns and after.ctime_ns != before.ctime_ns
    assert third.getattr(f) == after  # the same on every server that did not write it


# -- spool files --------------------------------------------------------------------------


def test_spools_stay_in_spool_dir_and_live_ones_are_kept(make: Factory, tmp_path: Any) -> None:
    spools = tmp_path / "spools"
    a = make(spool_dir=str(spools))
    f = mkfile(a, b"f")
    a.write(f, 0, memoryview(b"uncommitted"), UNSTABLE)
    held = [p for p in spools.rglob("*") if p.is_file() and p.stat().st_size == 11]
    assert len(held) == 1, list(spools.rglob("*"))
    make(spool_dir=str(spools))  # another live server on the same directory keeps it
    assert held[0].exists() and a.read(f, 0, 100) == (b"uncommitted", True)
    a.commit(f, 0, 0)
    assert not held[0].exists()


# -- an unreachable store, errors, options ------------------------------------------------


def test_s3_errors_name_the_s3_error_code(rgw: dict[str, str], bucket: str) -> None:
    with pytest.raises(ConfigError, match="SignatureDoesNotMatch|InvalidAccessKeyId"):
        S3Backend(bucket, **{**rgw, "secret": "wrong"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="NoSuchBucket"):
        S3Backend("no-such-bucket/prefix", **rgw)  # type: ignore[arg-type]


def test_credentials_scoped_to_a_prefix_serve_it(
    make: Factory, rgw: dict[str, str], rgw_scoped: dict[str, str], bucket: str
) -> None:
    from ceph_support import grant_prefix, s3_admin

    grant_prefix(rgw, bucket, "team")
    s3_admin(rgw).pipe_file(f"{bucket}/elsewhere", b"not theirs")
    b = S3Backend(f"{bucket}/team", **rgw_scoped)  # type: ignore[arg-type]
    try:
        root = b.root()
        with raises_status(S.NOENT):
            b.lookup(root, b"missing")  # RGW answers 403 to a HEAD of a missing key here
        d = b.mkdir(root, b"d", SetAttr())
        f = mkfile(b, b"f", b"scoped", d=d)
        assert b.read(b.lookup(d, b"f"), 0, 100) == (b"scoped", True)
        assert names(b, root) == {b"d"} and b.lookup(d, b"..") == root
        b.remove(d, b"f")
        with raises_status(S.STALE):
            b.getattr(f)
    finally:
        b.close()
    with pytest.raises(ConfigError, match="AccessDenied"):
        S3Backend(bucket, **rgw_scoped)  # type: ignore[arg-type]


def test_tls_with_a_ca_bundle_or_without_verification(
    rgw: dict[str, str], bucket: str, tmp_path: Any
) -> None:
    from helpers.tcpproxy import TcpProxy, tls_cert

    cert, key = tls_cert(tmp_path)
    with TcpProxy(int(rgw["endpoint_url"].rsplit(":", 1)[1]), tls=(cert, key)) as proxy:
        over_tls = {**rgw, "endpoint_url": proxy.url}
        with pytest.raises(ConfigError, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            S3Backend(bucket, **over_tls)  # type: ignore[arg-type]
        for name, options in ((b"f", {"ca_bundle": str(cert)}), (b"g", {"verify": False})):
            b = S3Backend(bucket, **over_tls, **options)  # type: ignore[arg-type]
            mkfile(b, name, b"over TLS")
            assert b.read(b.lookup(b.root(), name), 0, 100) == (b"over TLS", True)
            b.close()
    with pytest.raises(ConfigError, match="ca_bundle"):
        S3Backend(bucket, **rgw, ca_bundle=str(tmp_path / "missing.pem"))  # type: ignore[arg-type]


def test_profile_session_token_and_addressing_style(
    rgw: dict[str, str], bucket: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers.tcpproxy import TcpProxy

    creds = tmp_path / "credentials"
    creds.write_text(
        f"[ferrytest]\naws_access_key_id = {rgw['key']}\naws_secret_access_key = {rgw['secret']}\n"
    )
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    b = S3Backend(bucket, endpoint_url=rgw["endpoint_url"], profile="ferrytest")
    mkfile(b, b"f", b"by profile")
    b.close()
    temporary = {**rgw, "token": "SESSION-TOKEN-1"}  # RGW without STS ignores it
    with TcpProxy(int(rgw["endpoint_url"].rsplit(":", 1)[1])) as proxy:
        b = S3Backend(bucket, **{**temporary, "endpoint_url": proxy.url},  # type: ignore[arg-type]
                      addressing_style="path")  # fmt: skip
        assert b.read(b.lookup(b.root(), b"f"), 0, 100) == (b"by profile", True)
        b.close()
        heads = [s.split(b"\r\n\r\n", 1)[0].lower() for s in proxy.sent]
    assert heads and all(b"x-amz-security-token: session-token-1" in h for h in heads)
    assert all(h.split(b" ", 2)[1].startswith(f"/{bucket}".encode()) for h in heads)
    with pytest.raises(ConfigError, match="token"):
        S3Backend(bucket, endpoint_url=rgw["endpoint_url"], token="T")
    with pytest.raises(ConfigError, match="addressing_style"):
        S3Backend(bucket, **rgw, addressing_style="sideways")  # type: ignore[arg-type]


def test_a_stopped_store_answers_jukebox_then_recovers(
    make: Factory, ceph_cluster: CephCluster
) -> None:
    """A stopped RGW refuses connections: retryable (JUKEBOX), as a frozen one is."""
    b = make(op_timeout=20, attr_ttl=0)
    f = mkfile(b, b"f", b"before")
    ceph_cluster.kill("rgw.a")
    try:
        t0 = time.monotonic()
        for op in (
            lambda: b.getattr(f),
            lambda: b.lookup(b.root(), b"f"),
            lambda: b.readdir(b.root()),
            lambda: b.read(f, 0, 100),
            lambda: b.write(f, 0, memoryview(b"after"), SYNC),
            lambda: b.create(b.root(), b"g", SetAttr(), exclusive=True),
        ):
            with raises_status(S.JUKEBOX):
                op()
        assert time.monotonic() - t0 < 60
    finally:
        ceph_cluster.start_rgw()
    deadline = time.monotonic() + 30
    while True:
        try:
            assert b.read(f, 0, 100) == (b"before", True)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)

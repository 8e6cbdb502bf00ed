"""The file API: path operations, ``open()`` with read-ahead and write-behind, the cache.

Against a Ferry server in-process on loopback (``ferry_srv``), through the fault proxy
where the wire must be observed, and against NFS-Ganesha (marked ``interop``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import random
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_proxy import Proxy, through_proxy, url_for
from rawclient import RunningServer

import ferry
from ferry.client import AsyncNfsClient, AuthSys, Client, FileOptions
from ferry.nfs3.const import NfsProc
from helpers.aio import run
from helpers.peers import GaneshaServer


@pytest.fixture
def client(ferry_srv: RunningServer, export_root: Path) -> Iterator[Client]:
    with ferry.connect(url_for(ferry_srv.port, export_root)) as c:
        yield c


@pytest.fixture(params=["ferry", pytest.param("ganesha", marks=pytest.mark.interop)])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[Client, Path]]:
    """A client and the exported directory, for a Ferry server and for NFS-Ganesha."""
    if request.param == "ganesha":
        ganesha: GaneshaServer = request.getfixturevalue("ganesha_server")
        url, root = ganesha.url, ganesha.export
    else:
        root = request.getfixturevalue("export_root")
        url = url_for(request.getfixturevalue("ferry_srv").port, root)
    with ferry.connect(url) as c:
        yield c, root


# -- path operations -------------------------------------------------------------------------


def test_path_operations(served: tuple[Client, Path]) -> None:
    client, export_root = served
    client.mkdir("d", 0o750)
    assert (export_root / "d").is_dir() and (export_root / "d").stat().st_mode & 0o777 == 0o750
    client.makedirs("d/e/f")
    client.makedirs("d/e/f", exist_ok=True)
    assert client.isdir("d/e/f") and not client.isfile("d/e/f")
    client.write_file("d/a", b"aaa")
    client.write_file("d/b", b"bb")
    client.rename("d/a", "d/b")  # over an existing file
    assert sorted(os.listdir(export_root / "d")) == ["b", "e"]
    assert (export_root / "d/b").read_bytes() == b"aaa"
    client.symlink("b", "d/ln")
    assert client.readlink("d/ln") == "b" and os.readlink(export_root / "d/ln") == "b"
    assert stat.S_ISLNK(client.lstat("d/ln").st_mode) and client.isfile("d/ln")
    remote, local = client.stat("d/ln"), os.stat(export_root / "d/b")
    fields = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_mtime_ns")
    assert [getattr(remote, f) for f in fields] == [getattr(local, f) for f in fields]
    assert client.stat("d/b").st_mode == local.st_mode and client.stat("d").st_size > 0
    client.link("d/b", "d/hard")
    assert (export_root / "d/hard").stat().st_ino == (export_root / "d/b").stat().st_ino
    client.chmod("d/b", 0o600)
    client.chown("d/b", 1234, -1)
    client.utime("d/b", (1_000_000, 2_000_000))
    st = (export_root / "d/b").stat()
    assert (st.st_mode & 0o777, st.st_uid, int(st.st_mtime)) == (0o600, 1234, 2_000_000)
    client.utime("d/b", ns=(5, 3_000_000_000_000_000_007))
    assert (export_root / "d/b").stat().st_mtime_ns == 3_000_000_000_000_000_007
    client.truncate("d/b", 1)
    assert (export_root / "d/b").read_bytes() == b"a"
    client.unlink("d/hard")
    client.remove("d/ln")
    client.rmdir("d/e/f")
    assert not client.exists("d/e/f") and client.exists("d/e")
    assert sorted(client.listdir("d")) == ["b", "e"]


def test_procedure_forms_still_work(client: Client) -> None:
    """Handles first: the NFS procedures the fsspec layer builds on."""
    made = client.nfs.mkdir(client.root, "p")
    assert made.obj is not None
    client.nfs.rename(client.root, "p", client.root, "q")
    assert client.nfs.readlink(client.nfs.symlink(client.root, "l", "q").obj or b"") == b"q"
    client.nfs.remove(client.root, "l")
    client.nfs.rmdir(client.root, "q")
    assert client.listdir() == []


def _raises(exc: type[OSError], code: int, filename: str, fn, *args) -> OSError:  # type: ignore[no-untyped-def]
    with pytest.raises(exc) as info:
        fn(*args)
    assert info.value.errno == code and info.value.filename == filename, info.value
    return info.value


def test_errors_are_oserrors_with_errno_and_path(served: tuple[Client, Path]) -> None:
    client, export_root = served
    (export_root / "dir").mkdir()
    (export_root / "dir" / "x").write_bytes(b"x")
    (export_root / "file").write_bytes(b"f")
    _raises(FileNotFoundError, errno.ENOENT, "nope", client.open, "nope")
    _raises(FileNotFoundError, errno.ENOENT, "nope/a", client.remove, "nope/a")
    _raises(FileNotFoundError, errno.ENOENT, "nope", client.rmdir, "nope")
    _raises(IsADirectoryError, errno.EISDIR, "dir", client.open, "dir")
    _raises(IsADirectoryError, errno.EISDIR, "dir", client.open, "dir", "wb")
    _raises(NotADirectoryError, errno.ENOTDIR, "file", client.listdir, "file")
    _raises(NotADirectoryError, errno.ENOTDIR, "file/a", client.mkdir, "file/a")
    _raises(NotADirectoryError, errno.ENOTDIR, "file", client.rmdir, "file")
    _raises(FileExistsError, errno.EEXIST, "dir", client.mkdir, "dir")
    _raises(FileExistsError, errno.EEXIST, "file", client.open, "file", "xb")
    _raises(FileExistsError, errno.EEXIST, "file", client.makedirs, "file", 0o777, True)
    _raises(OSError, errno.ENOTEMPTY, "dir", client.rmdir, "dir")
    err = _raises(FileNotFoundError, errno.ENOENT, "gone", client.rename, "gone", "there")
    assert err.filename2 == "there"
    _raises(OSError, errno.EINVAL, "file", client.readlink, "file")


def test_permission_error_as_unprivileged_user(ferry_srv: RunningServer, export_root: Path) -> None:
    (export_root / "secret").write_bytes(b"s")
    (export_root / "secret").chmod(0o600)
    (export_root / "ro").mkdir(mode=0o755)
    url = url_for(ferry_srv.port, export_root)
    with ferry.connect(url, auth=AuthSys(uid=4321, gid=4321)) as c:
        _raises(PermissionError, errno.EACCES, "secret", c.open, "secret")
        _raises(PermissionError, errno.EACCES, "secret", c.read_file, "secret")
        _raises(PermissionError, errno.EACCES, "ro/new", c.open, "ro/new", "wb")
        _raises(PermissionError, errno.EACCES, "ro/d", c.mkdir, "ro/d")
        _raises(PermissionError, errno.EPERM, "secret", c.chown, "secret", 4321, 4321)


def test_walk_matches_os_walk(client: Client, export_root: Path) -> None:
    for d in ("a/b/c", "a/d", "e"):
        (export_root / d).mkdir(parents=True)
    for f in ("top.txt", "a/1", "a/b/2", "a/b/c/3", "e/4"):
        (export_root / f).write_bytes(b"")
    (export_root / "a/tolink").symlink_to("b")

    def local(topdown: bool) -> list[tuple[str, list[str], list[str]]]:
        out = []
        for dirpath, dirs, files in os.walk(export_root, topdown=topdown):
            rel = os.path.relpath(dirpath, export_root)
            out.append(("" if rel == "." else rel, sorted(dirs), sorted(files)))
        return out

    for topdown in (True, False):
        ours = [(p, sorted(d), sorted(f)) for p, d, f in client.walk(topdown=topdown)]
        assert sorted(ours) == sorted(local(topdown))
        if not topdown:  # children before parents
            assert [p for p, _, _ in ours].index("a/b/c") < [p for p, _, _ in ours].index("a")
    pruned = []
    for path, dirs, _ in client.walk():
        pruned.append(path)
        dirs[:] = [d for d in dirs if d != "a"]
    assert sorted(pruned) == ["", "e"]


# -- open(): io semantics ---------------------------------------------------------------------


def test_binary_io_semantics(client: Client, export_root: Path) -> None:
    data = os.urandom(300_000)
    (export_root / "f").write_bytes(data)
    with client.open("f") as f:
        assert isinstance(f, io.BufferedReader) and f.readable() and not f.writable()
        buf = bytearray(1000)
        assert f.readinto(buf) == 1000 and buf == data[:1000]
        assert f.tell() == 1000
        assert f.seek(-10, os.SEEK_END) == len(data) - 10
        assert f.read(100) == data[-10:]  # partial read at the end
        assert f.read(100) == b""
        f.seek(5000)
        assert f.read(7) == data[5000:5007]
        f.seek(3, os.SEEK_CUR)
        assert f.read(2) == data[5010:5012]
        f.seek(0)
        assert f.read() == data
    with client.open("f", "rb", buffering=0) as raw:
        assert raw.read(5) == data[:5]
        assert raw.readall() == data[5:]
    with pytest.raises(ValueError):
        f.read()


def test_write_modes(client: Client, export_root: Path) -> None:
    with client.open("w.bin", "wb") as f:
        assert f.write(b"hello ") == 6
        f.write(b"world")
        assert f.tell() == 11
    assert (export_root / "w.bin").read_bytes() == b"hello world"
    with client.open("w.bin", "ab") as f:
        assert f.tell() == 11
        f.write(b"!")
    assert (export_root / "w.bin").read_bytes() == b"hello world!"
    with client.open("w.bin", "r+b") as f:
        f.seek(6)
        f.write(b"WORLD")
        f.seek(0)
        assert f.read() == b"hello WORLD!"  # our own queued write is read back
        f.truncate(5)
        f.seek(0, os.SEEK_END)
        assert f.tell() == 5
    assert (export_root / "w.bin").read_bytes() == b"hello"
    with client.open("w.bin", "wb") as f:  # truncates
        pass
    assert (export_root / "w.bin").read_bytes() == b""
    with client.open("new.bin", "xb") as f:
        f.write(b"x")
    assert (export_root / "new.bin").read_bytes() == b"x"
    with client.open("w.bin", "rb") as f, pytest.raises(OSError) as info:
        f.write(b"no")  # type: ignore[attr-defined]
    assert isinstance(info.value, io.UnsupportedOperation | OSError)


def test_text_mode_round_trip(client: Client, export_root: Path) -> None:
    text = "héllo\nwörld\r\nend ✓\n"
    with client.open("t.txt", "w", encoding="utf-8", newline="") as f:
        assert isinstance(f, io.TextIOWrapper)
        f.write(text)
    assert (export_root / "t.txt").read_bytes() == text.encode()
    with client.open("t.txt", "r") as f:
        assert f.readline() == "héllo\n"
        assert f.read() == "wörld\nend ✓\n"  # universal newlines
    with client.open("t.txt", "a", encoding="latin-1") as f:
        f.write("ü")
    assert (export_root / "t.txt").read_bytes().endswith(b"\xfc")
    with client.open("t.txt", "rt", errors="replace") as f:
        assert f.read().endswith("\ufffd")
    with pytest.raises(ValueError):
        client.open("t.txt", "rb", encoding="utf-8")
    with pytest.raises(ValueError):
        client.open("t.txt", "rw")


# -- read-ahead and write-behind on the wire -------------------------------------------------


def test_readahead_pipelines_and_is_discarded_on_seek(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    rs = 65536
    data = os.urandom(64 * rs)
    (export_root / "f").write_bytes(data)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        opts = c.file_options = FileOptions(readahead=16 * rs)
        f = await c.open("f")
        got = bytearray()
        for _ in range(16):  # a sequential reader asking for one chunk at a time
            got += await f.read(rs)
        assert got == data[: 16 * rs]
        reads_seen = [x for x, p in proxy.calls if p == NfsProc.READ]
        assert len(reads_seen) > 16  # the server was asked for more than the reader wanted
        assert proxy.max_in_flight > 2  # ... and several at once
        assert f.stats.readahead > 0 and f.stats.readahead * rs <= opts.readahead * 4
        ahead = len(f._chunks)
        assert 0 < ahead <= opts.readahead // rs
        await f.seek(60 * rs + 7)  # beyond the window (and its out-of-order slack): a seek
        assert await f.read(100) == data[60 * rs + 7 : 60 * rs + 107]
        assert f.stats.readahead_discarded >= ahead  # the window was dropped on the seek
        await f.close()

    run(through_proxy(ferry_srv.port, export_root, body, rsize=rs))


def test_readahead_serves_out_of_order_reads_within_its_window(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    """The kernel's FUSE read-ahead sends requests out of order: each chunk is still READ
    once, nothing is discarded, and ``pread`` hands out the reply itself (no copy)."""
    rs = 65536
    data = os.urandom(64 * rs)
    (export_root / "f").write_bytes(data)
    order = [0, 2, 1, 3, 5, 4, 6, 9, 7, 8, *range(10, 64)]  # swaps, and one skip of two

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        c.file_options = FileOptions(readahead=16 * rs)
        f = await c.open("f")
        spare = memoryview(bytearray(rs))
        for i in order:
            got = await f.pread(i * rs, spare)
            assert bytes(got) == data[i * rs : (i + 1) * rs]
            assert got.obj is not spare.obj  # the reply's memory, not a copy into spare
        half = await f.pread(10 * rs + rs // 2, spare)  # across two chunks: copied
        assert bytes(half) == data[10 * rs + rs // 2 : 11 * rs + rs // 2]
        assert f.stats.readahead_discarded == 0
        reads = [x for x, p in proxy.calls if p == NfsProc.READ]
        assert len(reads) == f.stats.reads <= 64 + 2  # each chunk once (10 and 11 again)
        assert await f.pread(64 * rs, spare) == b""  # end of file
        await f.seek(0)  # far back: the window starts afresh there
        for i in range(3):
            assert await f.read(rs) == data[i * rs : (i + 1) * rs]
        assert f._seq_end == 3 * rs and min(f._chunks) >= 3 * rs  # reading ahead of 0
        await f.close()

    run(through_proxy(ferry_srv.port, export_root, body, rsize=rs))


def test_write_behind_is_pipelined_bounded_and_durable(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    ws = 65536
    data = os.urandom(5 << 20)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        c.file_options = FileOptions(write_behind=8 * ws, commit_every=1 << 20)
        f = await c.open("out", "wb")
        for i in range(0, len(data), 10_000):  # small writes, coalesced into wsize WRITEs
            await f.write(data[i : i + 10_000])
            w = f._writes
            assert w.in_flight_bytes <= 8 * ws and w.unstable_bytes <= (1 << 20) + 8 * ws
        await f.close()
        assert 2 < proxy.max_in_flight <= 8 + 1
        assert f.stats.writes == len(data) // ws  # coalesced: one WRITE per wsize
        assert f.stats.commits >= 4  # commit_every bounded what was kept for resending

    run(through_proxy(ferry_srv.port, export_root, body, wsize=ws))
    got = (export_root / "out").read_bytes()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()


def test_whole_pieces_of_bytes_go_out_uncopied_and_buffers_are_copied(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    """bytes cannot change: their wsize pieces are sent (and kept until COMMIT) as views of
    them; a bytearray the caller reuses at once, and the tail of bytes, are copied."""
    ws = 65536
    first, tail = os.urandom(2 * ws + 100), os.urandom(ws - 100)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        c.file_options = FileOptions(write_behind=16 * ws, commit_every=16 * ws)
        f = await c.open("out", "wb")
        await f.write(first)  # two pieces uncopied, 100 bytes queued
        reused = bytearray(tail)
        await f.write(reused)  # completes the third piece: queued, so copied
        reused[:] = bytes(len(reused))  # the caller reuses its buffer
        await f.write(first)  # nothing queued: uncopied again
        await f._settle()
        kept = [u.data for u in f._writes.written]
        views = [d for d in kept if isinstance(d, memoryview) and d.obj is first]
        assert len(views) == 4 and all(len(v) == ws for v in views)
        await f.close()
        assert f.stats.writes == 6  # five whole pieces and the last 100 bytes

    run(through_proxy(ferry_srv.port, export_root, body, wsize=ws))
    assert (export_root / "out").read_bytes() == first + tail + first


def test_sync_open_write_is_durable_after_close(client: Client, export_root: Path) -> None:
    data = os.urandom(3 << 20)
    with client.open("big", "wb") as f:
        for i in range(0, len(data), 100_000):
            f.write(data[i : i + 100_000])
        engine = f.raw.engine  # type: ignore[attr-defined]
    assert engine.stats.commits >= 1 and engine.stats.writes >= 3
    assert (export_root / "big").read_bytes() == data


def test_commit_verifier_change_resends(ferry_srv: RunningServer, export_root: Path) -> None:
    ws = 65536
    data = os.urandom(8 * ws)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        f = await c.open("g", "wb")
        await f.write(data)
        proxy.flip_commit_verf = True  # the first COMMIT answers as a restarted server
        await f.close()
        writes = [x for x, p in proxy.calls if p == NfsProc.WRITE]
        commits = [x for x, p in proxy.calls if p == NfsProc.COMMIT]
        assert (len(writes), len(commits), f.stats.resent) == (16, 2, 8)

    run(through_proxy(ferry_srv.port, export_root, body, wsize=ws))
    assert (export_root / "g").read_bytes() == data


def test_write_behind_error_surfaces_on_close(client: Client, export_root: Path) -> None:
    f = client.open("doomed", "wb")
    f.write(b"x" * 100)
    (export_root / "doomed").unlink()  # the handle goes stale behind our back
    with pytest.raises(OSError) as info:
        f.close()
    assert info.value.errno == errno.ESTALE and info.value.filename == "doomed"


# -- the attribute cache ----------------------------------------------------------------------


def test_cache_sees_own_changes_at_once(ferry_srv: RunningServer, export_root: Path) -> None:
    with ferry.connect(url_for(ferry_srv.port, export_root), attr_cache=60) as c:
        c.write_file("f", b"abc")
        assert c.stat("f").st_size == 3
        with c.open("f", "ab") as f:
            f.write(b"defg")
        assert c.stat("f").st_size == 7
        c.truncate("f", 1)
        assert c.stat("f").st_size == 1
        c.rename("f", "g")
        assert not c.exists("f") and c.stat("g").st_size == 1
        before = c.nfs.engine.cache.hits
        c.stat("g")
        assert c.nfs.engine.cache.hits > before  # and unchanged things come from the cache


def test_cache_sees_other_changes_after_lifetime(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    (export_root / "f").write_bytes(b"abc")
    now = [0.0]
    with ferry.connect(url_for(ferry_srv.port, export_root), attr_cache=0.5) as c:
        c.nfs.engine.cache.clock = lambda: now[0]  # time moves when the test says so
        assert c.stat("f").st_size == 3
        (export_root / "f").write_bytes(b"abcdef")  # another client's change
        now[0] += 0.4
        assert c.stat("f").st_size == 3  # still cached
        now[0] += 0.2  # past the lifetime
        assert c.stat("f").st_size == 6
        (export_root / "f").write_bytes(b"abcdefgh")
        assert c.stat("f").st_size == 6  # cached again
        with c.open("f") as f:  # close-to-open: open revalidates
            assert f.read() == b"abcdefgh"
    with ferry.connect(url_for(ferry_srv.port, export_root), attr_cache=0) as c:
        assert c.stat("f").st_size == 8
        (export_root / "f").write_bytes(b"a")
        assert c.stat("f").st_size == 1  # no cache at all


# -- NFS-Ganesha ----------------------------------------------------------------------------------


@pytest.mark.interop
def test_file_api_against_ganesha(ganesha_server: GaneshaServer) -> None:
    exp = ganesha_server.export
    data = os.urandom((3 << 20) + 5)
    with ferry.connect(ganesha_server.url) as c:
        c.makedirs("a/b")
        with c.open("a/b/f", "wb") as f:
            for i in range(0, len(data), 65536):
                f.write(data[i : i + 65536])
        assert (exp / "a/b/f").read_bytes() == data
        with c.open("a/b/f") as f:
            f.seek(1 << 20)
            assert f.read(10) == data[1 << 20 : (1 << 20) + 10]
            f.seek(0)
            assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
        with c.open("a/t.txt", "w") as f:
            f.write("ünïcode\n")
        with c.open("a/t.txt", "a") as f:
            f.write("more\n")
        assert (exp / "a/t.txt").read_text() == "ünïcode\nmore\n"
        _raises(FileExistsError, errno.EEXIST, "a/t.txt", c.open, "a/t.txt", "x")
        _raises(FileNotFoundError, errno.ENOENT, "a/zz", c.open, "a/zz")
        _raises(OSError, errno.ENOTEMPTY, "a", c.rmdir, "a")
        c.symlink("t.txt", "a/ln")
        c.rename("a/t.txt", "a/u.txt")
        assert c.readlink("a/ln") == "t.txt" and not c.exists("a/ln")
        c.chmod("a/u.txt", 0o640)
        assert (exp / "a/u.txt").stat().st_mode & 0o777 == 0o640
        walked = sorted((p, sorted(d), sorted(f)) for p, d, f in c.walk())
        assert walked == [("", ["a"], []), ("a", ["b"], ["ln", "u.txt"]), ("a/b", [], ["f"])]


def test_256_mib_round_trip(served: tuple[Client, Path]) -> None:
    """The largest size the issue names, streamed (8 MiB pieces) both ways, by sha256."""
    client, export_root = served
    rng, piece = random.Random(256), 8 << 20
    sent = hashlib.sha256()
    with client.open("big.bin", "wb") as f:
        for _ in range(32):
            block = rng.randbytes(piece)
            sent.update(block)
            f.write(block)
    got, buf = hashlib.sha256(), bytearray(piece)
    with client.open("big.bin", "rb") as f:
        while n := f.readinto(buf):
            got.update(memoryview(buf)[:n])
    assert got.hexdigest() == sent.hexdigest()
    assert client.stat("big.bin").st_size == 256 << 20
    with open(export_root / "big.bin", "rb") as local:
        assert hashlib.file_digest(local, "sha256").hexdigest() == sent.hexdigest()

"""libnfs's URL arguments: every one libnfs accepts (4.0 to 6.x) is accepted, those with a
meaning for Ferry do what docs/urls.md says, through the API, fsspec and the CLI; an
argument libnfs does not know is an error, and so are TLS and Kerberos, which Ferry
cannot give (dropping them would silently lower the security asked for)."""

from __future__ import annotations

import dataclasses
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rawclient import RunningServer, serve_in_thread

import ferry
import fsspec
from ferry.client.url import IGNORED, LIBNFS_OPTIONS, is_query, parse_url
from ferry.nfsfs.filesystem import NfsFileSystem
from ferry.server.config import ExportConfig, ServerConfig

SRC = str(Path(__file__).resolve().parents[2] / "src")
EXAMPLES = {  # a value libnfs takes for each of its arguments ("" for the bare flag)
    "nfsport": "2049", "mountport": "2049", "uid": "1000", "gid": "1000", "version": "3",
    "timeo": "600", "retrans": "2", "autoreconnect": "-1", "readahead": "1048576",
    "rsize": "65536", "wsize": "65536", "dircache": "0", "auto-traverse-mounts": "0",
    "readonly": "", "debug": "2", "if": "eth1", "pagecache": "128",
    "readdir-buffer": "8192,65536", "tcp-syncnt": "3", "xprtsec": "none", "sec": None,
}  # fmt: skip


def test_the_list_is_libnfs_s() -> None:
    """The arguments of libnfs's nfs_set_context_args (lib/libnfs.c: 4.0 and 5.0 have
    readahead and pagecache, 6.x adds timeo, retrans, rsize, wsize, readonly, xprtsec and
    sec); ``sec`` takes only Kerberos values, which Ferry refuses."""
    assert set(LIBNFS_OPTIONS) == set(EXAMPLES)


@pytest.mark.parametrize("key", [k for k, v in EXAMPLES.items() if v is not None])
def test_every_libnfs_argument_is_accepted(key: str) -> None:
    value = EXAMPLES[key]
    query = key if value == "" else f"{key}={value}"
    u = parse_url(f"nfs://h/export/f?{query}")
    assert u.path == "/export/f"
    assert is_query(query)  # and the CLI reads it as a query, not as a glob


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("nfs_port=1", "unknown option 'nfs_port'"),
        ("readahead=lots", "readahead is not a number"),
        ("retrans=-1", "retrans must be at least 0"),
        ("timeo=0", "timeo must be at least 1"),
        ("dircache=2", "dircache must be 0 or 1"),
        ("version=4", "only 3 is supported"),
        ("sec=krb5p", "no Kerberos"),
        ("xprtsec=tls", "no TLS"),
    ],
)
def test_refused(query: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(f"nfs://h/e?{query}")


def test_round_trip() -> None:
    url = "nfs://h:5/e?version=3&timeo=20&readahead=0&dircache=0&auto-traverse-mounts=0&readonly=1"
    u = parse_url(url)
    assert (u.timeo, u.readahead, u.dircache, u.readonly, u.auto_traverse_mounts) == (
        20, 0, False, True, False,
    )  # fmt: skip
    assert str(u) == url and parse_url(str(u)) == u
    assert parse_url("nfs://h/e?readonly").readonly
    assert parse_url(f"nfs://h/e?{'&'.join(f'{k}=1' for k in IGNORED)}") == parse_url("nfs://h/e")


# -- what they do ------------------------------------------------------------------------


@pytest.fixture
def nested(tmp_path: Path) -> Iterator[RunningServer]:
    """A Ferry server exporting ``root`` (read-write) and ``root/ro`` (read-only)."""
    root = tmp_path / "export"
    (root / "ro").mkdir(parents=True)
    config = ServerConfig(
        exports=[ExportConfig(path=str(root), root_squash=False),
                 ExportConfig(path=str(root / "ro"), root_squash=False, read_only=True)],
        state_dir=tmp_path / "state",
    )  # fmt: skip
    with serve_in_thread(config) as srv:
        yield srv


def _url(srv: RunningServer, query: str = "") -> str:
    return f"nfs://127.0.0.1:{srv.port}{srv.root}" + (f"?{query}" if query else "")


def test_identity_and_sizes(ferry_srv: RunningServer, export_root: Path) -> None:
    (export_root / "open").mkdir(mode=0o777)
    (export_root / "open").chmod(0o777)
    with ferry.connect(_url(ferry_srv, "uid=1234&gid=5678&rsize=8192&wsize=16384")) as c:
        assert (c.engine.rsize, c.engine.wsize) == (8192, 16384)
        c.write_file("open/f", b"x" * 40000)
        assert c.read_file("open/f") == b"x" * 40000
    st = os.stat(export_root / "open/f")
    assert (st.st_uid, st.st_gid) == (1234, 5678)


def test_readahead_and_dircache(ferry_srv: RunningServer, export_root: Path) -> None:
    (export_root / "big").write_bytes(os.urandom(4 << 20))
    for query, ahead in (("", True), ("readahead=0", False)):
        with ferry.connect(_url(ferry_srv, query)) as c:
            f = c.engine
            assert f.nfs.cache.lifetime == 1.0
            chunks = _read_counting_readahead(c, "big")
            assert (chunks > 0) == ahead, (query, chunks)
    with ferry.connect(_url(ferry_srv, "dircache=0&readahead=65536")) as c:
        assert c.engine.nfs.cache.lifetime == 0
        assert c.engine.file_options.readahead == 65536


def _read_counting_readahead(c: ferry.Client, path: str) -> int:
    async def read() -> int:
        f = await c.engine.open(path, "rb")
        while await f.read(1 << 20):
            pass
        await f.close()
        return f.stats.readahead

    return c._loop.run(read())


def test_readonly_in_every_face(ferry_srv: RunningServer, export_root: Path) -> None:
    (export_root / "f").write_bytes(b"kept")
    url = _url(ferry_srv, "readonly")
    with ferry.connect(url) as c:
        assert c.read_file("f") == b"kept"
        with pytest.raises(OSError) as info:
            c.write_file("f", b"changed")
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError):
            c.remove("f")
    fs = NfsFileSystem(**NfsFileSystem._get_kwargs_from_urls(url), skip_instance_cache=True)
    with pytest.raises(OSError) as info:
        fs.pipe_file(f"{export_root}/g", b"new")
    assert info.value.errno == errno.EROFS
    res = subprocess.run(
        [sys.executable, "-m", "ferry", "rm", _url(ferry_srv, "readonly").replace(
            f"{export_root}?", f"{export_root}/f?")],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1 and "Read-only file system" in res.stderr, res.stderr
    assert (export_root / "f").read_bytes() == b"kept"


def test_auto_traverse_mounts(nested: RunningServer) -> None:
    """A path under a nested export goes to that export (read-only here), as libnfs's
    default; with auto-traverse-mounts=0, to the export already mounted above it."""
    root = nested.root
    assert root is not None
    (root / "top").write_bytes(b"")
    for query, lands in (("", False), ("auto-traverse-mounts=0", True)):
        fs = fsspec.filesystem(
            "nfs", **NfsFileSystem._get_kwargs_from_urls(_url(nested, query)),
            skip_instance_cache=True,
        )  # fmt: skip
        names = fs.ls(str(root), detail=False)  # mounts the outer export first
        assert names == [f"{root}/ro", f"{root}/top"]  # its listing, not only the inner one
        if lands:
            fs.pipe_file(f"{root}/ro/f", b"via the outer export")
            assert (root / "ro/f").read_bytes() == b"via the outer export"
        else:
            with pytest.raises(OSError) as info:
                fs.pipe_file(f"{root}/ro/f", b"x")
            assert info.value.errno == errno.EROFS
        fs.close()


def test_ignored_arguments_change_nothing(ferry_srv: RunningServer, export_root: Path) -> None:
    (export_root / "f").write_bytes(b"same")
    ignored = "debug=3&if=lo&pagecache=64&readdir-buffer=4096&tcp-syncnt=2&xprtsec=none"
    with ferry.connect(_url(ferry_srv, ignored)) as c:
        assert c.read_file("f") == b"same"
    url = f"nfs://127.0.0.1:{ferry_srv.port}{export_root}/f?{ignored}&auto-traverse-mounts=1"
    res = subprocess.run(
        [sys.executable, "-m", "ferry", "cat", url], capture_output=True,
        env={**os.environ, "PYTHONPATH": SRC}, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout == b"same", res.stderr


def test_policy_arguments_reach_the_transport(ferry_srv: RunningServer) -> None:
    with ferry.connect(_url(ferry_srv, "timeo=25&retrans=1&autoreconnect=0")) as c:
        opts = c.engine.rpc.options
        assert (opts.timeout, opts.max_tries, opts.retry_for) == (2.5, 2, None)
    with ferry.connect(_url(ferry_srv, "autoreconnect=-1"), timeout=3) as c:
        opts = c.engine.rpc.options
        assert (opts.timeout, opts.retry_for) == (3, float("inf"))
    with ferry.connect(_url(ferry_srv, "retrans=1"), retrans=5) as c:  # keywords win
        assert c.engine.rpc.options.max_tries == 6
    assert dataclasses.asdict(parse_url("nfs://h/e?timeo=25"))["timeo"] == 25

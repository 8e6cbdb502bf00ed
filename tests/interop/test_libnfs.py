"""Interop with libnfs-utils (nfs-ls, nfs-cp, nfs-cat): Ferry, and NFS-Ganesha as the reference.

Debian 12's libnfs-utils 4.0 ships only nfs-ls, nfs-cp and nfs-cat (no nfs-stat,
nfs-mkdir, nfs-rm), so "stat" is checked through the attributes nfs-ls prints
(READDIRPLUS), and writes go through nfs-cp (CREATE GUARDED, SETATTR, WRITE, COMMIT).
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

import pytest

from helpers import peers

pytestmark = pytest.mark.interop

MiB = 1 << 20
P = ParamSpec("P")
T = TypeVar("T")
SIZES = [
    pytest.param(0, id="0B"),
    pytest.param(1, id="1B"),
    pytest.param(MiB + 1, id="1MiB+1"),
    pytest.param(64 * MiB, id="64MiB", marks=pytest.mark.slow),
]

Server = peers.FerryServer | peers.GaneshaServer


@pytest.fixture(params=["ferry", "ganesha"])
def server(request: pytest.FixtureRequest, libnfs_tools: dict[str, str]) -> Server:
    srv: Server = request.getfixturevalue(f"{request.param}_server")
    return srv


def _populate(export: Path) -> dict[str, tuple[bool, int]]:
    """A small tree; returns {name: (is_dir, size)} for the export's top level."""
    (export / "a.txt").write_bytes(b"hello\n")
    (export / "empty").write_bytes(b"")
    (export / "with space.txt").write_bytes(b"x" * 1000)
    (export / "ünïcødé-名前.bin").write_bytes(os.urandom(4097))
    (export / "sub").mkdir()
    (export / "sub" / "inner.txt").write_bytes(b"inner\n")
    return {
        "a.txt": (False, 6),
        "empty": (False, 0),
        "with space.txt": (False, 1000),
        "ünïcødé-名前.bin": (False, 4097),
        "sub": (True, -1),
    }


def _check(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call a peers helper, turning PeerError into a test failure with the tool output."""
    try:
        return fn(*args, **kwargs)
    except peers.PeerError as e:
        pytest.fail(str(e), pytrace=False)


def test_list_directory(server: Server) -> None:
    expected = _populate(server.export)
    entries = _check(peers.nfs_ls, server.url)
    got = {e.name: e for e in entries}
    assert set(got) == set(expected), f"nfs-ls listed {sorted(got)}"
    for name, (is_dir, size) in expected.items():
        assert got[name].is_dir == is_dir, name
        if not is_dir:
            assert got[name].size == size, name


def test_list_subdirectory(server: Server) -> None:
    _populate(server.export)
    entries = _check(peers.nfs_ls, server.file_url("sub/"))
    assert [e.name for e in entries] == ["inner.txt"]
    assert entries[0].size == 6


def test_list_recursive_and_summary(server: Server) -> None:
    _populate(server.export)
    cp = _check(peers.run, [peers.need_tool("nfs-ls", "libnfs-utils"), "-R", "-s", server.url])
    text = cp.stdout.decode(errors="replace")
    names = {e.name for e in peers.parse_nfs_ls(text)}
    assert "inner.txt" in names or "sub/inner.txt" in names, text
    # -s adds an FSSTAT summary: "<free> of <total> bytes free."
    assert "bytes free" in text, text


def test_stat_file_attributes(server: Server) -> None:
    """What nfs-stat would show, taken from the attributes nfs-ls prints."""
    path = server.export / "attrs.bin"
    path.write_bytes(b"z" * 12345)
    os.chmod(path, 0o640)
    st = path.stat()
    entry = {e.name: e for e in _check(peers.nfs_ls, server.url)}["attrs.bin"]
    assert entry.size == 12345
    assert entry.mode == stat.filemode(st.st_mode), (entry.mode, stat.filemode(st.st_mode))
    assert (entry.uid, entry.gid) == (st.st_uid, st.st_gid)
    assert entry.nlink == st.st_nlink


@pytest.mark.parametrize("size", SIZES)
def test_read(server: Server, size: int, tmp_path: Path) -> None:
    name = f"read-{size}.bin"
    want = peers.write_random_file(server.export / name, size, seed=1)
    local = tmp_path / "local-copy.bin"
    _check(peers.nfs_cp, server.file_url(name), local)
    assert local.stat().st_size == size
    assert peers.sha256_file(local) == want, "nfs-cp read returned different bytes"
    digest, n = _check(peers.nfs_cat_sha256, server.file_url(name))
    assert n == size
    assert digest == want, "nfs-cat returned different bytes"


@pytest.mark.parametrize("size", SIZES)
def test_write(server: Server, size: int, tmp_path: Path) -> None:
    name = f"write-{size}.bin"
    local = tmp_path / "local-src.bin"
    want = peers.write_random_file(local, size, seed=2)
    _check(peers.nfs_cp, local, server.file_url(name))
    on_disk = server.export / name
    assert on_disk.exists(), "nfs-cp reported success but the file is not in the export"
    assert on_disk.stat().st_size == size
    assert peers.sha256_file(on_disk) == want, "bytes on the server's disk differ"
    # and back through the server
    digest, n = _check(peers.nfs_cat_sha256, server.file_url(name))
    assert (digest, n) == (want, size)


def test_create_existing_is_refused(server: Server, tmp_path: Path) -> None:
    """nfs-cp creates GUARDED: an existing name must give NFS3ERR_EXIST, not overwrite."""
    (server.export / "exists.txt").write_bytes(b"original\n")
    local = tmp_path / "src.txt"
    local.write_bytes(b"replacement\n")
    cp = peers.run(
        [peers.need_tool("nfs-cp", "libnfs-utils"), str(local), server.file_url("exists.txt")],
        check=False,
        timeout=60,
    )
    assert cp.returncode != 0
    assert b"NFS3ERR_EXIST" in cp.stderr, cp.stderr.decode(errors="replace")
    assert (server.export / "exists.txt").read_bytes() == b"original\n"


def test_missing_file_is_noent(server: Server, tmp_path: Path) -> None:
    cp = peers.run(
        [peers.need_tool("nfs-cat", "libnfs-utils"), server.file_url("no-such-file")],
        check=False,
        timeout=60,
    )
    assert cp.returncode != 0
    assert b"NFS3ERR_NOENT" in cp.stderr, cp.stderr.decode(errors="replace")


@pytest.mark.parametrize("path", ["/", "/wrong"])
def test_mount_of_a_path_that_names_no_export_is_refused(server: Server, path: str) -> None:
    """'/' is no export (it once meant Ferry's first one): libnfs gets an error, from
    Ferry MNT3ERR_NOENT, from NFS-Ganesha MNT3ERR_ACCES."""
    (server.export / "root-visible.txt").write_bytes(b"x")
    ls = peers.need_tool("nfs-ls", "libnfs-utils")
    cp = peers.run([ls, peers.url_at(server, path)], check=False, timeout=60)
    assert cp.returncode != 0 and b"root-visible.txt" not in cp.stdout
    expected = b"MNT3ERR_ACCES" if isinstance(server, peers.GaneshaServer) else b"MNT3ERR_NOENT"
    assert expected in cp.stderr, cp.stderr.decode(errors="replace")


def test_ferry_restart_same_port(
    ferry_server: peers.FerryServer, libnfs_tools: dict[str, str]
) -> None:
    (ferry_server.export / "before.txt").write_bytes(b"before\n")
    port = ferry_server.port
    ferry_server.restart()
    assert ferry_server.port == port
    names = {e.name for e in _check(peers.nfs_ls, ferry_server.url)}
    assert "before.txt" in names


def test_ferry_root_squash_by_default(tmp_path: Path, libnfs_tools: dict[str, str]) -> None:
    """Without --no-root-squash, client root is nobody: CREATE in a 0755 root dir is refused,
    and in a world-writable dir the new file belongs to nobody (65534)."""
    if os.getuid() != 0:
        pytest.fail("this test expects to run as root (libnfs then sends uid 0)", pytrace=False)
    server = peers.FerryServer(tmp_path / "export", tmp_path / "state", tmp_path / "logs")
    server.export.mkdir(parents=True)
    os.chmod(server.export, 0o755)
    (server.export / "open").mkdir(mode=0o777)
    os.chmod(server.export / "open", 0o777)
    local = tmp_path / "src.txt"
    local.write_bytes(b"squashed\n")
    nfs_cp = peers.need_tool("nfs-cp", "libnfs-utils")
    try:
        server.start()
    except peers.PeerError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        cp = peers.run([nfs_cp, str(local), server.file_url("denied.txt")], check=False)
        assert cp.returncode != 0
        assert b"NFS3ERR_ACCES" in cp.stderr, cp.stderr
        _check(peers.nfs_cp, local, server.file_url("open/allowed.txt"))
        st = (server.export / "open" / "allowed.txt").stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534)
    finally:
        server.stop()
    assert not server.tracebacks(), server.tracebacks()


def test_list_large_directory(server: Server) -> None:
    """Enough long names to need several READDIRPLUS round trips (cookie continuation)."""
    d = server.export / "many"
    d.mkdir()
    names = {f"{i:05d}-" + "n" * 120 for i in range(3000)}
    for n in names:
        (d / n).touch()
    entries = _check(peers.nfs_ls, server.file_url("many/"))
    got = [e.name for e in entries]
    assert len(got) == len(names), f"listed {len(got)} of {len(names)}"
    assert set(got) == names


def test_parallel_clients(server: Server, tmp_path: Path) -> None:
    """Several nfs-cp processes at once (reads and writes) all get the right bytes."""
    size = 8 * MiB
    want_read = peers.write_random_file(server.export / "shared.bin", size, seed=3)
    srcs = []
    for i in range(3):
        src = tmp_path / f"up-{i}.bin"
        srcs.append((src, peers.write_random_file(src, size, seed=10 + i)))
    nfs_cp = peers.need_tool("nfs-cp", "libnfs-utils")
    procs = []
    for i in range(3):
        dst = tmp_path / f"down-{i}.bin"
        argv = [nfs_cp, server.file_url("shared.bin"), str(dst)]
        procs.append((argv, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
        argv = [nfs_cp, str(srcs[i][0]), server.file_url(f"up-{i}.bin")]
        procs.append((argv, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    failures = []
    for argv, p in procs:
        try:
            _out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            _out, err = p.communicate()
            failures.append(f"timed out: {' '.join(argv)}")
            continue
        if p.returncode != 0:
            failures.append(
                f"exit {p.returncode}: {' '.join(argv)}\n{err.decode(errors='replace')}"
            )
    assert not failures, "\n".join(failures)
    for i in range(3):
        assert peers.sha256_file(tmp_path / f"down-{i}.bin") == want_read, f"read {i}"
        assert peers.sha256_file(server.export / f"up-{i}.bin") == srcs[i][1], f"write {i}"


def test_ferry_read_only(tmp_path: Path, libnfs_tools: dict[str, str]) -> None:
    """--read-only: reads and listings work, CREATE is refused with NFS3ERR_ROFS."""
    server = peers.FerryServer(
        tmp_path / "export",
        tmp_path / "state",
        tmp_path / "logs",
        extra_args=(*peers.FERRY_PEER_ARGS, "--read-only"),
    )
    server.export.mkdir(parents=True)
    want = peers.write_random_file(server.export / "ro.bin", 100_000, seed=5)
    local = tmp_path / "src.txt"
    local.write_bytes(b"nope\n")
    nfs_cp = peers.need_tool("nfs-cp", "libnfs-utils")
    try:
        server.start()
    except peers.PeerError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        assert "ro.bin" in {e.name for e in _check(peers.nfs_ls, server.url)}
        assert _check(peers.nfs_cat_sha256, server.file_url("ro.bin")) == (want, 100_000)
        cp = peers.run([nfs_cp, str(local), server.file_url("new.txt")], check=False)
        assert cp.returncode != 0
        assert b"NFS3ERR_ROFS" in cp.stderr, cp.stderr
        assert not (server.export / "new.txt").exists()
    finally:
        server.stop()
    assert not server.tracebacks(), server.tracebacks()

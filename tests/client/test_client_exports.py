"""Which export a URL names, through the Python API and the fsspec face, against a Ferry
server (``ferry serve``) and NFS-Ganesha: a path that names no export is a
FileNotFoundError listing the exports the server has (never another export used instead),
a path inside an export must exist, and ``/`` is the list of exports in both faces.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import ferry
from ferry.nfsfs.filesystem import NfsFileSystem
from helpers import peers
from helpers.ferry_fixture import running_ferry, running_ganesha

Peer = peers.FerryServer | peers.GaneshaServer


@pytest.fixture(params=["ferry", pytest.param("ganesha", marks=pytest.mark.interop)])
def peer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Peer]:
    """The server, exporting ``.export`` holding ``sub/`` and ``file``."""
    if request.param == "ferry":
        with running_ferry(tmp_path) as server:
            yield _fill(server)
    else:
        with running_ganesha(tmp_path / "ganesha-export", tmp_path / "ganesha") as g:
            yield _fill(g)


def _fill(server: Peer) -> Peer:
    (server.export / "sub").mkdir()
    (server.export / "file").write_bytes(b"data")
    return server


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_names_exports(exc: pytest.ExceptionInfo[FileNotFoundError], peer: Peer) -> None:
    assert f"the server exports: {peer.export}" in str(exc.value), str(exc.value)


@pytest.mark.parametrize("path", ["/wrong", "/", "/wrong/deeper"])
def test_connect_to_a_path_that_names_no_export_fails(peer: Peer, path: str) -> None:
    before = _files(peer.export)
    with pytest.raises(FileNotFoundError) as exc:
        ferry.connect(peers.url_at(peer, path))
    assert_names_exports(exc, peer)
    assert exc.value.filename == path
    assert _files(peer.export) == before


def test_connect_to_a_sibling_of_the_export_fails(peer: Peer) -> None:
    """``/x/exportX`` is not inside ``/x/export`` although the string starts with it."""
    with pytest.raises(FileNotFoundError) as exc:
        ferry.connect(peers.url_at(peer, f"{peer.export}X"))
    assert_names_exports(exc, peer)


@pytest.mark.parametrize("rel", ["missing", "sub/missing", "missing/deeper"])
def test_connect_to_a_missing_path_inside_the_export_fails(peer: Peer, rel: str) -> None:
    """The longest export prefix wins; the rest must exist, or writes would land in a
    directory the user never named."""
    with pytest.raises(FileNotFoundError) as exc:
        ferry.connect(peers.url_at(peer, f"{peer.export}/{rel}"))
    assert exc.value.filename == f"{peer.export}/{rel}"


def test_connect_inside_the_export_works(peer: Peer) -> None:
    with ferry.connect(peers.url_at(peer, f"{peer.export}/sub")) as c:
        c.write_file("new", b"x")
    assert (peer.export / "sub" / "new").read_bytes() == b"x"
    with ferry.connect(peers.url_at(peer, f"{peer.export}/file")) as c:
        assert c.read_file("file") == b"data"  # a file: its directory is mounted
    (peer.export / "sub" / "inner").write_bytes(b"inner data")
    with ferry.connect(peers.url_at(peer, f"{peer.export}/sub/inner")) as c:
        assert c.read_file("inner") == b"inner data"  # whichever prefix the server mounts


# -- fsspec ------------------------------------------------------------------------------------


@pytest.fixture
def fs(peer: Peer) -> Iterator[NfsFileSystem]:
    ports = {"nfsport": peer.port, "mountport": getattr(peer, "mnt_port", peer.port)}
    fs = NfsFileSystem(peer.host, **ports, skip_instance_cache=True)
    try:
        yield fs
    finally:
        fs.close()


def test_fsspec_root_lists_the_exports(fs: NfsFileSystem, peer: Peer) -> None:
    """``/`` is the server's namespace: the directories leading to its exports."""
    top = "/" + str(peer.export).strip("/").split("/")[0]
    assert fs.ls("/", detail=False) == [top]
    assert fs.info("/")["type"] == "directory"


@pytest.mark.parametrize("path", ["/wrong/f.bin", "/wrong"])
def test_fsspec_path_that_names_no_export_fails(fs: NfsFileSystem, peer: Peer, path: str) -> None:
    before = _files(peer.export)
    with pytest.raises(FileNotFoundError) as exc:
        fs.pipe_file(path, b"x")
    assert_names_exports(exc, peer)
    with pytest.raises(FileNotFoundError):
        fs.info(path)
    assert not fs.exists(path)
    assert _files(peer.export) == before


def test_fsspec_missing_path_inside_the_export(fs: NfsFileSystem, peer: Peer) -> None:
    with pytest.raises(FileNotFoundError):
        fs.info(f"{peer.export}/missing")
    assert fs.cat_file(f"{peer.export}/file") == b"data"

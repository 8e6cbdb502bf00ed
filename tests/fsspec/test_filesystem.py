"""NfsFileSystem beyond the abstract suite: URLs, info fields, ranges, file modes,
transactions, rename, recursive removal, fsspec.open and pandas over ``nfs://`` URLs."""

from __future__ import annotations

import os
import stat
import tomllib
import urllib.error
from pathlib import Path

import pandas as pd
import pytest

import fsspec
from ferry.nfsfs.filesystem import NfsFileSystem
from helpers import peers

ROOT = Path(__file__).resolve().parents[2]


def test_entry_point_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    spec = project["entry-points"]["fsspec.specs"]["nfs"]
    assert spec == "ferry.nfsfs.filesystem:NfsFileSystem"
    assert "fsspec" in " ".join(project["dependencies"])


def test_url_round_trip(nfs_fs: NfsFileSystem, nfs_server: peers.FerryServer) -> None:
    url = f"nfs://127.0.0.1:{nfs_server.port}/srv/a%20b/c?uid=5"
    assert NfsFileSystem._strip_protocol(url) == "/srv/a b/c"
    assert NfsFileSystem._get_kwargs_from_urls(url) == {
        "host": "127.0.0.1", "port": nfs_server.port, "uid": 5,
    }  # fmt: skip
    again = nfs_fs.unstrip_protocol("/srv/a b/c")
    assert NfsFileSystem._strip_protocol(again) == "/srv/a b/c"
    assert f"127.0.0.1:{nfs_server.port}" in again


def test_instances_are_cached_per_server_and_user(nfs_fs: NfsFileSystem) -> None:
    host, port = nfs_fs.url.host, nfs_fs.url.port
    assert fsspec.filesystem("nfs", host=host, port=port) is nfs_fs
    other = fsspec.filesystem("nfs", host=host, port=port, uid=1234)
    assert other is not nfs_fs


def test_info_and_ls_detail(nfs_fs: NfsFileSystem, nfs_dir: str, export_dir: Path) -> None:
    (export_dir / "f").write_bytes(b"12345")
    (export_dir / "d").mkdir()
    os.symlink("f", export_dir / "l")
    info = nfs_fs.info(f"{nfs_dir}/f")
    st = os.stat(export_dir / "f")
    assert info["type"] == "file" and info["size"] == 5
    assert info["mode"] == st.st_mode and info["ino"] == st.st_ino
    assert (info["uid"], info["gid"], info["nlink"]) == (st.st_uid, st.st_gid, 1)
    assert info["mtime"] == pytest.approx(st.st_mtime, abs=1e-3)
    listing = {e["name"].rsplit("/", 1)[1]: e for e in nfs_fs.ls(nfs_dir)}
    assert sorted(listing) == ["d", "f", "l"]
    assert listing["d"]["type"] == "directory" and stat.S_ISDIR(listing["d"]["mode"])
    assert listing["l"]["islink"] and listing["l"]["type"] == "file"
    assert nfs_fs.ls(nfs_dir, detail=False) == [f"{nfs_dir}/{n}" for n in ("d", "f", "l")]
    assert nfs_fs.modified(f"{nfs_dir}/f").timestamp() == pytest.approx(st.st_mtime, abs=1e-3)
    assert nfs_fs.created(f"{nfs_dir}/f").tzinfo is not None


def test_missing_paths_raise_file_not_found(nfs_fs: NfsFileSystem, nfs_dir: str) -> None:
    with pytest.raises(FileNotFoundError):
        nfs_fs.info(f"{nfs_dir}/nope")
    with pytest.raises(FileNotFoundError):
        nfs_fs.cat_file(f"{nfs_dir}/nope")
    assert not nfs_fs.exists(f"{nfs_dir}/nope")


def test_directories_above_the_export_are_listed(
    nfs_fs: NfsFileSystem, nfs_server: peers.FerryServer
) -> None:
    export = str(nfs_server.export)
    parent = export.rsplit("/", 1)[0]
    assert nfs_fs.isdir("/") and nfs_fs.isdir(parent)
    assert export in nfs_fs.ls(parent, detail=False)


def test_cat_file_ranges(nfs_fs: NfsFileSystem, nfs_dir: str) -> None:
    data = os.urandom(3 * (1 << 20) + 17)  # several rsize READs in flight
    nfs_fs.pipe_file(f"{nfs_dir}/big", data)
    p = f"{nfs_dir}/big"
    assert nfs_fs.cat_file(p) == data
    assert nfs_fs.cat_file(p, 5, 1 << 21) == data[5 : 1 << 21]
    assert nfs_fs.cat_file(p, -10) == data[-10:]
    assert nfs_fs.cat_file(p, 10, -10) == data[10:-10]
    assert nfs_fs.cat_file(p, len(data) + 5) == b""


def test_open_modes(nfs_fs: NfsFileSystem, nfs_dir: str, export_dir: Path) -> None:
    p = f"{nfs_dir}/sub/file"  # parents are made on write
    with nfs_fs.open(p, "wb", block_size=1 << 20) as f:
        for _ in range(5):
            f.write(b"x" * 700_000)
    assert (export_dir / "sub/file").read_bytes() == b"x" * 3_500_000
    with nfs_fs.open(p, "ab") as f:
        f.write(b"tail")
    with nfs_fs.open(p, "rb") as f:
        f.seek(-4, 2)
        assert f.read() == b"tail"
        f.seek(1000)
        assert f.read(3) == b"xxx"
    with nfs_fs.open(p, "wt") as t:
        t.write("text\n")
    assert nfs_fs.open(p, "rt").read() == "text\n"
    with pytest.raises(FileExistsError):
        nfs_fs.open(p, "xb")


def test_transaction_moves_in_place_on_commit(nfs_fs: NfsFileSystem, nfs_dir: str) -> None:
    p = f"{nfs_dir}/tx"
    with nfs_fs.transaction, nfs_fs.open(p, "wb") as f:
        f.write(b"later")
        assert not nfs_fs.exists(p)
    assert nfs_fs.cat_file(p) == b"later"
    assert nfs_fs.ls(nfs_dir, detail=False) == [p]


def test_mkdir_rm_mv_touch(nfs_fs: NfsFileSystem, nfs_dir: str, export_dir: Path) -> None:
    nfs_fs.mkdir(f"{nfs_dir}/a/b/c")
    with pytest.raises(FileExistsError):
        nfs_fs.mkdir(f"{nfs_dir}/a")
    with pytest.raises(FileNotFoundError):
        nfs_fs.mkdir(f"{nfs_dir}/x/y", create_parents=False)
    nfs_fs.touch(f"{nfs_dir}/a/b/c/f")
    nfs_fs.mv(f"{nfs_dir}/a", f"{nfs_dir}/moved")  # one RENAME of the whole tree
    assert (export_dir / "moved/b/c/f").exists() and not (export_dir / "a").exists()
    nfs_fs.mkdir(f"{nfs_dir}/into")
    nfs_fs.mv(f"{nfs_dir}/moved", f"{nfs_dir}/into")  # into an existing directory
    assert (export_dir / "into/moved/b/c/f").exists()
    with pytest.raises(IsADirectoryError):
        nfs_fs.rm(f"{nfs_dir}/into")
    nfs_fs.rm(f"{nfs_dir}/into", recursive=True)
    assert not (export_dir / "into").exists()
    nfs_fs.pipe_file(f"{nfs_dir}/keep", b"data")
    before = nfs_fs.info(f"{nfs_dir}/keep")["mtime"]
    nfs_fs.touch(f"{nfs_dir}/keep", truncate=False)
    assert nfs_fs.cat_file(f"{nfs_dir}/keep") == b"data"
    assert nfs_fs.info(f"{nfs_dir}/keep")["mtime"] >= before


def test_put_get_cp_large(nfs_fs: NfsFileSystem, nfs_dir: str, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    sha = peers.write_random_file(src, 40 * (1 << 20) + 3)  # more than two CHUNKs
    nfs_fs.put_file(str(src), f"{nfs_dir}/big")
    nfs_fs.cp_file(f"{nfs_dir}/big", f"{nfs_dir}/copy")
    nfs_fs.get_file(f"{nfs_dir}/copy", str(tmp_path / "back.bin"))
    assert peers.sha256_file(tmp_path / "back.bin") == sha


def test_fsspec_open_url(
    nfs_fs: NfsFileSystem, nfs_dir: str, nfs_server: peers.FerryServer
) -> None:
    url = f"nfs://127.0.0.1:{nfs_server.port}{nfs_dir}/hello.txt"
    with fsspec.open(url, "w") as f:
        f.write("hello, nfs\n")
    with fsspec.open(url, "r") as f:
        assert f.read() == "hello, nfs\n"
    fs, path = fsspec.core.url_to_fs(url)
    assert fs is nfs_fs and path == f"{nfs_dir}/hello.txt"


def test_pandas_csv(nfs_fs: NfsFileSystem, nfs_dir: str, nfs_server: peers.FerryServer) -> None:
    """pandas hands every scheme urllib knows to urllib ("nfs" is one of them,
    ``urllib.parse.uses_netloc``): ``import ferry`` teaches urllib nfs URLs, so
    ``read_csv("nfs://...")`` works; so do an fsspec-opened file and a chained URL."""
    nfs_fs.pipe_file(f"{nfs_dir}/t.csv", b"a,b\n1,2\n3,4\n")
    url = f"nfs://127.0.0.1:{nfs_server.port}{nfs_dir}/t.csv"
    assert pd.read_csv(url).to_dict("list") == {"a": [1, 3], "b": [2, 4]}
    with pytest.raises(urllib.error.URLError, match="No such file"):
        pd.read_csv(url + ".missing")
    with fsspec.open(url) as f:
        frame = pd.read_csv(f)
    assert frame.to_dict("list") == {"a": [1, 3], "b": [2, 4]}
    assert pd.read_csv(f"simplecache::{url}").equals(frame)
    with fsspec.open(url + ".out", "w") as out:
        frame.assign(c=frame.a + frame.b).to_csv(out, index=False)
    assert nfs_fs.cat_file(f"{nfs_dir}/t.csv.out") == b"a,b,c\n1,2,3\n3,4,7\n"


@pytest.mark.interop
def test_against_ganesha(ganesha_server: peers.GaneshaServer, tmp_path: Path) -> None:
    g = ganesha_server
    fs = NfsFileSystem(
        "127.0.0.1", nfsport=g.nfs_port, mountport=g.mnt_port, skip_instance_cache=True
    )
    try:
        base = f"{g.export}/fsspec"
        data = os.urandom((1 << 20) + 1)
        fs.pipe_file(f"{base}/a/f", data)
        assert fs.cat_file(f"{base}/a/f") == data
        assert fs.ls(f"{base}/a", detail=False) == [f"{base}/a/f"]
        fs.mv(f"{base}/a/f", f"{base}/g")
        fs.get_file(f"{base}/g", str(tmp_path / "g"))
        assert (tmp_path / "g").read_bytes() == data
        fs.rm(base, recursive=True)
        assert not fs.exists(base)
    finally:
        fs.close()

"""fsspec over several servers of one store: every host of ``nfs://h1:p1,h2:p2/...`` (and
the ``servers`` storage option) reaches the client, which fails over between them."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import fsspec
from ferry.nfsfs.filesystem import NfsFileSystem
from helpers import peers
from helpers.failover import kill, server_pair, url_of


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Path, list[peers.FerryServer]]]:
    """An export directory and servers A and B on it, with one handle key."""
    export = tmp_path / "export"
    export.mkdir()
    with server_pair(export, tmp_path) as servers:
        yield export, servers


def test_url_hosts_become_the_servers_option() -> None:
    url = "nfs://h1:2049,[::1]:2050,h3/srv/x?uid=5"
    assert NfsFileSystem._strip_protocol(url) == "/srv/x"
    assert NfsFileSystem._get_kwargs_from_urls(url) == {
        "host": "h1", "port": 2049, "uid": 5, "servers": ["[::1]:2050", "h3"],
    }  # fmt: skip
    fs = NfsFileSystem(**NfsFileSystem._get_kwargs_from_urls(url))
    assert fs.unstrip_protocol("/srv/y").startswith("nfs://h1:2049,[::1]:2050,h3/srv/y?")


def test_a_dead_first_host_is_skipped(
    nfs_fs: NfsFileSystem, nfs_dir: str, nfs_server: peers.FerryServer
) -> None:
    nfs_fs.pipe_file(f"{nfs_dir}/file", b"through the second host")
    live, dead = f"127.0.0.1:{nfs_server.port}", f"127.0.0.1:{peers.free_port()}"
    with fsspec.open(f"nfs://{dead},{live}{nfs_dir}/file", "rb") as f:
        assert f.read() == b"through the second host"
        f.fs.close()
    fs = fsspec.filesystem("nfs", host="127.0.0.1", port=int(dead.split(":")[1]), servers=live)
    try:
        assert fs.cat_file(f"{nfs_dir}/file") == b"through the second host"
    finally:
        fs.close()


def test_read_fails_over_when_a_server_is_stopped(
    pair: tuple[Path, list[peers.FerryServer]],
) -> None:
    export, servers = pair
    data = os.urandom(24 << 20)
    (export / "big").write_bytes(data)
    got = bytearray()
    with fsspec.open(f"{url_of(servers, export)}/big", "rb", block_size=1 << 20) as f:
        try:
            while chunk := f.read(1 << 20):
                got += chunk
                if len(got) == 8 << 20:
                    kill(servers[0])
            (client,) = f.fs._mounts.values()
            assert client.rpc.stats.failovers == 1 and client.rpc.port == servers[1].port
        finally:
            f.fs.close()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()

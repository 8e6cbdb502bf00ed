"""fsspec files are the client's: ``NfsFile`` and the transfers write through an
``AsyncFile`` (WRITEs in order, many in flight, COMMIT at close, written again after a
server restart) and read through its read-ahead, so the fsspec face has every guarantee
the client API has (issue 17; issue 19: one file engine for every face)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

from client_proxy import Proxy

from ferry.client import AsyncFile
from ferry.nfsfs.filesystem import NfsFileSystem
from helpers import fsx, peers


@contextlib.contextmanager
def proxy_to(port: int) -> Iterator[Proxy]:
    """The client tests' fault proxy in front of ``port``, on a loop of its own thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    proxy = Proxy(port)
    try:
        asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_nfs_file_writes_and_reads_through_the_client_engine(
    nfs_fs: NfsFileSystem, nfs_dir: str, nfs_server: peers.FerryServer
) -> None:
    seed = fsx.seed_from_env()
    print(f"seed {seed}")
    rng = random.Random(seed)
    data = rng.randbytes(6 << 20)
    p = f"{nfs_dir}/engine.bin"
    with nfs_fs.open(p, "wb", block_size=1 << 20) as f:
        assert isinstance(f._file, AsyncFile)
        pos = 0
        while pos < len(data):  # uneven pieces: coalesced into wsize WRITEs
            n = rng.choice((1, 100, 65_537, 1 << 20, 3 << 20))
            f.write(data[pos : pos + n])
            pos += n
        engine = f._file
    assert engine.closed and engine.stats.commits >= 1
    assert engine.stats.max_in_flight > 1  # pipelined
    assert Path(p).read_bytes() == data  # the export is a local directory
    with nfs_fs.open(p, "rb", block_size=1 << 20) as f:
        for _ in range(50):
            off, n = rng.randrange(len(data)), rng.randrange(1, 3 << 20)
            f.seek(off)
            assert f.read(n) == data[off : off + n], f"seed {seed}: read {n} at {off}"
        reader = f._file
        assert reader.stats.reads > 0
    assert reader.closed  # read-ahead let go at close
    assert nfs_fs.cat_file(p, 12345, 5 << 20) == data[12345 : 5 << 20]


def test_writes_lost_to_a_restart_are_sent_again(
    nfs_server: peers.FerryServer, nfs_dir: str, tmp_path: Path
) -> None:
    """The server "restarts" after two WRITEs (later replies, and the COMMIT's, carry a
    new verifier): what it may have lost is written again, through ``open`` and
    ``put_file`` alike."""
    data = os.urandom((4 << 20) + 5)
    local = tmp_path / "local.bin"
    local.write_bytes(data)
    with proxy_to(nfs_server.port) as proxy:
        fs = NfsFileSystem("127.0.0.1", proxy.port, skip_instance_cache=True)
        try:
            proxy.restart_after_writes = 2
            with fs.open(f"{nfs_dir}/restarted", "wb") as f:
                f.write(data)
            assert f._file.stats.resent == 2 and f._file.stats.commits == 2
            proxy.restart_after_writes, proxy._write_replies = 1, 0
            fs.put_file(str(local), f"{nfs_dir}/put")
            assert fs.cat_file(f"{nfs_dir}/restarted") == data
            assert fs.cat_file(f"{nfs_dir}/put") == data
        finally:
            fs.close()

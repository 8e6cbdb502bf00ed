"""One stuck call must not stall a server: calls that do not wait on the stuck part of the
store are answered while others wait.

The OSD is frozen (SIGSTOP) while client 1 reads a file server A has never read, so every
READ waits on the OSD. Client 2 then mounts A and makes calls that need no OSD (NULL,
MNT, GETATTR, LOOKUP): they must be answered at once, not after the stuck READs have
given up one batch of call threads after another (a 120 s MOUNT on a real cluster).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ceph_support import ConfiguredFerry, backend_at, ferry_servers

from ferry.backends.base import SetAttr
from ferry.client import AsyncNfsClient, RpcOptions
from ferry.nfs3.const import StableHow
from helpers.aio import run, sha
from helpers.ceph import CephCluster

pytestmark = [pytest.mark.ceph, pytest.mark.interop]

OP_TIMEOUT = 10.0
BIG = 32 << 20  # 32 READs of 1 MiB: more than the server's call threads
PATIENT = RpcOptions(timeout=60.0, max_tries=1, jukebox_tries=30, jukebox_max_delay=0.5)


@contextlib.contextmanager
def frozen(cluster: CephCluster, daemon: str) -> Iterator[None]:
    """``daemon`` stopped with SIGSTOP for the block, resumed after it."""
    pid = cluster.procs[daemon].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture
def server(ceph_cluster: CephCluster, cephfs_dir: str, tmp_path: Path) -> Iterator[ConfiguredFerry]:
    export = (cephfs_dir, "cephfs", {"conf": str(ceph_cluster.conf), "op_timeout": OP_TIMEOUT})
    with ferry_servers(export, tmp_path, 1) as (a,):
        yield a


def put(cluster: CephCluster, cephfs_dir: str, name: bytes, data: bytes) -> None:
    """Write a file through a libcephfs client of the test's own (not the server's)."""
    with backend_at(cluster, cephfs_dir) as b:
        fid = b.create(b.root(), name, SetAttr(mode=0o644), exclusive=True)
        b.write(fid, 0, memoryview(data), StableHow.FILE_SYNC)


async def other_client_calls(server: ConfiguredFerry) -> str | None:
    """MNT, NULL, LOOKUP + GETATTR (of a file A has cached, and of the file whose READs are
    stuck), READDIR: None if all were answered."""
    try:
        async with await AsyncNfsClient.connect(server.nfs_url, attr_cache=0) as c2:
            await c2.null()
            assert (await c2.stat("small")).st_size == 10
            assert (await c2.stat("big")).st_size == BIG  # the stuck file's attributes too
            assert set(await c2.listdir("")) >= {"big", "small"}
    except OSError as exc:
        return repr(exc)
    return None


def test_a_read_stuck_on_a_frozen_osd_does_not_stall_other_clients(
    server: ConfiguredFerry, ceph_cluster: CephCluster, cephfs_dir: str
) -> None:
    data = os.urandom(BIG)
    put(ceph_cluster, cephfs_dir, b"big", data)
    put(ceph_cluster, cephfs_dir, b"small", b"small file")

    async def body() -> None:
        async with await AsyncNfsClient.connect(server.nfs_url) as warm:
            assert await warm.read_file("small") == b"small file"  # A has it cached now
        async with await AsyncNfsClient.connect(server.nfs_url, options=PATIENT) as c1:
            with frozen(ceph_cluster, "osd.0"):
                reading = asyncio.create_task(c1.read_file("big"))
                await asyncio.sleep(1.0)  # every call thread of A now waits on the OSD
                assert not reading.done()
                t0 = time.monotonic()
                problem = await other_client_calls(server)
                took = time.monotonic() - t0
                assert problem is None and took < 3.0, (
                    f"other calls took {took:.1f} s behind the stuck READs: {problem or 'ok'}"
                )
            got = await reading  # the OSD runs again: the read completes
            assert sha(got) == sha(data)

    run(body(), 4 * OP_TIMEOUT + 60)

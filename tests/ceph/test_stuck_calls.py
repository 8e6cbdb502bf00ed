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
    with serving(ceph_cluster, cephfs_dir, tmp_path, OP_TIMEOUT) as a:
        yield a


@contextlib.contextmanager
def serving(
    cluster: CephCluster, cephfs_dir: str, base: Path, op_timeout: float, **options: object
) -> Iterator[ConfiguredFerry]:
    """One ``ferry serve`` of ``cephfs_dir`` with that ``op_timeout`` (and ``options``)."""
    export = (
        cephfs_dir, "cephfs", {"conf": str(cluster.conf), "op_timeout": op_timeout, **options}
    )  # fmt: skip
    with ferry_servers(export, base, 1) as (a,):
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
            await c2.nfs.null()
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


def test_mount_during_an_mds_outage_waits_instead_of_failing(
    ceph_cluster: CephCluster, cephfs_dir: str, tmp_path: Path
) -> None:
    """MOUNT v3 has no "try again later" status: a MNT the MDS cannot answer now gets no
    reply (the client sends it again), never MNT3ERR_SERVERFAULT; the export's root is
    answered from memory, and the client's next calls get JUKEBOX until the MDS is back.
    Both mounts, of the root and of a directory below it, complete once it is."""
    with backend_at(ceph_cluster, cephfs_dir) as b:  # a directory server A has not seen
        b.mkdir(b.root(), b"sub", SetAttr(mode=0o755))
    retrying = RpcOptions(timeout=3.0, max_tries=30, jukebox_tries=200, jukebox_max_delay=0.5)

    async def body(server: ConfiguredFerry) -> None:
        with frozen(ceph_cluster, "mds.a"):
            mounts = [
                asyncio.create_task(AsyncNfsClient.connect(server.nfs_url, options=retrying)),
                asyncio.create_task(
                    AsyncNfsClient.connect(server.nfs_url, export="/ceph/sub", options=retrying)
                ),
            ]
            await asyncio.wait(mounts, timeout=3.0 + 3)  # op_timeout, and a resend's worth
            failed = [t.exception() for t in mounts if t.done() and t.exception()]
            assert not failed, f"mounting failed while the MDS was frozen: {failed!r}"
        root, sub = [await t for t in mounts]  # the MDS runs again
        async with root, sub:
            assert set(await root.listdir("")) >= {"sub"}
            assert sub.export == "/ceph/sub" and await sub.listdir("") == []

    # Every call bounded (no inline GETATTR/LOOKUP, which would wait for the MDS instead
    # of answering JUKEBOX at the onset of an outage): what MOUNT does with JUKEBOX.
    with serving(ceph_cluster, cephfs_dir, tmp_path, 3.0, inline_metadata=False) as a:
        run(body(a), 90)


def test_a_stopped_osd_answers_jukebox_then_recovers(
    ceph_cluster: CephCluster, cephfs_dir: str, tmp_path: Path
) -> None:
    """A store that is down (the OSD killed, not frozen) is retryable too: READs answer
    JUKEBOX after op_timeout, never IO, and succeed once the OSD is back."""
    data = os.urandom(4 << 20)
    put(ceph_cluster, cephfs_dir, b"big", data)
    once = RpcOptions(timeout=30.0, max_tries=1, jukebox_tries=1)

    async def body(a: ConfiguredFerry) -> None:
        async with await AsyncNfsClient.connect(a.nfs_url, options=once) as c:
            ceph_cluster.kill("osd.0")
            try:
                t0 = time.monotonic()
                with pytest.raises(BlockingIOError):  # EAGAIN: NFS3ERR_JUKEBOX
                    await c.read_file("big")
                assert time.monotonic() - t0 < 3.0 + 5
            finally:
                await asyncio.to_thread(ceph_cluster.restart, "osd.0")
        async with await AsyncNfsClient.connect(a.nfs_url, options=PATIENT) as c:
            assert sha(await c.read_file("big")) == sha(data)

    with serving(ceph_cluster, cephfs_dir, tmp_path, 3.0) as a:
        run(body(a), 120)

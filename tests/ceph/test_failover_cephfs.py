"""Ferry's client failing over between two ``ferry serve`` processes on one CephFS.

The client gets both servers in its URL (``nfs://127.0.0.1:PA,127.0.0.1:PB/ceph``).
Reads: server A is SIGKILLed mid-read and the read finishes through B with A's CephFS
session still there; only afterwards is the session evicted (as a fencing script would),
so later tests are not held up. Writes: A is stopped gracefully (SIGTERM) mid-write and
the write finishes through B, with the writes A acknowledged as UNSTABLE sent again after
B's COMMIT verifier differs.

A killed server's CephFS session keeps its capabilities until the MDS declares it stale
(30 s in the test cluster, 60 s by default). The cephfs backend opens files read-only for
READ, so a dead reader holds only shared read capabilities on the file and B's READs are
not held up (when every open was read-write, they waited for the stale session). Changes
in directories A had cached (a mkdir in the export root, say) still wait for it: hence the
eviction afterwards, and docs/scale-out.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from ceph_support import EXPORT_NAME, ConfiguredFerry

from ferry.client import AsyncNfsClient, RpcOptions
from ferry.nfs3.const import StableHow
from helpers.aio import run as run_bounded
from helpers.aio import sha
from helpers.ceph import CephCluster
from helpers.failover import kill, read_killing, url_of

pytestmark = [pytest.mark.ceph, pytest.mark.interop]

SIZE = 64 << 20
CHUNK = 1 << 20
WRITE_IDLE = 3.0  # seconds after a COMMIT when a server holds no write capabilities
FAST = RpcOptions(timeout=5.0, max_tries=2, connect_timeout=2.0, reconnect_tries=3)


def run(coro):  # type: ignore[no-untyped-def]
    return run_bounded(coro, 240)


def session_of(cluster: CephCluster, pid: int) -> int:
    """The MDS session id of the libcephfs client in process ``pid``."""
    for s in json.loads(cluster.ceph("tell", "mds.a", "session", "ls", "--format", "json")):
        if str(s.get("client_metadata", {}).get("pid")) == str(pid):
            return int(s["id"])
    raise AssertionError(f"no MDS session for pid {pid}")


def test_read_survives_a_killed_server(
    pair: list[ConfiguredFerry], ceph_cluster: CephCluster
) -> None:
    a, b = pair
    assert a.proc is not None
    session = session_of(ceph_cluster, a.proc.pid)
    data = os.urandom(SIZE)

    async def body() -> None:
        async with await AsyncNfsClient.connect(b.nfs_url) as cb:  # written through B
            await cb.write_file("big", data)
        async with await AsyncNfsClient.connect(url_of(pair, EXPORT_NAME), options=FAST) as c:
            got = await read_killing(c, "big", a, after=16 << 20, chunk=CHUNK)
            assert len(got) == SIZE and sha(got) == sha(data)
            assert c.rpc.stats.failovers == 1 and c.rpc.port == b.port

    run(body())
    ceph_cluster.ceph("tell", "mds.a", "client", "evict", f"id={session}")


def test_write_survives_a_stopped_server(pair: list[ConfiguredFerry]) -> None:
    a, b = pair
    data = os.urandom(SIZE)

    async def body() -> None:
        async with await AsyncNfsClient.connect(url_of(pair, EXPORT_NAME), options=FAST) as c:
            async with await c.open("out", "wb") as f:
                for off in range(0, SIZE, CHUNK):
                    await f.write(data[off : off + CHUNK])
                    if off == 40 << 20:  # more than the 32-call window acknowledged by A
                        await asyncio.to_thread(a.stop)  # SIGTERM: A unmounts, then exits
            assert a.exit_codes == [0]
            assert c.rpc.stats.failovers == 1 and c.rpc.port == b.port
            assert f.stats.resent >= 1  # B's verifier differs: A's UNSTABLE writes again
        async with await AsyncNfsClient.connect(b.nfs_url) as cb:
            assert sha(await cb.read_file("out")) == sha(data)

    run(body())


def test_read_through_b_of_a_file_written_through_a_killed_server(
    pair: list[ConfiguredFerry], ceph_cluster: CephCluster
) -> None:
    """A wrote a file (COMMIT done, closed), then dies: B serves it at once. A must not
    keep the file open for writing after the COMMIT: a dead server's write capabilities
    hold every other server's use of the file until its MDS session goes stale."""
    a, b = pair
    assert a.proc is not None
    session = session_of(ceph_cluster, a.proc.pid)
    data = os.urandom(8 << 20)

    async def body() -> None:
        async with await AsyncNfsClient.connect(url_of(pair, EXPORT_NAME), options=FAST) as c:
            await c.write_file("w", data)  # through A: UNSTABLE WRITEs, COMMIT
            assert c.rpc.port == a.port
            await asyncio.sleep(WRITE_IDLE)
            kill(a)
            t0 = time.monotonic()
            got = await c.read_file("w")
            took = time.monotonic() - t0
            assert c.rpc.port == b.port and sha(got) == sha(data)
            assert took < 10, f"the read through B took {took:.1f} s"

    try:
        run(body())
    finally:
        ceph_cluster.ceph("tell", "mds.a", "client", "evict", f"id={session}")


def test_a_server_evicted_by_the_mds_says_so_and_serves_again(
    pair: list[ConfiguredFerry], ceph_cluster: CephCluster
) -> None:
    """Evicted (blocklisted) by the MDS, server A loses its CephFS session and the writes
    it held unflushed. It must notice, log it, get a new session, and change its write
    verifier (so clients send their uncommitted writes again); meanwhile the client with
    both servers carries on."""
    a, b = pair
    assert a.proc is not None
    session = session_of(ceph_cluster, a.proc.pid)
    data = os.urandom(1 << 20)

    async def body() -> None:
        async with await AsyncNfsClient.connect(url_of(pair, EXPORT_NAME), options=FAST) as c:
            fh = (await c.nfs.create(c.root, "w")).obj
            assert fh is not None
            before = (await c.nfs.write(fh, 0, data, StableHow.UNSTABLE)).verf  # A has it, buffered
            await asyncio.to_thread(
                ceph_cluster.ceph, "tell", "mds.a", "client", "evict", f"id={session}"
            )
            after = (await c.nfs.commit(fh)).verf
            assert after != before, "the verifier must change: the unflushed write is gone"
            await c.nfs.write(fh, 0, data, StableHow.FILE_SYNC)  # what the client does then
            assert sha(await c.read_file("w")) == sha(data)
        async with await AsyncNfsClient.connect(a.nfs_url, options=FAST) as ca:
            assert sha(await ca.read_file("w")) == sha(data)  # A serves again by itself

    run(body())
    assert "evicted" in a.stderr_text(), a.stderr_text()[-3000:]

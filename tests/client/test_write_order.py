"""Overlapping writes land in the order they were made (issue 17, "Corrupted data").

A server may run the calls it has in any order (NFS-Ganesha and Ferry's async server do),
so a WRITE must not be in flight beside an earlier WRITE of an overlapping range. Shown
deterministically through the fault proxy, which passes held WRITE calls to the server
newest first, and by the issue's own reproduction against a real ``ferry serve``. After a
COMMIT verifier mismatch, the ranges written again keep the order they were first
written in, and never put old bytes over a later write. Then fsx-style: random
overlapping writes, many in flight, with reads (which must see the writes before them)
and truncates between them, against a Ferry server of every model and NFS-Ganesha,
checked against a local reference.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_proxy import Proxy, through_proxy
from rawclient import RunningServer

import ferry
from ferry.client import AsyncNfsClient
from ferry.client.writebehind import Spans, _Written, resends
from ferry.nfs3.const import NfsProc
from helpers import fsx
from helpers.aio import run
from helpers.ferry_fixture import EVERY_SERVER, running_server
from helpers.peers import FerryServer, GaneshaServer

FSX_OPS = 2500  # per server, or until its time is up: the async model and NFS-Ganesha,
FSX_SECONDS = {"async": 5.0, "ganesha": 5.0}  # which run calls in any order, ran into the
FSX_SECONDS_IN_ORDER = 1.0  # bug within 100-1,600 ops; the models running one
# connection's calls one by one cannot reorder them (a short run checks the rest)
PIECE = 16 << 10  # rsize/wsize: longer writes go out as several WRITEs


def _expected() -> bytes:
    out = bytearray(41000)
    out[1000:41000] = b"A" * 40000
    out[5000:25000] = b"B" * 20000
    return bytes(out)


def test_overlapping_write_waits_for_the_earlier_one(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    """The issue's code, the server receiving concurrent WRITEs newest first."""

    async def body(c: AsyncNfsClient, proxy: Proxy) -> int:
        proxy.reorder_writes = True
        async with await c.open("f.bin", "wb") as f:
            await f.seek(1000)
            await f.write(b"A" * 40000)
            await f.seek(5000)
            await f.write(b"B" * 20000)
        return proxy.writes_reordered

    reordered = run(through_proxy(ferry_srv.port, export_root, body))
    assert (export_root / "f.bin").read_bytes() == _expected()
    assert reordered == 0  # never were two overlapping WRITEs in flight


def test_issue_reproduction_against_ferry_serve(ferry_server: FerryServer) -> None:
    """The issue's code through the blocking API against ``ferry serve`` (async model, the
    default), 200 times: B's bytes at 5000..25000 every time (3-20% wrong before)."""
    wrong = []
    with ferry.connect(ferry_server.url) as c:
        for i in range(200):
            with c.open("f.bin", "wb") as f:
                f.seek(1000)
                f.write(b"A" * 40000)
                f.seek(5000)
                f.write(b"B" * 20000)
            if (ferry_server.export / "f.bin").read_bytes() != _expected():
                wrong.append(i)
    assert wrong == [], f"{len(wrong)} of 200 tries wrong"


def test_resend_keeps_the_order_of_overlapping_writes(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    """Both writes lost by a "restart" (the COMMIT verifier differs): written again, the
    older first, even when the server would run concurrent WRITEs newest first."""
    ws = 65536
    a, b = os.urandom(ws), os.urandom(ws)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> tuple[int, int]:
        f = await c.open("g", "wb")
        await f.write(a)  # one WRITE at 0
        await f.seek(ws // 2)
        await f.write(b)  # one WRITE at ws / 2, over a's second half
        await f._settle()
        proxy.flip_commit_verf = True
        proxy.reorder_writes = True
        await f.close()
        return f.stats.resent, f.stats.commits

    resent, commits = run(through_proxy(ferry_srv.port, export_root, body, wsize=ws))
    assert (export_root / "g").read_bytes() == a[: ws // 2] + b
    assert (resent, commits) == (2, 2)  # a's first half and b, then a second COMMIT


def test_resend_never_puts_old_bytes_over_a_later_write(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    """The server "restarts" between two writes of the same range: the first is lost, the
    second is durable (its verifier is the COMMIT's). Writing the first again would put
    its old bytes on top: what a later write covers is not written again."""
    ws = 65536
    old, new = os.urandom(ws), os.urandom(ws // 2)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> tuple[int, int]:
        proxy.restart_after_writes = 1
        f = await c.open("h", "wb")
        await f.write(old)  # verifier V
        await f._settle()
        await f.seek(ws // 4)
        await f.write(new)  # verifier V' (the server restarted): covers a half of old
        await f.close()  # COMMIT answers V': old is written again where new is not
        return f.stats.resent, sum(p == NfsProc.WRITE for _, p in proxy.calls)

    resent, writes = run(through_proxy(ferry_srv.port, export_root, body, wsize=ws))
    expected = bytearray(old)
    expected[ws // 4 : ws // 4 + len(new)] = new
    assert (export_root / "h").read_bytes() == bytes(expected)
    assert (resent, writes) == (2, 4)  # old, new, then old's two pieces new leaves


def test_reads_and_truncates_wait_for_the_writes_before_them(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    """On one open file, with every WRITE held back by the proxy: a read returns the bytes
    written before it (not the server's older ones), and a truncate right after writes
    still queued or in flight is not undone by them."""
    ws = 65536
    a, b = os.urandom(3 * ws), os.urandom(ws)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> tuple[bytes, bytes]:
        proxy.reorder_writes = True
        async with await c.open("r", "w+b") as f:
            await f.pwrite(0, a)  # three WRITEs in flight
            await f.pwrite(2 * ws + ws // 2, b)  # overlaps the third
            buf = bytearray(4 * ws)
            got = bytes(buf[: await f.pread_into(0, memoryview(buf))])
            await f.pwrite(ws, b)  # in flight, then cut short by the truncate
            await f.truncate(ws + 100)
            await f.seek(0)
            after = await f.read()
        return got, after

    got, after = run(through_proxy(ferry_srv.port, export_root, body, wsize=ws))
    want = bytearray(a)
    want[2 * ws + ws // 2 :] = b
    assert got == want
    want[ws : 2 * ws] = b
    assert after == want[: ws + 100]
    assert (export_root / "r").read_bytes() == want[: ws + 100]


def test_resends_are_the_bytes_whose_last_write_was_lost() -> None:
    """``resends`` against a byte-by-byte model, for random histories: after a COMMIT
    answering verifier ``new``, exactly the bytes whose latest WRITE carried another
    verifier are written again, with that WRITE's data, in disjoint pieces."""
    seed = random.SystemRandom().randrange(1 << 32)
    rng = random.Random(seed)
    for _ in range(300):
        written, latest = [], {}
        for seq in rng.sample(range(1, 100), rng.randrange(1, 12)):  # any completion order
            off, n = rng.randrange(200), rng.randrange(1, 60)
            stable = rng.random() < 0.2
            verf = None if stable else rng.choice((b"old", b"new"))
            data = None if stable else bytes([seq]) * n
            written.append(_Written(seq, off, n, data, verf))
        for w in sorted(written, key=lambda w: w.seq):
            for pos in range(w.offset, w.offset + w.length):
                latest[pos] = w
        want = {p: w.seq for p, w in latest.items() if w.data is not None and w.verf != b"new"}
        got: dict[int, int] = {}
        for off, data in resends(written, b"new"):
            for i, byte in enumerate(data):
                assert off + i not in got, f"seed {seed}: pieces overlap"
                got[off + i] = byte
        assert got == want, f"seed {seed}: {written}"


def test_spans_merge_and_tell_gaps() -> None:
    s = Spans()
    for lo, hi in [(10, 20), (30, 40), (20, 25), (50, 60), (35, 52)]:
        s.add(lo, hi)
    assert s.gaps(0, 100) == [(0, 10), (25, 30), (60, 100)]
    assert s.gaps(12, 28) == [(25, 28)] and s.gaps(31, 59) == []


# -- fsx-style, against every server -----------------------------------------------------


@pytest.fixture(params=EVERY_SERVER)
def any_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, FerryServer | GaneshaServer]]:
    with running_server(request.param, tmp_path) as server:
        yield request.param, server


async def _fsx(url: str, name: str, seed: int, seconds: float) -> tuple[fsx.Reference, int, int]:
    """The operations of ``seed`` on ``name`` through one ``AsyncFile``; the reference,
    how many were done and the most WRITEs that were in flight at once. A read that
    differs from the reference fails at once."""
    ref, done, deadline = fsx.Reference(), 0, time.monotonic() + seconds
    async with await AsyncNfsClient.connect(url, rsize=PIECE, wsize=PIECE) as c:
        f = await c.open(name, "w+b")
        for done, op in enumerate(fsx.operations(seed, FSX_OPS), 1):
            if op.kind == "write":
                # bytes go out as they are; a bytearray is copied (its owner reuses it)
                data = op.data if done % 2 else bytearray(op.data)
                await f.pwrite(op.offset, data)
                if isinstance(data, bytearray):
                    data[:] = bytes(len(data))
                ref.write(op.offset, op.data)
            elif op.kind == "read":
                buf = bytearray(op.length)
                got = bytes(buf[: await f.pread_into(op.offset, memoryview(buf))])
                want = ref.read(op.offset, op.length)
                where = f"seed {seed}, op {done} (read {op.length} at {op.offset})"
                assert got == want, f"{where}: {fsx.first_difference(got, want)}"
            elif op.kind == "truncate":
                await f.truncate(op.length)
                ref.truncate(op.length)
            else:
                await f.flush()
            if time.monotonic() > deadline:
                break
        await f.close()
        assert await c.read_file(name) == ref.data, f"seed {seed}: read back differs"
    return ref, done, f.stats.max_in_flight


def test_random_overlapping_writes_reads_truncates(
    any_server: tuple[str, FerryServer | GaneshaServer],
) -> None:
    """fsx-style through the client API: every read sees the writes before it, and what
    the server has at the end is the reference (before the fix: the async model and
    NFS-Ganesha differed within a few hundred operations)."""
    kind, server = any_server
    seed = fsx.seed_from_env()
    print(f"fsx seed {seed} (FERRY_FSX_SEED={seed} to replay)")
    seconds = FSX_SECONDS.get(kind, FSX_SECONDS_IN_ORDER)
    ref, done, peak = run(_fsx(server.url, "fsx.bin", seed, seconds))
    got = (server.export / "fsx.bin").read_bytes()
    assert got == ref.data, f"seed {seed}, {done} ops: {fsx.first_difference(got, ref.data)}"
    print(f"{done} operations, at most {peak} WRITEs in flight")
    assert done >= 100 and peak >= 8  # enough, and concurrent enough, to mean something

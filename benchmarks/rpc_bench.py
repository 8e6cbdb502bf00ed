#!/usr/bin/env python3
"""Synchronous vs pipelined vs batched vs prefetched RPC over an emulated link (issue 6).

Reads (and writes) one file through ``ferry proxy`` with each strategy, one fresh proxy
and one fresh client per run, so every run meets the same link (same seed):

  sync-SIZE        one call in flight (window 1), SIZE bytes per READ: the lecture's
                   synchronous RPC; the SIZE sweep 4 KiB ... 1 MiB is batching
  pipe-SIZE-wW     W READs in flight (asynchronous RPC, replies matched by xid)
  prefetch-64k     an application reading 64 KiB at a time, synchronously, through
                   ``open()``: the client's sequential read-ahead keeps READs in flight
  write-...        the same for UNSTABLE WRITEs, then one COMMIT (inside the timing)
  udp-...          RPC over UDP, 32 KiB calls (the server's UDP limit): one lost datagram
                   is one lost call, so the two retransmission policies differ there:
                   ``sel`` resends only the lost call, ``gbn`` the lost call and every
                   call sent after it (go-back-N)

Loss rows run on the same link with ``--loss``: over TCP as cuts (reset, reconnect,
resend what was outstanding) or stalls (a chunk and what follows wait ``--stall``),
over UDP as dropped datagrams (docs/proxy.md). The bound of each row is
min(rate, window x call size / RTT); slow strategies read only what ``--budget`` seconds
at their bound allow (the table says how much). Every read is checked against the file's
bytes and every write read back; a failed check fails the run (exit status 1).

    ferry bench rpc --quick                       # seconds: own server, tiny file
    ferry bench rpc --calibrate --plots docs/img --out rpc.md --json runs.json   # docs
    ferry bench rpc nfs://127.0.0.1:12049/srv/x   # against a running Ferry (with --udp)

Tables: rpc_report.py; plots: rpc_plots.py; results: docs/rpc-experiment.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rpc_report import mbit, render, size_str  # noqa: E402

from ferry.cli.proxy import parse_duration, parse_fraction, parse_rate  # noqa: E402
from ferry.client import AsyncNfsClient  # noqa: E402
from ferry.client.aio import RpcOptions, RpcStats  # noqa: E402
from ferry.client.files import AsyncFile, FileOptions  # noqa: E402
from ferry.client.url import parse_url  # noqa: E402
from ferry.nfs3.const import StableHow  # noqa: E402
from ferry.testing import proxy  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
FILE = "rpc-bench.bin"
APP_BLOCK = 64 * KiB  # what the prefetch row's application asks for at a time
READAHEAD = 4 * MiB  # ... and how far the client reads ahead for it
MAX_EVENTS = 400_000  # per run, for the timeline plots


@dataclasses.dataclass(frozen=True)
class Strategy:
    name: str
    op: str  # read, write or prefetch
    size: int  # bytes per call (rsize / wsize)
    window: int  # calls in flight
    transport: str = "tcp"
    lossy: bool = False  # on the link with --loss
    tcp_loss: str = "cut"
    policy: str = "selective"

    @property
    def in_flight(self) -> int:
        return min(self.window, READAHEAD // self.size) if self.op == "prefetch" else self.window


def strategies() -> list[Strategy]:
    S = Strategy
    return [
        *(S(f"sync-{k}k", "read", k * KiB, 1) for k in (4, 16, 64, 256)),
        S("sync-1m", "read", MiB, 1),
        *(S(f"pipe-4k-w{w}", "read", 4 * KiB, w) for w in (4, 16, 64)),
        S("pipe-64k-w8", "read", 64 * KiB, 8),
        S("pipe-64k-w16", "read", 64 * KiB, 16),
        S("pipe-1m-w8", "read", MiB, 8),
        S("prefetch-64k", "prefetch", 64 * KiB, 64),
        S("write-sync-4k", "write", 4 * KiB, 1),
        S("write-sync-1m", "write", MiB, 1),
        S("write-pipe-1m-w8", "write", MiB, 8),
        S("udp-sync-32k", "read", 32 * KiB, 1, "udp"),
        S("udp-pipe-32k-w16", "read", 32 * KiB, 16, "udp"),
        S("pipe-1m-w8 cut", "read", MiB, 8, lossy=True),
        S("pipe-64k-w16 cut", "read", 64 * KiB, 16, lossy=True),
        S("pipe-64k-w8 cut", "read", 64 * KiB, 8, lossy=True),
        S("pipe-1m-w8 stall", "read", MiB, 8, lossy=True, tcp_loss="stall"),
        S("udp-sync-32k sel", "read", 32 * KiB, 1, "udp", lossy=True),
        S("udp-pipe-32k-w16 sel", "read", 32 * KiB, 16, "udp", lossy=True),
        S("udp-pipe-32k-w16 gbn", "read", 32 * KiB, 16, "udp", lossy=True, policy="go-back-n"),
    ]


@dataclasses.dataclass
class Run:
    strategy: Strategy
    bytes: int = 0
    planned: int = 0
    seconds: float = 0.0
    bound: float = 0.0  # bytes/s
    stats: RpcStats = dataclasses.field(default_factory=RpcStats)
    link: dict[str, int] = dataclasses.field(default_factory=dict)
    events: list[tuple[float, str, int, int]] = dataclasses.field(default_factory=list)
    error: str | None = None
    seeds: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (seed, rate)

    @property
    def rate(self) -> float:
        return self.bytes / self.seconds if self.seconds else 0.0


class Timeline:
    """The client's ``recorder``: (seconds since start, event, xid, bytes), bounded."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.events: list[tuple[float, str, int, int]] = []

    def __call__(self, kind: str, xid: int, nbytes: int) -> None:
        if len(self.events) < MAX_EVENTS:
            self.events.append((time.perf_counter() - self.t0, kind, xid, nbytes))


# -- the link: a proxy per run, in this process (a thread) or in a child process -------------


@contextlib.contextmanager
def link(
    mode: str, spec: proxy.LinkSpec, to: tuple[str, int]
) -> Iterator[tuple[int, dict[str, int]]]:
    """A proxy in front of ``to``; yields its port and a dict filled with its stats at exit."""
    stats: dict[str, int] = {}
    if mode == "thread":
        with proxy.running(spec, to, udp=True) as p:
            yield p.port, stats
            stats.update(dataclasses.asdict(p.stats))
        return
    argv = [sys.executable, __file__, "--proxy-child",
            json.dumps([dataclasses.asdict(spec), list(to)])]  # fmt: skip
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdin is not None
        port = json.loads(child.stdout.readline() or "{}").get("port")
        if not port:
            raise RuntimeError(f"proxy child did not start (exit {child.poll()})")
        yield port, stats
        out, _ = child.communicate("", timeout=20)  # stdin closed: it stops, prints stats
        stats.update(json.loads(out.strip().splitlines()[-1]))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def proxy_child(arg: str) -> int:
    """``--proxy-child``: run a proxy until stdin closes, then print its stats as JSON."""
    spec_d, to = json.loads(arg)
    loop = proxy.new_event_loop()

    async def main() -> None:
        p = proxy.Proxy(proxy.LinkSpec(**spec_d), (to[0], to[1]), udp=True)
        print(json.dumps({"port": await p.start()}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await p.close()
        print(json.dumps(dataclasses.asdict(p.stats)), flush=True)

    loop.run_until_complete(main())
    loop.close()
    return 0


# -- one run ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Bench:
    args: argparse.Namespace
    host: str
    port: int
    export: str
    data: bytes  # the file's contents

    def spec(self, s: Strategy | None, shaped: bool = True, seed: int = 0) -> proxy.LinkSpec:
        a = self.args
        if not shaped:
            return proxy.LinkSpec(seed=a.seed)
        loss = a.loss if s is not None and s.lossy else 0.0
        tcp_loss = s.tcp_loss if s is not None else "cut"
        return proxy.LinkSpec(a.delay, 0.0, a.rate, loss, 0.0, seed or a.seed, tcp_loss, a.stall)

    def bound(self, s: Strategy) -> float:
        """min(rate, window x call size / RTT), bytes per second."""
        rtt = 2 * self.args.delay
        window_bound = s.in_flight * s.size / rtt if rtt else float("inf")
        return min(self.args.rate / 8 or float("inf"), window_bound)

    def planned(self, s: Strategy) -> int:
        """The whole file, or what ``budget`` seconds at the bound allow (whole calls)."""
        want = max(2 * s.size * s.in_flight, int(self.bound(s) * self.args.budget))
        return min(len(self.data), -(-want // s.size) * s.size)

    def options(self, s: Strategy) -> RpcOptions:
        a = self.args
        if s.transport == "udp":  # the timers are the only loss recovery: keep them short
            return RpcOptions(s.window, a.timeout, 2.0, 8, transport="udp", retransmit=s.policy)
        return RpcOptions(s.window, retransmit=s.policy)  # TCP recovers losses itself

    async def connect(self, port: int, s: Strategy) -> AsyncNfsClient:
        url = f"nfs://{self.host}:{port}{self.export}"
        c = await AsyncNfsClient.connect(url, options=self.options(s), rsize=s.size, wsize=s.size)
        if (c.rsize if s.op != "write" else c.wsize) != s.size:
            await c.close()
            raise RuntimeError(f"server limits calls to {c.rsize} bytes, not {s.size}")
        return c

    async def run(self, s: Strategy, port: int) -> Run:
        """Connect, open, allocate, then time the transfer alone; check the data after."""
        run = Run(s, planned=self.planned(s), bound=self.bound(s))
        c = await self.connect(port, s)
        try:
            target = await self._prepare(c, s)
            got = bytearray(run.planned if s.op != "write" else 0)  # where reads land
            work = {"read": self._read, "prefetch": self._prefetch, "write": self._write}[s.op]
            before = dataclasses.replace(c.rpc.stats)
            c.rpc.recorder = timeline = Timeline()
            deadline = time.monotonic() + 3 * self.args.budget + 10  # a bound, not a target
            run.bytes = await work(c, s, target, got, run.planned, deadline)
            run.seconds = time.perf_counter() - timeline.t0
            c.rpc.recorder = None
            run.stats, run.events = diff(c.rpc.stats, before), timeline.events
            if isinstance(target, AsyncFile):
                await target.close()
        finally:
            await c.close()
        same = memoryview(got)[: run.bytes] == memoryview(self.data)[: run.bytes]
        check(s.op == "write" or same, f"{s.name}: data read differs from the file")
        return run

    async def _prepare(self, c: AsyncNfsClient, s: Strategy) -> Any:
        if s.op == "read":
            return (await c.resolve(FILE))[0]
        if s.op == "prefetch":
            c.file_options = FileOptions(readahead=READAHEAD)
            return await c.open(FILE, "rb")
        f = await c.open(written(s), "wb")  # CREATE; the run sends its own WRITEs
        await f.close()
        return f.fh

    async def _read(self, c: AsyncNfsClient, s: Strategy, fh: bytes, got: bytearray,
                    total: int, deadline: float) -> int:  # fmt: skip
        offsets = iter(range(0, total, s.size))
        done = 0

        async def worker() -> None:
            nonlocal done
            for off in offsets:  # shared: each offset is read once, by whoever is free
                if time.monotonic() > deadline:
                    return
                want = min(s.size, total - off)
                res = await c.nfs.read(fh, off, want)
                check(res.count == want, f"short READ at {off}: {res.count} bytes")
                got[off : off + want] = res.data
                done += want

        await asyncio.gather(*(worker() for _ in range(s.window)))
        return done

    async def _prefetch(self, c: AsyncNfsClient, s: Strategy, f: AsyncFile, got: bytearray,
                        total: int, deadline: float) -> int:  # fmt: skip
        view, done = memoryview(got), 0
        while done < total and time.monotonic() < deadline:
            n = await f.readinto(view[done : done + APP_BLOCK])  # sequential, one at a time
            if n == 0:
                break
            done += n
        return done

    async def _write(self, c: AsyncNfsClient, s: Strategy, fh: bytes, got: bytearray,
                     total: int, deadline: float) -> int:  # fmt: skip
        view = memoryview(self.data)[:total]
        offsets, verfs, done = iter(range(0, total, s.size)), set(), 0

        async def worker() -> None:
            nonlocal done
            for off in offsets:
                if time.monotonic() > deadline:
                    return
                piece = view[off : off + s.size]
                res = await c.nfs.write(fh, off, piece, StableHow.UNSTABLE)
                check(res.count == len(piece), f"short WRITE at {off}: {res.count} bytes")
                verfs.add(res.verf)
                done += len(piece)

        await asyncio.gather(*(worker() for _ in range(s.window)))
        commit = (await c.nfs.commit(fh)).verf  # inside the timing: the data is durable
        check(verfs <= {commit}, f"{s.name}: write verifier changed (server restarted?)")
        return done

    async def verify_write(self, direct: AsyncNfsClient, s: Strategy, size: int) -> None:
        data = await direct.read_file(written(s))
        check(data == self.data[:size], f"{s.name}: the file written differs")
        await direct.remove(written(s))


def written(s: Strategy) -> str:
    return f"rpc-bench-{s.name.replace(' ', '-')}.bin"


def diff(after: RpcStats, before: RpcStats) -> RpcStats:
    """The counters of the timed part (``max_in_flight`` is a high-water mark: kept)."""
    out = {f.name: getattr(after, f.name) - getattr(before, f.name)
           for f in dataclasses.fields(RpcStats)}  # fmt: skip
    return RpcStats(**{**out, "max_in_flight": after.max_in_flight})


def check(ok: bool, message: str) -> None:
    if not ok:
        raise RuntimeError(message)


# -- the whole benchmark ---------------------------------------------------------------------


async def measure_rtt(bench: Bench, port: int) -> float:
    """Median of 20 NULL calls through the shaped link (no data, so no serialisation)."""
    c = await bench.connect(port, Strategy("rtt", "read", 4 * KiB, 1))
    try:
        times = []
        for _ in range(20):
            t = time.perf_counter()
            await c.nfs.null()
            times.append(time.perf_counter() - t)
    finally:
        await c.close()
    return statistics.median(times)


def run_one(bench: Bench, s: Strategy, *, mode: str = "", shaped: bool = True,
            to: tuple[str, int] | None = None, seed: int = 0) -> Run:  # fmt: skip
    """One run through a fresh proxy (or straight ``to`` the server), errors caught."""
    try:
        if to is not None:  # no proxy at all (calibration)
            return asyncio.run(bench.run(s, to[1]))
        spec = bench.spec(s, shaped, seed)
        with link(mode or bench.args.proxy, spec, (bench.host, bench.port)) as (port, stats):
            run = asyncio.run(bench.run(s, port))
        run.link = stats
        if s.op == "write":
            asyncio.run(with_direct(bench, lambda c: bench.verify_write(c, s, run.bytes)))
        return run
    except Exception as exc:  # noqa: BLE001  # reported in the table; exit status 1
        return Run(s, error=f"{type(exc).__name__}: {exc}")


def run_seeds(bench: Bench, s: Strategy) -> Run:
    """A lossy strategy once per seed; the run with the median rate stands for them all."""
    seeds = range(bench.args.seed, bench.args.seed + (bench.args.seeds if s.lossy else 1))
    runs = [run_one(bench, s, seed=seed) for seed in seeds]
    failed = [r for r in runs if r.error]
    if failed:
        return failed[0]
    chosen = sorted(runs, key=lambda r: r.rate)[(len(runs) - 1) // 2]
    chosen.seeds = [(seed, r.rate) for seed, r in zip(seeds, runs, strict=True)]
    return chosen


async def with_direct(bench: Bench, body: Callable[[AsyncNfsClient], Awaitable[Any]]) -> Any:
    async with await AsyncNfsClient.connect(f"nfs://{bench.host}:{bench.port}{bench.export}") as c:
        return await body(c)


def make_file(bench: Bench) -> None:
    async def body(c: AsyncNfsClient) -> None:
        await c.write_file(FILE, bench.data)
        check((await c.stat(FILE)).st_size == len(bench.data), "test file has the wrong size")

    asyncio.run(with_direct(bench, body))


@contextlib.contextmanager
def server(args: argparse.Namespace) -> Iterator[tuple[str, int, str]]:
    """(host, port, export) of the URL given, or of a Ferry started here (TCP and UDP)."""
    if args.url:
        u = parse_url(args.url)
        if u.nfs_port is None or u.mount_port not in (None, u.nfs_port):
            raise SystemExit("ferry bench rpc: the URL needs one port for NFS and MOUNT")
        yield u.host, u.nfs_port, u.path
        return
    from helpers import peers

    with tempfile.TemporaryDirectory(prefix="ferry-rpcbench-", dir=args.workdir) as tmp:
        base = Path(tmp)
        srv = peers.FerryServer(base / "export", base / "state", base / "logs",
                                extra_args=("--no-root-squash", "--udp"))  # fmt: skip
        srv.start()
        try:
            yield srv.host, srv.port, str(srv.export)
        finally:
            srv.stop()


def calibrate(bench: Bench) -> list[list[str]]:
    """The proxy's own cost: the same reads of the whole file direct, through an unshaped
    proxy in a thread and in a child process; the best of two runs each."""
    big, small = Strategy("cal-1m", "read", MiB, 8), Strategy("cal-4k", "read", 4 * KiB, 64)
    saved, bench.args.budget = bench.args.budget, 1e9  # the whole file
    rows = []
    for where in ("direct", "thread", "process"):
        to = (bench.host, bench.port) if where == "direct" else None
        cells = [where]
        for s in (big, small):
            runs = [run_one(bench, s, mode=where, shaped=False, to=to) for _ in range(2)]
            best = max(runs, key=lambda r: r.rate)
            cells.append(best.error or f"{mbit(best.rate)} Mbit/s, "
                         f"{best.stats.calls / best.seconds:,.0f} calls/s")  # fmt: skip
        rows.append(cells)
    bench.args.budget = saved
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ferry bench rpc", description=__doc__.split("\n")[0])
    p.add_argument("url", nargs="?", help="a Ferry export (one port, --udp); default: start one")
    p.add_argument("--quick", action="store_true", help="seconds: 2 MiB, short link, 5%% loss")
    p.add_argument("--size-mib", type=float, default=None, help="file size (default 64)")
    p.add_argument("--delay", type=parse_duration, default=None, help="one way (default 10ms)")
    p.add_argument("--rate", type=parse_rate, default=100e6, help="each way (100mbit)")
    p.add_argument("--loss", type=parse_fraction, default=None, help="loss rows (default 1%%)")
    p.add_argument("--stall", type=parse_duration, default=0.2, help="TCP stall rows (200ms)")
    p.add_argument("--seed", type=int, default=1, help="the link's first seed (1)")
    p.add_argument("--seeds", type=int, help="lossy runs per strategy (seeds from --seed on)")
    p.add_argument("--timeout", type=parse_duration, default=None, help="UDP RPC timeout")
    p.add_argument("--budget", type=float, default=None, help="seconds per run at its bound")
    p.add_argument(
        "--proxy",
        choices=("thread", "process"),
        default="process",
        help="where each run's proxy runs (default: its own process)",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="run only these strategies")
    p.add_argument("--calibrate", action="store_true", help="also measure the proxy's cost")
    p.add_argument("--plots", type=Path, help="write timeline plots (PNG, SVG) here")
    p.add_argument("--out", type=Path, help="also write the markdown report here")
    p.add_argument("--json", type=Path, help="write every run's figures and events here")
    p.add_argument("--workdir", help="where the own server's export goes (default: tmp)")
    a = p.parse_args(argv)
    quick = a.quick
    a.size = int((a.size_mib or (2 if quick else 64)) * MiB)
    a.delay = a.delay if a.delay is not None else (0.002 if quick else 0.01)
    a.loss = a.loss if a.loss is not None else (0.05 if quick else 0.01)
    a.timeout = a.timeout or (0.1 if quick else 0.25)
    a.budget = a.budget or (0.3 if quick else 8.0)
    a.seeds = max(1, a.seeds or (1 if quick else 3))
    return a


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["--proxy-child"]:
        return proxy_child(sys.argv[2])
    args = parse_args(argv)
    chosen = [s for s in strategies() if not args.only or s.name in args.only]
    if args.only and len(chosen) != len(args.only):
        raise SystemExit(
            f"unknown strategy in {args.only}; known: {[s.name for s in strategies()]}"
        )
    plots = importlib.import_module("rpc_plots") if args.plots else None  # needs matplotlib
    with server(args) as (host, port, export):
        data = random.Random(args.seed).randbytes(args.size)
        bench = Bench(args, host, port, export, data)
        make_file(bench)
        cal = calibrate(bench) if args.calibrate else []
        with link(args.proxy, bench.spec(None), (host, port)) as (pport, _):
            rtt = asyncio.run(measure_rtt(bench, pport))
        runs = []
        for s in chosen:
            runs.append(run_seeds(bench, s))
            r = runs[-1]
            print(f"ferry: {s.name}: " + (r.error or f"{size_str(r.bytes)} in {r.seconds:.2f} s, "
                  f"{mbit(r.rate)} Mbit/s, {r.stats}"), file=sys.stderr, flush=True)  # fmt: skip
        asyncio.run(with_direct(bench, lambda c: c.remove(FILE)))
    text = render(runs, args, rtt, cal)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps([dump(r) for r in runs]))
    if plots is not None:
        for path in plots.plot_all(runs, args, args.plots):
            print(f"ferry: wrote {path}", file=sys.stderr)
    return 1 if any(r.error for r in runs) else 0


def dump(r: Run) -> dict[str, Any]:
    return {"strategy": dataclasses.asdict(r.strategy), "bytes": r.bytes, "seconds": r.seconds,
            "bound": r.bound, "stats": dataclasses.asdict(r.stats), "link": r.link,
            "error": r.error, "events": r.events}  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

"""The report of ``server_bench.py``: results per server, the markdown tables (ratios to
NFS-Ganesha), the issue's targets, machine details, and the duplicate request cache's
cost per call measured in this process (in-process vs shared across workers)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loadgen import Calls, Stream, percentile
from machine import machine_line

from ferry.nfs3.const import NFS_PROGRAM
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.drc import DuplicateRequestCache, ReplyCache, call_key
from ferry.rpc.message import NULL_AUTH, CallHeader
from ferry.server.app import NON_IDEMPOTENT
from ferry.server.shared_drc import SharedReplyCache

NCPU = os.cpu_count() or 1
REFERENCE = "ganesha"


@dataclass
class Idle:
    held: int  # connections the server kept open
    answered: int
    rss_kib: int  # growth over all of the server's processes
    pss_kib: int
    asked: int = 0  # connections opened (the serial model closes idle ones others wait behind)


@dataclass
class Row:
    """Everything measured on one server."""

    calls: dict[tuple[str, int], list[tuple[Calls, float]]] = field(default_factory=dict)
    """(procedure, clients) -> per repeat, the measurement and the server's CPU seconds."""
    streams: dict[str, list[Stream]] = field(default_factory=dict)
    idle: Idle | None = None

    def errors(self) -> int:
        return sum(c.errors for v in self.calls.values() for c, _ in v) + sum(
            s.errors for v in self.streams.values() for s in v
        )

    def ops(self, key: tuple[str, int]) -> float:
        return statistics.median(c.ops for c, _ in self.calls[key])

    def mb_s(self, op: str) -> float:
        return statistics.median(s.mb_s for s in self.streams[op])


@dataclass
class Context:
    args: argparse.Namespace
    ferry: dict[str, tuple[str, ...]]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    seconds: float
    drc: dict[str, float]


def render(rows: dict[str, Row], ctx: Context) -> str:
    args = ctx.args
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    keys = [(op, n) for op in ("GETATTR", "LOOKUP") for n in args.clients]
    out = [f"## Server models vs NFS-Ganesha, {now}", "", _method(ctx), ""]
    out += ["Small calls, ops/s (ratio to Ganesha; `k/N served`: clients that got answers):", ""]
    out += _table(rows, [f"{op} x{n}" for op, n in keys], [_ops_cell(k) for k in keys])
    out += ["", "Small calls, latency p50 / p99 (ms):", ""]
    out += _table(rows, [f"{op} x{n}" for op, n in keys], [_latency_cell(k) for k in keys])
    out += ["", "Small calls, CPU: server µs per call (all its processes) / load generator's "
            "share of the machine:", ""]  # fmt: skip
    out += _table(rows, [f"{op} x{n}" for op, n in keys], [_cpu_cell(k) for k in keys])
    out += ["", f"1 MiB calls, {args.window} in flight on one connection ({args.size_mib} MiB "
            f"file x {args.passes}); WRITEs then one COMMIT, inside the timing:", ""]  # fmt: skip
    heads = ["READ MB/s", "p50 / p99 ms", "server CPU µs/MiB"]
    heads += ["WRITE MB/s", "p50 / p99 ms", "server CPU µs/MiB"]
    cells = [_mb_cell("READ"), _stream_latency("READ"), _stream_cpu("READ")]
    cells += [_mb_cell("WRITE"), _stream_latency("WRITE"), _stream_cpu("WRITE")]
    out += _table(rows, heads, cells)
    out += ["", f"{args.idle} idle connections, each answered one NULL, then held open:", ""]
    out += _table(
        rows, ["RSS KiB/conn", "PSS KiB/conn"], [_idle_cell("rss_kib"), _idle_cell("pss_kib")]
    )
    out += ["", *_targets(rows, keys), "", _drc_line(ctx.drc), "", _machine(ctx), ""]
    return "\n".join(out)


def _method(ctx: Context) -> str:
    a = ctx.args
    models = ", ".join(f"`{n}` = `{' '.join(v)}`" for n, v in ctx.ferry.items())
    return (
        f"**Not the user path**: tmpfs exports, Ferry's own load generator (prebuilt calls, "
        f"one outstanding per connection), every server model; the user-path table (default "
        f"`ferry serve`, third-party clients, exports on disk) is the headline. "
        f"`ferry bench server` (`benchmarks/server_bench.py`): every server running side by "
        f"side on loopback, each exporting its own directory on tmpfs; each measurement "
        f"taken on one server at a time, {a.repeat} repeat(s) in alternating order (median "
        f"ops/s and MB/s; latencies pooled). Small calls: GETATTR of the root, LOOKUP of a "
        f"file; every client is a TCP connection with one call outstanding, {a.seconds:g} s "
        f"per point, clients spread over up to {a.procs} load-generator processes (epoll, "
        f"prebuilt calls). Memory: growth of RSS (and PSS) summed over the server's "
        f"processes, children included, divided by the connections held. Ferry targets: "
        f"{models}; NFS-Ganesha 4 (VFS FSAL, default thread settings). Ratios > 1: faster "
        f"than Ganesha (for memory: uses more)."
    )


Cell = Callable[[Row, Row | None], str]


def _table(rows: dict[str, Row], heads: Sequence[str], cells: Sequence[Cell]) -> list[str]:
    ref = rows.get(REFERENCE)
    lines = ["| server | " + " | ".join(heads) + " |", "|" + " --- |" * (len(heads) + 1)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(c(row, ref) for c in cells) + " |")
    return lines


def _ratio(mine: float, ref: float | None) -> str:
    return f" ({mine / ref:.2f})" if ref else ""


def _ops_cell(key: tuple[str, int]) -> Cell:
    def cell(row: Row, ref: Row | None) -> str:
        if key not in row.calls:
            return "n/a"
        ops = row.ops(key)
        text = f"{ops:,.0f}" + _ratio(ops, ref.ops(key) if ref and key in ref.calls else None)
        served = min(c.served for c, _ in row.calls[key])
        return text + (f" {served}/{key[1]} served" if served < key[1] else "")

    return cell


def _latency_cell(key: tuple[str, int]) -> Cell:
    def cell(row: Row, ref: Row | None) -> str:
        lat = [x for c, _ in row.calls.get(key, []) for x in c.latencies]
        return _p50_p99(lat)

    return cell


def _p50_p99(lat: list[float]) -> str:
    if not lat:
        return "n/a"
    return f"{percentile(lat, 0.5) * 1e3:.2f} / {percentile(lat, 0.99) * 1e3:.2f}"


def _cpu_cell(key: tuple[str, int]) -> Cell:
    def cell(row: Row, ref: Row | None) -> str:
        runs = row.calls.get(key, [])
        calls = sum(len(c.latencies) for c, _ in runs)
        if not calls:
            return "n/a"
        server = sum(cpu for _, cpu in runs) / calls * 1e6
        client = max(c.client_cpu / (c.seconds * NCPU) for c, _ in runs)
        return f"{server:.0f} µs / {client:.0%}"

    return cell


def _mb_cell(op: str) -> Cell:
    def cell(row: Row, ref: Row | None) -> str:
        if op not in row.streams:
            return "n/a"
        mb = row.mb_s(op)
        return f"{mb:,.0f}" + _ratio(mb, ref.mb_s(op) if ref and op in ref.streams else None)

    return cell


def _stream_latency(op: str) -> Cell:
    def cell(row: Row, ref: Row | None) -> str:
        return _p50_p99([x for s in row.streams.get(op, []) for x in s.latencies])

    return cell


def _stream_cpu(op: str) -> Cell:
    def cell(row: Row, ref: Row | None) -> str:
        runs = row.streams.get(op, [])
        mib = sum(s.nbytes for s in runs) / (1 << 20)
        cpu = sum(float(s.probes[1]) - float(s.probes[0]) for s in runs)  # type: ignore[arg-type]
        return f"{cpu / mib * 1e6:,.0f}" if mib else "n/a"

    return cell


def _idle_cell(attr: str) -> Cell:
    def cell(row: Row, ref: Row | None) -> str:
        if row.idle is None or not row.idle.held:
            return "n/a"
        kib = getattr(row.idle, attr) / row.idle.held
        ref_kib = getattr(ref.idle, attr) / ref.idle.held if ref and ref.idle else None
        meaningful = ref_kib is not None and ref_kib >= 1.0 and row is not ref
        text = f"{kib:,.1f}" + (_ratio(kib, ref_kib) if meaningful else "")
        if row.idle.answered < row.idle.held:
            text += f" ({row.idle.answered}/{row.idle.held} accepted)"
        if row.idle.held < row.idle.asked:
            text += f" ({row.idle.held}/{row.idle.asked} kept open)"
        return text

    return cell


def _targets(rows: dict[str, Row], keys: list[tuple[str, int]]) -> list[str]:
    """The issue's targets: best Ferry model within 2x of Ganesha on small calls, at least
    matching it on 1 MiB reads and writes."""
    ref = rows.get(REFERENCE)
    ferry = {n: r for n, r in rows.items() if n != REFERENCE}
    if ref is None or not ferry:
        return ["(targets: need Ganesha and a Ferry model in the same run)"]
    lines = ["| workload | best Ferry model | ratio to Ganesha | target | met |"]
    lines.append("| --- | --- | --- | --- | --- |")
    points = [(f"{op} x{n}", lambda r, k=(op, n): r.ops(k), 0.5) for op, n in keys]
    points += [(f"{op} 1 MiB", lambda r, o=op: r.mb_s(o), 1.0) for op in ("READ", "WRITE")]
    for label, value, goal in points:
        best = max(ferry, key=lambda n: value(ferry[n]))
        ratio = value(ferry[best]) / value(ref)
        met = "yes" if ratio >= goal else "no"
        lines.append(f"| {label} | {best} | {ratio:.2f} | >= {goal:g} | {met} |")
    return lines


# -- the duplicate request cache's cost -------------------------------------------------------


def drc_cost(lock: Path, calls: int = 20_000) -> dict[str, float]:
    """µs per new call (begin + finish) and per replayed one, in-process vs shared."""
    cred = encode_auth_sys(0, 0)
    keys = [
        call_key("tcp", ("127.0.0.1",), CallHeader(x, 2, NFS_PROGRAM, 3, 12, cred, NULL_AUTH),
                 bytes(160))
        for x in range(calls)
    ]  # fmt: skip
    shared = SharedReplyCache(NON_IDEMPOTENT, lock, max_entries=calls, max_bytes=calls * 1024)
    costs: dict[str, float] = {}
    caches: dict[str, ReplyCache] = {
        "local": DuplicateRequestCache(  # with the lock the server gives it
            NON_IDEMPOTENT, max_entries=calls, max_bytes=1 << 30, lock=threading.Lock()
        ),
        "shared": shared,
    }
    for name, cache in caches.items():
        t = time.perf_counter()
        for k in keys:
            cache.begin(k)
            cache.finish(k, bytes(150))
        costs[f"{name} new"] = (time.perf_counter() - t) / calls * 1e6
        t = time.perf_counter()
        for k in keys:
            cache.begin(k)
        costs[f"{name} hit"] = (time.perf_counter() - t) / calls * 1e6
    shared.close()
    return costs


def _drc_line(cost: dict[str, float]) -> str:
    return (
        f"Duplicate request cache, per non-idempotent call (measured in this run, one "
        f"process, no contention): in-process {cost['local new']:.1f} µs per new call "
        f"(lookup + store), {cost['local hit']:.1f} µs per replay; shared across workers "
        f"{cost['shared new']:.1f} µs and {cost['shared hit']:.1f} µs."
    )


# -- machine ------------------------------------------------------------------------------------


def _machine(ctx: Context) -> str:
    load = "/".join(f"{x:.2f}" for x in ctx.load_before)
    load_after = "/".join(f"{x:.2f}" for x in ctx.load_after)
    return (
        f"{machine_line('nfs-ganesha')[:-1]}. Load average (1/5/15 min) {load} before, "
        f"{load_after} after; the run took {ctx.seconds:.0f} s."
    )

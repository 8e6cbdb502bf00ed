"""The user-path section of ``ferry bench server``'s report: one headline table (every
workload, Ferry's default server and NFS-Ganesha, the ratio, the issue's target, server CPU
beside each figure), then the echo ceiling against Ferry's small calls."""

from __future__ import annotations

import datetime as dt
import statistics

from machine import machine_line
from userpath import MiB, Outcome, Row, Sample, Settings

FERRY, GANESHA = "ferry", "ganesha"
TARGET = 1.0  # issue 20: at NFS-Ganesha's speed or better, every workload


def value(row: Row, samples: list[Sample]) -> float:
    """The row's figure: the median run's rate (MB/s or ops/s) or seconds."""
    if row.kind == "time":
        return statistics.median(x.seconds for x in samples)
    scale = 1e6 if row.unit == "MB/s" else 1.0
    return statistics.median(x.done / x.seconds / scale for x in samples)


def value_of(row: Row | None, server: str) -> float | None:
    """The row's figure for ``server``, or None if it has no sample."""
    samples = row.samples.get(server) if row is not None else None
    return value(row, samples) if row is not None and samples else None


def ratio(row: Row) -> float | None:
    """Ferry against Ganesha, > 1 when Ferry is faster (a rate's quotient, a time's inverse)."""
    f, g = row.samples.get(FERRY), row.samples.get(GANESHA)
    if not f or not g:
        return None
    mine, ref = value(row, f), value(row, g)
    return mine / ref if row.kind == "rate" else ref / mine


def figure(row: Row, server: str) -> str:
    samples = row.samples.get(server)
    if not samples:
        return "failed"
    v = value(row, samples)
    if row.kind == "time":
        spread = f" ({min(x.seconds for x in samples):.2f}–{max(x.seconds for x in samples):.2f})"
        text = f"{v:.2f} s" + (spread if len(samples) > 1 else "")
    else:
        text = f"{v:,.0f} {row.unit}"
    pages = [x.calls for x in samples if x.calls and row.section == "dir"]
    return text + (f", {pages[0]} call{'s' * (pages[0] != 1)}" if pages else "")


def cpu(row: Row, server: str) -> str:
    """Server CPU: µs per MiB moved or per call, or ms (and µs per entry) per run."""
    samples = row.samples.get(server)
    if not samples:
        return "–"
    total = sum(x.server_cpu for x in samples)
    if row.cpu_unit == "µs/MiB":
        return f"{total / (sum(x.done for x in samples) / MiB) * 1e6:,.0f} µs/MiB"
    if row.cpu_unit == "µs/call":
        return f"{total / sum(x.done for x in samples) * 1e6:,.1f} µs/call"
    per_run = total / len(samples)
    per_name = per_run / samples[0].done * 1e6
    return f"{per_run * 1e3:,.0f} ms ({per_name:,.0f} µs/entry)"


def headline(rows: list[Row]) -> list[str]:
    out = [
        "| workload | Ferry (default `ferry serve`) | NFS-Ganesha | Ferry / Ganesha "
        f"| target ≥ {TARGET:g} | server CPU, Ferry | server CPU, Ganesha |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if row.section == "echo":
            continue
        r = ratio(row)
        ratio_text = f"**{r:.2f}**" if r is not None else "–"
        met = "–" if r is None else ("met" if r >= TARGET else "not met")
        out.append(
            f"| {row.label} | {figure(row, FERRY)} | {figure(row, GANESHA)} | {ratio_text} "
            f"| {met} | {cpu(row, FERRY)} | {cpu(row, GANESHA)} |"
        )
    return out


def ceiling(rows: list[Row]) -> list[str]:
    """Echo modes against Ferry's GETATTR on the same shape."""
    getattr_rows = {r.label.split(", ", 1)[1]: r for r in rows if r.label.startswith("GETATTR,")}
    out = [
        "| server | ops/s | server CPU | Ferry GETATTR / this |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        if row.section != "echo":
            continue
        shape = row.label.split(", ", 1)[1]
        mine, theirs = value_of(row, "echo"), value_of(getattr_rows.get(shape), FERRY)
        rel = f"{theirs / mine:.2f}" if mine and theirs else "–"
        fig = f"{mine:,.0f}" if mine else "failed"
        out.append(f"| {row.label} | {fig} | {cpu(row, 'echo')} | {rel} |")
    for shape, row in getattr_rows.items():
        ops = value_of(row, FERRY)
        if shape in ("1 conn x 1 in flight", "1 conn x 32 in flight") and ops is not None:
            out.append(f"| Ferry GETATTR, {shape} | {ops:,.0f} | {cpu(row, FERRY)} | 1.00 |")
    return out


def render(outcome: Outcome, s: Settings) -> str:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = "/".join(f"{x:.2f}" for x in outcome.load_before)
    load_after = "/".join(f"{x:.2f}" for x in outcome.load_after)
    ratios = [x for r in outcome.rows if r.section != "echo" and (x := ratio(r)) is not None]
    n_met = sum(x >= TARGET for x in ratios)
    out = [
        f"## User path: default `ferry serve` vs NFS-Ganesha, {now}",
        "",
        method(outcome, s),
        "",
        f"Ferry / Ganesha > 1: Ferry faster. {n_met} of {len(ratios)} workloads at or above "
        f"the target of issue 20 (≥ {TARGET:g}).",
        "",
        *headline(outcome.rows),
        "",
        "The echo ceiling (`benchmarks/echo_server.py`, same load generator, same run): a "
        "pure-Python server on uvloop that answers every call with a canned GETATTR-sized "
        "reply; `thread-hop` hands each call to a worker thread and back, as Ferry's async "
        "server does, and nothing else:",
        "",
        *ceiling(outcome.rows),
        "",
        f"{machine_line('nfs-ganesha', 'libnfs-utils')[:-1]}. Load average (1/5/15 min) "
        f"{load} before, {load_after} after; the section took {outcome.seconds:.0f} s.",
        "",
    ]
    return "\n".join(out)


def method(outcome: Outcome, s: Settings) -> str:
    return (
        f"`ferry bench server` (`benchmarks/userpath.py`): the default `ferry serve DIR` "
        f"(no model, worker or tuning flags; it ran as {outcome.ferry_shape}; "
        f"`--no-root-squash` only, as the Ganesha export has `Squash = No_Root_Squash` and "
        f"the clients run as root) and NFS-Ganesha (VFS FSAL), "
        f"side by side on loopback, each exporting its own directory under `{outcome.where}` "
        f"(file system: {outcome.fs}); {s.repeat} run(s) per workload, the "
        f"order alternating, median shown (range for times). Bulk: `nfs-cp` (libnfs-utils) "
        f"to and from tmpfs; libnfs `nfs_pwrite`/`nfs_pread` of 4 KiB one at a time "
        f"(`benchmarks/libnfs_io.py`, fuse-nfs's request pattern); writes end with COMMIT. "
        f"Small calls: prebuilt GETATTR (root), LOOKUP (a file), ACCESS (root) records, "
        f"every reply answered with a new call, {s.seconds:g} s per point "
        f"(`benchmarks/pipeline.py`, up to {s.procs} processes). READDIRPLUS: the whole "
        f"listing of a directory of {s.entries:,} empty files, one page at a time, dircount "
        f"= maxcount / 8 as Linux sends: each server's first listing of it (once), then "
        f"listings it has made before, timed after an untimed one on the same connection "
        f"(a Ferry worker keeps its own listings; Ganesha its directory cache); "
        f"`ls -l` of it and every `tar -x`/`find`/`du`/`rm -r` "
        f"phase on a fresh `ferry mount` of the server (FUSE, default options: the kernel's "
        f"caches start empty); the client-API phases with a new `ferry.connect()` each, "
        f"sync calls as a script makes them. Server CPU: user + system time of the server's "
        f"processes over the run, per MiB moved, per call, or per run (and per name)."
    )

"""The tables of ``rpc_bench.py``: results, where the time goes, the client's counters.

Markdown, one row per run: throughput against the bound min(rate, window x call size /
RTT) and against a model that also counts each call's own transmission time, and the
``RpcStats`` of each run as the client counted them.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from ferry.client.aio import RpcStats

KiB, MiB = 1 << 10, 1 << 20
Run = Any  # rpc_bench.Run (imported the other way round)


def mbit(bps: float) -> str:
    return f"{bps * 8 / 1e6:,.2f}" if bps < 1.25e6 else f"{bps * 8 / 1e6:,.1f}"


def size_str(n: int) -> str:
    return f"{n / MiB:,.1f} MiB" if n >= MiB else f"{n / KiB:,.0f} KiB"


COLUMNS = (
    "strategy", "call", "window", "data", "time", "Mbit/s", "bound", "% of bound", "calls",
    "on the wire", "retransmitted", "resent / timeouts / reconnects", "link",
)  # fmt: skip


def table(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def row(r: Run, file_size: int) -> list[str]:
    s, st = r.strategy, r.stats
    head = [s.name, f"{size_str(s.size)} {s.transport.upper()}", str(s.in_flight)]
    if r.error:
        return head + [f"failed: {r.error}"] + [""] * (len(COLUMNS) - 4)
    wire = st.bytes_sent + st.bytes_received
    events = [f"{r.link[k]} {k}" for k in ("dropped", "cuts", "stalls") if r.link.get(k)]
    rate = mbit(r.rate)
    if len(r.seeds) > 1:
        rates = sorted(x for _, x in r.seeds)
        rate += f" (seeds: {mbit(rates[0])}–{mbit(rates[-1])})"
    return head + [
        size_str(r.bytes) + ("" if r.bytes >= file_size else " (prefix)"),
        f"{r.seconds:.2f} s",
        rate,
        mbit(r.bound),
        f"{100 * r.rate / r.bound:.0f}%",
        f"{st.calls:,}",
        f"{size_str(wire)} (+{100 * (wire / r.bytes - 1):.1f}%)",
        f"{st.retransmitted_bytes:,} B",
        f"{st.retransmissions + st.resent_on_reconnect} / {st.timeouts} / {st.reconnects}",
        ", ".join(events) or "–",
    ]


def latency(r: Run) -> float:
    """Median time from a call's first send to its reply (seconds), from the timeline."""
    sent: dict[int, float] = {}
    waits = []
    for t, kind, xid, _ in r.events:
        if kind == "call":
            sent[xid] = t
        elif kind == "reply" and xid in sent:
            waits.append(t - sent.pop(xid))
    return statistics.median(waits) if waits else 0.0


def model(r: Run, args: argparse.Namespace, rtt: float) -> float:
    """min(rate, in flight / (measured RTT + one call's transmission)): the bound once each
    call's own serialisation counts, bytes/s."""
    s, rate = r.strategy, args.rate / 8 or float("inf")
    return min(rate, s.in_flight * s.size / (rtt + s.size / rate))


def time_row(r: Run, args: argparse.Namespace, rtt: float) -> list[str]:
    s, m = r.strategy, model(r, args, rtt)
    alone = 1e3 * (rtt + s.size / (args.rate / 8 or float("inf")))
    head = [s.name, size_str(s.in_flight * s.size), mbit(m)]
    if r.error:
        return head + ["failed", "", "", f"{alone:.1f} ms"]
    measured = f"{1e3 * latency(r):.1f} ms"
    return head + [mbit(r.rate), f"{100 * r.rate / m:.0f}%", measured, f"{alone:.1f} ms"]


def render(runs: list[Run], args: argparse.Namespace, rtt: float, cal: list[Any]) -> str:
    a = args
    out = [
        f"Link: delay {a.delay * 1e3:g} ms each way (RTT {2 * a.delay * 1e3:g} ms; measured "
        f"{rtt * 1e3:.1f} ms with NULL calls), {a.rate / 1e6:g} Mbit/s each way; loss rows "
        f"{a.loss:.1%} (seeds {a.seed}–{a.seed + a.seeds - 1}, the median run shown; TCP "
        f"stall {a.stall * 1e3:g} ms; UDP RPC timeout {a.timeout * 1e3:g} ms). File "
        f"{size_str(a.size)}, budget {a.budget:g} s per run, proxy in a {a.proxy}.",
        "",
    ]
    out += table(COLUMNS, [row(r, a.size) for r in runs])
    out += [
        "",
        "Where the time goes (model: the bound with the measured RTT and each call's "
        "own transmission time; call time: median from send to reply):",
        "",
    ]
    out += table(["strategy", "in flight", "model Mbit/s", "measured", "% of model",
                  "call time", "RTT + call / rate"],
                 [time_row(r, a, rtt) for r in runs])  # fmt: skip
    names = [f.name for f in dataclasses.fields(RpcStats)]
    out += ["", "Client counters (`RpcStats` of the timed part of each run):", ""]
    out += table(["strategy", *names],
                 [[r.strategy.name, *(f"{v:,}" for v in dataclasses.astuple(r.stats))]
                  for r in runs])  # fmt: skip
    if cal:
        out += ["", "Proxy overhead (no delay, no rate limit; same client and server):", ""]
        out += table(["path", "1 MiB READs, window 8", "4 KiB READs, window 64"], cal)
    return "\n".join(out)

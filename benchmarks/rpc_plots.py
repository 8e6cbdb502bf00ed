"""Timeline plots for ``rpc_bench.py``: calls and replies over time, as in the lecture.

Each run's client ``recorder`` gave (time, event, xid, bytes) for every call, resend,
timeout and reply. Drawn here (matplotlib, PNG and SVG):

  rpc-timeline   one bar per call, from its send to its reply: synchronous calls make a
                 staircase with a round trip per step, pipelined ones overlapping bars
  rpc-progress   reply bytes received over time for every strategy, against the link rate
  rpc-loss       the same bars under loss for UDP with selective resends and go-back-N
                 (resends red, timeouts black), and their progress beside the lossless run
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

TIMELINE = ("sync-4k", "pipe-4k-w16", "pipe-1m-w8")
LOSS = ("udp-pipe-32k-w16 sel", "udp-pipe-32k-w16 gbn")
MAX_POINTS = 2000  # per progress line (SVG size)


def by_name(runs: Sequence[Any]) -> dict[str, Any]:
    return {r.strategy.name: r for r in runs if not r.error and r.events}


def calls(events: list[tuple[float, str, int, int]], t0: float, t1: float) -> list[dict[str, Any]]:
    """Per call first sent in [t0, t1): send and reply times, resends, timeouts."""
    out: dict[int, dict[str, Any]] = {}
    for t, kind, xid, _ in events:
        if kind == "call" and t0 <= t < t1:
            out[xid] = {"sent": t, "reply": None, "resends": [], "timeouts": []}
        elif xid in out:
            if kind == "reply":
                out[xid]["reply"] = t
            else:
                out[xid]["resends" if kind == "resend" else "timeouts"].append(t)
    return sorted(out.values(), key=lambda c: c["sent"])


def gantt(ax: Any, run: Any, t0: float, t1: float) -> None:
    spans = calls(run.events, t0, t1)
    bars, sends, replies, resends, timeouts = [], [], [], [], []
    for i, c in enumerate(spans):
        end = min(c["reply"] if c["reply"] is not None else t1, t1)
        bars.append([(1e3 * c["sent"], i), (1e3 * end, i)])
        sends.append((1e3 * c["sent"], i))
        if c["reply"] is not None and c["reply"] <= t1:
            replies.append((1e3 * c["reply"], i))
        resends += [(1e3 * t, i) for t in c["resends"]]
        timeouts += [(1e3 * t, i) for t in c["timeouts"]]
    ax.add_collection(LineCollection(bars, colors="tab:blue", linewidths=1.2))
    for points, style in ((sends, {"marker": ">", "s": 6, "color": "tab:blue"}),
                          (replies, {"marker": "|", "s": 30, "color": "tab:green"}),
                          (timeouts, {"marker": "x", "s": 40, "color": "black"}),
                          (resends, {"marker": "o", "s": 9, "color": "tab:red"})):  # fmt: skip
        if points:
            ax.scatter(*zip(*points, strict=True), zorder=3, **style)
    ax.set_ylim(len(spans), -1)
    ax.set_xlim(1e3 * t0, 1e3 * t1)
    ax.set_ylabel("call (in send order)")
    rate, pct = run.rate * 8 / 1e6, 100 * run.rate / run.bound
    ax.set_title(f"{run.strategy.name}: {len(spans)} calls sent, whole run {rate:.1f} Mbit/s "
                 f"({pct:.0f}% of bound)", fontsize=9)  # fmt: skip


def progress(ax: Any, run: Any, label: str, color: Any = None) -> None:
    xs, ys, total = [0.0], [0.0], 0
    for t, kind, _, n in run.events:
        if kind == "reply":
            total += n
            xs.append(t)
            ys.append(total / 2**20)
    step = max(1, len(xs) // MAX_POINTS)
    label += f" ({run.rate * 8 / 1e6:.1f} Mbit/s)"
    ax.plot(xs[::step] + xs[-1:], ys[::step] + ys[-1:], label=label, lw=1.2, color=color)


def save(fig: Any, out: Path, name: str) -> list[Path]:
    paths = [out / f"{name}.png", out / f"{name}.svg"]
    fig.tight_layout()
    for p in paths:
        fig.savefig(p, dpi=110)
    plt.close(fig)
    return paths


def plot_all(runs: Sequence[Any], args: argparse.Namespace, out: Path) -> list[Path]:
    """Draw what the runs allow; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    runs_by = by_name(runs)
    rtt, rate = 2 * args.delay, args.rate / 8 / 2**20  # MiB/s
    written: list[Path] = []
    shown = [runs_by[n] for n in TIMELINE if n in runs_by]
    if shown:
        fig, axes = plt.subplots(len(shown), 1, figsize=(9, 2.4 * len(shown)), squeeze=False)
        for ax, run in zip(axes[:, 0], shown, strict=True):
            gantt(ax, run, 0.0, 50 * rtt)
        axes[-1, 0].set_xlabel(f"time (ms); RTT {rtt * 1e3:g} ms, {args.rate / 1e6:g} Mbit/s")
        written += save(fig, out, "rpc-timeline")
    tcp = [r for r in runs_by.values() if r.strategy.op != "write" and not r.strategy.lossy
           and r.strategy.transport == "tcp"]  # fmt: skip
    if tcp:
        fig, ax = plt.subplots(figsize=(9, 5))
        colors = plt.get_cmap("tab20").colors
        for i, r in enumerate(tcp):
            progress(ax, r, r.strategy.name, colors[(2 * i) % 20 + (2 * i) // 20])
        end = min(max(r.seconds for r in tcp), args.size / 2**20 / rate)
        ax.plot([0, end], [0, rate * end], "k--", lw=1, label="link rate")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("reply bytes received (MiB)")
        ax.legend(fontsize=7, ncol=2)
        written += save(fig, out, "rpc-progress")
    lossy = [runs_by[n] for n in LOSS if n in runs_by]
    if lossy:
        firsts = [t for r in lossy for t, k, _, _ in r.events if k == "timeout"][:1] or [0.0]
        t0 = max(0.0, min(firsts) - args.timeout - rtt)  # from the first lost call's send
        fig, axes = plt.subplots(len(lossy) + 1, 1, figsize=(9, 2.6 * (len(lossy) + 1)))
        for ax, run in zip(axes[:-1], lossy, strict=True):
            gantt(ax, run, t0, min(firsts) + 8 * rtt)
        axes[-2].set_xlabel("time (ms): bars from send to reply; red resend, x timeout")
        base = runs_by.get("udp-pipe-32k-w16")
        for r in ([base] if base else []) + lossy:
            progress(axes[-1], r, r.strategy.name + ("" if r.strategy.lossy else ", no loss"))
        axes[-1].set_xlabel("time (s)")
        axes[-1].set_ylabel("reply MiB")
        axes[-1].legend(fontsize=7)
        written += save(fig, out, "rpc-loss")
    return written

"""Shared pieces of the hardening tests: long mode, figures, latency percentiles, and the
strace-based check that stable replies were preceded by an fsync.

(Named ``hardening_util`` and not ``conftest``: the protocol tests import their ``conftest``
by name and a second module of that name would shadow it.)

``FERRY_LONG=1`` selects the long mode (100+ kill cycles, a 30-minute soak); figures of every
run are printed and written to ``build/hardening/<test>.json`` so docs/hardening.md can quote
them.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent
TESTS = _HERE.parent
for _p in (TESTS, TESTS / "protocol", TESTS / "server"):  # helpers, rawclient, modelserver
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

REPO = TESTS.parent
FIGURES_DIR = REPO / "build" / "hardening"
LONG = os.environ.get("FERRY_LONG", "") not in ("", "0")


def env_number(name: str, short: float, long: float) -> float:
    """``$name`` if set, else the long- or short-mode default."""
    value = os.environ.get(name)
    return float(value) if value else (long if LONG else short)


def percentiles(samples: Iterable[float]) -> dict[str, float]:
    """p50/p90/p99/max of ``samples`` (seconds) in milliseconds."""
    data = sorted(samples)
    if not data:
        return {}

    def at(q: float) -> float:
        return round(data[min(len(data) - 1, int(q * len(data)))] * 1000, 3)

    return {"n": len(data), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99),
            "max_ms": round(data[-1] * 1000, 3)}  # fmt: skip


def record_figures(name: str, figures: dict[str, object]) -> None:
    """Print ``figures`` (visible with ``-s`` or on failure) and keep them as JSON."""
    figures = {"long_mode": LONG, "when": time.strftime("%Y-%m-%dT%H:%M:%S"), **figures}
    text = json.dumps(figures, indent=2, sort_keys=True)
    print(f"\n[hardening figures: {name}]\n{text}")
    FIGURES_DIR.mkdir(parents=True, exist_ok=True)
    (FIGURES_DIR / f"{name}.json").write_text(text + "\n")


# -- strace ---------------------------------------------------------------------------------

STRACE_SYSCALLS = "pwrite64,fsync,fdatasync"


def strace_prefix(strace: str, out: Path) -> list[str]:
    """Run a command under strace, logging the write and sync calls of every thread and
    child with wall-clock entry times (``-ttt``, the clock of ``time.time()``), durations
    (``-T``) and the path behind each descriptor (``-y``)."""
    return [
        strace, "-f", "-qq", "-ttt", "-T", "-y", "-s", "0", "--seccomp-bpf",
        "-e", f"trace={STRACE_SYSCALLS}", "-e", "signal=none", "-o", str(out),
    ]  # fmt: skip


@dataclass(frozen=True)
class Syscall:
    name: str  # pwrite64, fsync or fdatasync
    path: str  # what the descriptor named when the call was made
    offset: int  # pwrite64 only, else -1
    start: float  # entry, seconds since the epoch
    end: float  # return (entry + duration)
    ok: bool


_LINE = re.compile(r"^(?P<pid>\d+)\s+(?P<ts>\d+\.\d+) (?P<rest>.*)$")
_CALL = re.compile(r"^(?P<name>pwrite64|fsync|fdatasync)\(\d+<(?P<path>[^>]*)>(?P<args>.*)$")
_RESUMED = re.compile(r"^<\.\.\. (?P<name>\w+) resumed>(?P<tail>.*)$")
_RESULT = re.compile(r"\) = (?P<ret>-?\d+)[^<]*<(?P<dur>\d+\.\d+)>\s*$")


def parse_strace(path: Path) -> dict[str, list[Syscall]]:
    """Syscalls in an ``strace_prefix`` log, by path, in entry order. Calls cut short by the
    SIGKILL (no return line) are left out: they cannot have preceded a reply."""
    by_path: dict[str, list[Syscall]] = defaultdict(list)
    pending: dict[tuple[str, str], tuple[str, int, float]] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        pid, ts, rest = m["pid"], float(m["ts"]), m["rest"]
        call = _CALL.match(rest)
        if call:
            name, fpath, args = call["name"], call["path"], call["args"]
            offset = -1
            if name == "pwrite64":
                nums = re.match(r"^, (?:\"\"|\")?[^,]*, (\d+), (\d+)", args)
                offset = int(nums.group(2)) if nums else -1
            if args.endswith("<unfinished ...>"):
                pending[(pid, name)] = (fpath, offset, ts)
                continue
            res = _RESULT.search(args)
            if res:
                end = ts + float(res["dur"])
                by_path[fpath].append(Syscall(name, fpath, offset, ts, end, res["ret"] != "-1"))
            continue
        resumed = _RESUMED.match(rest)
        if resumed and (pid, resumed["name"]) in pending:
            fpath, offset, start = pending.pop((pid, resumed["name"]))
            res = _RESULT.search(resumed["tail"])
            if res:
                sc = Syscall(resumed["name"], fpath, offset, start, ts, res["ret"] != "-1")
                by_path[fpath].append(sc)
    for calls in by_path.values():
        calls.sort(key=lambda c: c.start)
    return dict(by_path)


SLACK = 1e-4  # strace prints microseconds


@dataclass(frozen=True)
class StableAck:
    """A reply that promised durability: the client sent the call at ``sent`` and had the
    reply at ``received`` (both ``time.time()``)."""

    kind: str  # "file_sync" (WRITE FILE_SYNC), "commit", "dir" (CREATE/RENAME/REMOVE)
    path: str  # the file (or directory) that must have been synced
    sent: float
    received: float
    offset: int = -1  # file_sync: where the data went


def unsynced(acks: Iterable[StableAck], calls: dict[str, list[Syscall]]) -> list[str]:
    """The acknowledgements not preceded by a successful fsync/fdatasync of their file made
    while the call was being served (after the data's pwrite64, for a FILE_SYNC write)."""
    problems = []
    for ack in acks:
        seen = calls.get(ack.path, [])
        after = ack.sent - SLACK
        if ack.kind == "file_sync":
            writes = [c for c in seen if c.name == "pwrite64" and c.offset == ack.offset
                      and after <= c.start and c.end <= ack.received + SLACK]  # fmt: skip
            if not writes:
                problems.append(f"{ack}: no pwrite64 of that offset while it was served")
                continue
            after = writes[0].end - SLACK
        syncs = [c for c in seen if c.name in ("fsync", "fdatasync") and c.ok
                 and after <= c.start and c.end <= ack.received + SLACK]  # fmt: skip
        if not syncs:
            problems.append(f"{ack}: acknowledged with no fsync/fdatasync before the reply")
    return problems

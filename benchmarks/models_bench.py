#!/usr/bin/env python3
"""Ferry's server models side by side on loopback (a benchmark, not a timed test).

For each model (``ferry serve --model M``, started as a subprocess):
  * calls/s of NULL and of GETATTR with 1, 4 and 16 concurrent clients, each a separate
    client process doing one call at a time for DURATION seconds over its own connection;
  * sequential read of a SIZE MiB file with ``nfs-cp`` (libnfs-utils), or, if missing,
    with one raw client pipelining 1 MiB READs.

Results go to stdout as a markdown table and, with --write-docs, are appended to
docs/benchmarks.md with machine details.

    python benchmarks/models_bench.py                  # 256 MiB, 2 s per point
    python benchmarks/models_bench.py --quick          # 16 MiB, 0.5 s per point
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for sub in ("src", "tests/server", "tests/protocol"):
    sys.path.insert(0, str(REPO / sub))

from modelserver import VARIANTS, ModelServer, start  # noqa: E402
from rawclient import RawClient, nfs_getattr  # noqa: E402

from ferry.nfs3.const import NFS_PROGRAM  # noqa: E402

MiB = 1 << 20
MODELS = ("serial", "thread", "process", "prefork", "async", "async-2")
CLIENTS = (1, 4, 16)


def client_loop(
    port: int, export: str, proc: int, window: tuple[float, float], out: mp.Queue[int]
) -> None:
    """Calls from ``window[0]`` to ``window[1]`` (CLOCK_MONOTONIC is system-wide: one window
    for all clients, so a client the model leaves waiting in the backlog just counts less)."""
    c = RawClient(port, timeout=30)
    root = c.mount(export)
    calls = 0
    start, deadline = window
    time.sleep(max(start - time.monotonic(), 0.0))
    while time.monotonic() < deadline:
        if proc == 0:
            c.call(NFS_PROGRAM, 3, 0)
        else:
            nfs_getattr(c, root)
        calls += 1
    c.close()
    out.put(calls)


def calls_per_second(server: ModelServer, proc: int, clients: int, seconds: float) -> float:
    ctx = mp.get_context("fork")
    out: mp.Queue[int] = ctx.Queue()
    start = time.monotonic() + 0.3  # time to fork the clients, untimed
    args = (server.port, str(server.export), proc, (start, start + seconds), out)
    workers = [ctx.Process(target=client_loop, args=args) for _ in range(clients)]
    for w in workers:
        w.start()
    total = sum(out.get(timeout=seconds + 60) for _ in workers)
    for w in workers:
        w.join(30)
    return total / seconds


def read_throughput(server: ModelServer, size: int, scratch: Path) -> float:
    tool = shutil.which("nfs-cp")
    if tool is None:
        raise SystemExit("nfs-cp not found: install Debian package libnfs-utils")
    url = f"nfs://127.0.0.1{server.export}/big.bin?version=3&nfsport={server.port}"
    url += f"&mountport={server.port}"
    dest = scratch / "copy.bin"
    best = 0.0
    for _ in range(3):
        dest.unlink(missing_ok=True)
        start = time.monotonic()
        subprocess.run([tool, url, str(dest)], check=True, timeout=300, capture_output=True)
        best = max(best, size / (time.monotonic() - start) / 1e6)
        assert dest.stat().st_size == size
    dest.unlink()
    return best


def bench_model(variant: str, work: Path, size: int, seconds: float) -> dict[str, float]:
    export, state = work / "export", work / f"state-{variant}"
    server = start(export, state, VARIANTS[variant], work / f"{variant}.log")
    try:
        server.wait_settled()
        row: dict[str, float] = {}
        for proc, name in ((0, "NULL"), (1, "GETATTR")):
            for n in CLIENTS:
                if variant == "serial" and n > 1:
                    continue  # one connection at a time: the others would wait their turn
                row[f"{name} x{n}"] = calls_per_second(server, proc, n, seconds)
        row["read"] = read_throughput(server, size, work)
        return row
    finally:
        server.stop()


def table(results: dict[str, dict[str, float]], size_mib: int) -> str:
    cols = [f"{p} x{n}" for p in ("NULL", "GETATTR") for n in CLIENTS]
    head = "| model | " + " | ".join(f"{c} (calls/s)" for c in cols)
    head += f" | read {size_mib} MiB (MB/s) |"
    lines = [head, "|" + " --- |" * (len(cols) + 2)]
    for model, row in results.items():
        cells = [f"{row[c]:,.0f}" if c in row else "n/a" for c in cols]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {row['read']:,.0f} |")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"Machine: nproc {os.cpu_count()}, CPU {cpu}, kernel {platform.release()}, "
        f"Python {platform.python_version()}, Ferry {commit or '?'} (+ local changes)."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--quick", action="store_true", help="16 MiB, 0.5 s per point")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    size_mib, seconds = (16, 0.5) if args.quick else (args.size_mib, args.seconds)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="ferry-models-", dir="/dev/shm") as tmp:
        work = Path(tmp)
        (work / "export").mkdir()
        with open(work / "export" / "big.bin", "wb") as f:
            block = os.urandom(MiB)
            for _ in range(size_mib):
                f.write(block)
        for variant in args.models.split(","):
            results[variant] = bench_model(variant, work, size_mib * MiB, seconds)
            print(variant, results[variant], flush=True)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = (
        f"## Server models, {when}\n\n"
        f"`benchmarks/models_bench.py`: loopback; calls/s of one-call-at-a-time clients (each "
        f"its own process and connection) over {seconds:g} s; read = best of 3 `nfs-cp` runs "
        f"of a {size_mib} MiB file on /dev/shm. `async-2` is `--model async --workers 2`, "
        f"prefork runs {VARIANTS['prefork'][-1]} workers. Serial serves one connection at a "
        f"time, so only its 1-client figures exist.\n\n"
        f"{table(results, size_mib)}\n\n{machine()}\n"
    )
    print(text)
    if args.write_docs:
        with open(REPO / "docs" / "benchmarks.md", "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Where a small WRITE's server CPU goes with one call in flight (issue 20's libnfs 4 KiB
writes, the request pattern of fuse-nfs): a stage timer for ``ferry serve``.

``ferry serve DIR --workers 1`` runs in a child process with counters around each stage
a WRITE passes (thread CPU and wall time, calls, the slowest call), read and reset on
SIGUSR1 as ``loop_cost.py`` does; the load is ``libnfs_io.py write`` (libnfs through
ctypes, one ``nfs_pwrite`` at a time, then COMMIT). Stages, outermost first:

* the loop's read callback (``RpcStreamProtocol.buffer_updated``): everything the loop does
  for a read of the socket, the calls it answers itself and the reply's ``writev`` included;
* ``AsyncServer.answer`` (a call run on the loop) or ``submit`` (handed to a call thread),
  the hop to the thread (wall, ``submit`` to the thread's start), ``AsyncServer._run`` (the
  call on the thread) and the hop back (wall, the thread's end to ``_deliver`` on the loop);
* within the call: the duplicate request cache and the procedure (``_run_once``), decode,
  procedure and encode (``_run``), ``Nfs3Service.write``, its attribute reads and the
  backend's ``write`` (the ``pwrite``);
* the reply's ``writev`` (``write_reply``).

Beside them, server CPU and context switches (every thread's, ``/proc/PID/task/*/status``)
per WRITE. The wrappers cost about 1 µs each: compare stages of one run, and take server
CPU per call without them from ``ferry bench server`` or an A/B run. System calls per
call: ``strace -c -f -p PID`` over a bounded run (not done here: strace slows the loop
enough to trip the inline tripwire).

    python benchmarks/write_cost.py [--size-mib 8] [--block 4096] [--repeat 3]
                                    [-- extra ferry serve arguments, e.g. --no-inline]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _sub in ("src", "tests", "benchmarks"):
    sys.path.insert(0, str(REPO / _sub))

STAGES = (  # (module, class or "", attribute, label)
    ("ferry.server.aio", "RpcStreamProtocol", "buffer_updated", "loop: read callback (all)"),
    ("ferry.server.aio", "AsyncServer", "answer", "loop: call run on the loop"),
    ("ferry.server.aio", "AsyncServer", "submit", "loop: hand to a call thread"),
    ("ferry.server.aio", "AsyncServer", "_run", "thread: call run on a thread"),
    ("ferry.server.aio", "AsyncServer", "_deliver", "loop: replies from the threads"),
    ("ferry.rpc.dispatch", "Dispatcher", "_run_once", "call: DRC + procedure"),
    ("ferry.rpc.dispatch", "Dispatcher", "_run", "call: decode, procedure, encode"),
    ("ferry.nfs3.service", "Nfs3Service", "write", "call: Nfs3Service.write"),
    ("ferry.nfs3.service", "Nfs3Service", "attrs", "call: attributes (before, after)"),
    ("ferry.backends.local", "LocalBackend", "write", "call: backend write (pwrite)"),
    ("ferry.server.aio", "", "write_reply", "loop: reply writev"),
)
HOP_TO, HOP_BACK = "hop: submit -> thread starts (wall)", "hop: thread ends -> loop (wall)"


# -- inside the measured server --------------------------------------------------------------


def _timed(out: Path) -> None:
    """Wrap every stage with counters [calls, CPU ns, wall ns, max wall ns], written to
    ``out`` (JSON) and reset on each SIGUSR1; time the two thread hops by wall clock."""
    counts: dict[str, list[int]] = {}
    wall, cpu = time.perf_counter_ns, time.thread_time_ns
    submitted: dict[int, int] = {}  # id(record) -> when it was handed to the pool
    ended = [0]  # when a call thread last queued a reply

    def add(label: str, c: int, w: int) -> None:
        e = counts.setdefault(label, [0, 0, 0, 0])
        e[0], e[1], e[2], e[3] = e[0] + 1, e[1] + c, e[2] + w, max(e[3], w)

    def wrap(owner: Any, name: str, label: str) -> None:
        real = getattr(owner, name)
        on_thread = owner.__name__ == "AsyncServer" and name == "_run"
        submit = owner.__name__ == "AsyncServer" and name == "submit"
        deliver = owner.__name__ == "AsyncServer" and name == "_deliver"

        def timed(*args: Any, **kw: Any) -> Any:
            if on_thread:
                add(HOP_TO, 0, wall() - submitted.pop(id(args[1]), wall()))
            elif deliver and ended[0]:
                add(HOP_BACK, 0, wall() - ended[0])
            c, t = cpu(), wall()
            try:
                if submit:
                    submitted[id(args[1])] = t
                return real(*args, **kw)
            finally:
                add(label, cpu() - c, wall() - t)
                if on_thread:
                    ended[0] = wall()

        setattr(owner, name, timed)

    for module, cls, attr, label in STAGES:
        mod = importlib.import_module(module)
        wrap(getattr(mod, cls) if cls else mod, attr, label)

    def dump(*_: object) -> None:
        out.write_text(json.dumps(counts))
        counts.clear()

    signal.signal(signal.SIGUSR1, dump)


def child(export: str, state: str, out: str, extra: list[str]) -> int:
    _timed(Path(out))
    from ferry.cli.main import main

    argv = ["serve", export, "--port", "0", "--bind", "127.0.0.1", "--state-dir", state]
    return main([*argv, "--no-root-squash", "--workers", "1", *extra])


# -- the driver ------------------------------------------------------------------------------


def switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of ``pid`` so far."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        with contextlib.suppress(OSError):
            for line in Path(path).read_text().splitlines():
                if line.endswith(tuple("0123456789")) and "ctxt_switches" in line:
                    total += int(line.split()[1])
    return total


def one_run(server: Any, url: str, size: int, block: int) -> tuple[float, float, dict[str, Any]]:
    """(server CPU µs per WRITE, context switches per WRITE, the stage counters)."""
    from procstat import cpu_seconds

    pid, script = server.proc.pid, str(REPO / "benchmarks" / "libnfs_io.py")
    server.counters()
    cpu0, sw0 = cpu_seconds([pid]), switches(pid)
    subprocess.run([sys.executable, script, "write", url, str(size), str(block)],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    cpu1, sw1 = cpu_seconds([pid]), switches(pid)
    counts = server.counters() or {}
    calls = size // block
    return (cpu1 - cpu0) / calls * 1e6, (sw1 - sw0) / calls, counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size-mib", type=int, default=8)
    p.add_argument("--block", type=int, default=4096)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", nargs=3, metavar=("EXPORT", "STATE", "OUT"), help=argparse.SUPPRESS)
    args, extra = p.parse_known_args()
    extra = [a for a in extra if a != "--"]
    if args.child:
        return child(*args.child, extra)
    from loop_cost import Server

    from helpers.peers import libnfs_url

    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(prefix="ferry-writecost-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        export, out = work / "export", work / "counters.json"
        export.mkdir()
        me = str(Path(__file__).resolve())
        argv = [sys.executable, me, "--child", str(export), str(work / "state"), str(out)]
        server = Server("ferry", [*argv, *extra], out)
        try:
            url = libnfs_url("127.0.0.1", str(export), "w.bin", server.port, server.port)
            one_run(server, url, 1 << 20, args.block)  # warm up: imports, caches, the file
            runs = [one_run(server, url, size, args.block) for _ in range(args.repeat)]
        finally:
            server.stop()
    report(runs, size // args.block, args.block)
    return 0


def report(runs: list[tuple[float, float, dict[str, Any]]], calls: int, block: int) -> None:
    """The run of median server CPU: its stages per WRITE."""
    cpu, sw, counts = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    each: Callable[[float], str] = lambda v: f"{v / calls / 1e3:.1f}"  # noqa: E731
    median = statistics.median(r[0] for r in runs)
    print(f"{block}-byte WRITEs, one in flight: server CPU {cpu:.1f} µs per WRITE "
          f"(runs: {', '.join(f'{r[0]:.1f}' for r in runs)}; median {median:.1f}), "
          f"{sw:.1f} context switches per WRITE")  # fmt: skip
    print("| stage | calls per WRITE | CPU µs per WRITE | wall µs per WRITE | slowest ms |")
    print("| --- | --- | --- | --- | --- |")
    order = [label for *_, label in STAGES] + [HOP_TO, HOP_BACK]
    for label in order:
        if label in counts:
            n, c, w, worst = counts[label]
            print(f"| {label} | {n / calls:.2f} | {each(c) if c else '-'} | {each(w)} "
                  f"| {worst / 1e6:.2f} |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())

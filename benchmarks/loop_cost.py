#!/usr/bin/env python3
"""Where a small call's server CPU goes with few calls in flight (issue 20's 1 x 1 and 8 x 1
rows): the event loop's read callback, the protocol work inside it, and the rest (epoll,
``read``, the kernel's wake-ups), set against the echo ceiling and against Ferry's own IO
adapter with no protocol work.

Three servers, each in a process of its own, measured one after the other under the same
load (``pipeline.py``, prebuilt calls), alternating over ``--repeat`` rounds:

* ``ferry``: ``ferry serve DIR --workers 1`` (one loop: the default runs one per CPU, and a
  connection is served by one of them), timed from inside: ``RpcStreamProtocol.
  buffer_updated`` (thread CPU and wall time per read: the call's whole life on the loop,
  its reply's ``writev`` included) and ``AsyncServer.answer`` (``Dispatcher.handle``, wall
  time per call);
* ``adapter``: the same ``AsyncServer`` and inline route, its dispatcher answering every
  call with canned bytes (what the adapter costs around the protocol);
* ``echo``: ``echo_server.py --mode per-call`` (what answering costs a Python server at all).

Server CPU per call comes from ``/proc`` (user + system, all threads). On a shared machine
every figure swings: compare the rows of one run, not runs of different minutes.

    python benchmarks/loop_cost.py [--ops GETATTR,LOOKUP,ACCESS] [--shapes 1x1,8x1]
                                   [--seconds 2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _sub in ("src", "tests", "tests/protocol", "tests/fuse", "benchmarks"):
    sys.path.insert(0, str(REPO / _sub))

COUNTERS = ("reads", "read_cpu_ns", "read_wall_ns", "calls", "answer_ns")


# -- inside a measured server ------------------------------------------------------------------


def _timed(out: Path) -> None:
    """Wrap the async server's read callback and its ``answer`` with counters, written to
    ``out`` (JSON) and reset on each SIGUSR1."""
    from ferry.server import aio

    counts = dict.fromkeys(COUNTERS, 0)
    answer, updated = aio.AsyncServer.answer, aio.RpcStreamProtocol.buffer_updated
    wall, cpu = time.perf_counter_ns, time.thread_time_ns

    def timed_answer(self: Any, record: Any, peer: Any, tried: bool = False) -> Any:
        t = wall()
        try:
            return answer(self, record, peer, tried)
        finally:
            counts["answer_ns"] += wall() - t
            counts["calls"] += 1

    def timed_updated(self: Any, nbytes: int) -> None:
        c, t = cpu(), wall()
        try:
            updated(self, nbytes)
        finally:
            counts["read_wall_ns"] += wall() - t
            counts["read_cpu_ns"] += cpu() - c
            counts["reads"] += 1

    def dump(*_: object) -> None:
        out.write_text(json.dumps(counts))
        counts.update(dict.fromkeys(COUNTERS, 0))

    aio.AsyncServer.answer = timed_answer  # type: ignore[method-assign]
    aio.RpcStreamProtocol.buffer_updated = timed_updated  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, dump)


def _serve_canned() -> None:
    """The async server with its inline route and a dispatcher that does no work."""
    import asyncio

    from ferry import loops
    from ferry.server.aio import AsyncServer
    from ferry.server.inline import METADATA, NO_BACKEND, InlinePolicy

    body = bytes(112)  # about a GETATTR reply after its xid

    class Canned:
        def handle(self, record: Any, peer: Any) -> list[bytes]:
            return [bytes(record[:4]), body]

        def handle_parts(self, record: Any, peer: Any, transport: Any = None) -> list[bytes]:
            return self.handle(record, peer)

    async def main() -> None:
        server = AsyncServer(Canned(), inline=InlinePolicy(NO_BACKEND, METADATA))  # type: ignore[arg-type]
        port = await server.listen("127.0.0.1", 0)
        print(f"serving on 127.0.0.1:{port}", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.close()

    loops.run(main())


def child(kind: str, export: str, state: str, out: str) -> int:
    if kind == "adapter":
        _serve_canned()
        return 0
    _timed(Path(out))
    from ferry.cli.main import main

    argv = ["serve", export, "--port", "0", "--bind", "127.0.0.1", "--state-dir", state]
    return main([*argv, "--no-root-squash", "--workers", "1"])


# -- the driver ----------------------------------------------------------------------------------


class Server:
    """A measured server process: its address, CPU time, and (ferry) its counters."""

    def __init__(self, name: str, argv: list[str], out: Path | None) -> None:
        self.name, self.out = name, out
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "serving on" in line or " on 127.0.0.1:" in line:
                self.port = int(line.split("127.0.0.1:")[1].split()[0])
                break
        else:
            raise RuntimeError(f"{name} did not start")

    def cpu(self) -> float:
        from procstat import cpu_seconds

        return cpu_seconds([self.proc.pid])

    def counters(self) -> dict[str, int] | None:
        """Reset (the first time) or read the counters since the last call."""
        if self.out is None:
            return None
        self.out.unlink(missing_ok=True)
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 5
        while not self.out.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.01)
        return json.loads(self.out.read_text())  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@contextlib.contextmanager
def servers(work: Path) -> Iterator[list[Server]]:
    export = work / "export"
    (export / "big").mkdir(parents=True)
    (export / "hello.txt").write_bytes(b"hello\n")
    me, py = str(Path(__file__).resolve()), sys.executable
    started: list[Server] = []
    try:
        out = work / "counters.json"
        args = [str(export), str(work / "state"), str(out)]
        started.append(Server("ferry", [py, me, "--child", "ferry", *args], out))
        started.append(Server("adapter", [py, me, "--child", "adapter", *args], None))
        echo = REPO / "benchmarks" / "echo_server.py"
        started.append(Server("echo", [py, str(echo), "--mode", "per-call"], None))
        yield started
    finally:
        for s in started:
            s.stop()


def calls_for(server: Server, export: Path) -> dict[str, bytes]:
    from userpath import Target, _prepare_calls

    t = Target("ferry", None, ("127.0.0.1", server.port), lambda: [], lambda: None, export)
    _prepare_calls(t, server.port)
    return t.calls


def measure(
    s: Server, record: bytes, shape: tuple[int, int], seconds: float
) -> tuple[float, float, dict[str, int] | None]:
    """(ops/s, server CPU µs per call, the ferry counters of the window)."""
    import pipeline

    s.counters()
    probe: Callable[[], float] = s.cpu
    r, (cpu0, cpu1) = pipeline.run(("127.0.0.1", s.port), record, *shape, seconds, 2, probe)
    counts = s.counters()
    if r.errors:
        raise RuntimeError(f"{s.name}: {r.errors} failed calls")
    return r.ops, (float(cpu1) - float(cpu0)) / max(r.calls, 1) * 1e6, counts  # type: ignore[arg-type]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ops", default="GETATTR,LOOKUP,ACCESS")
    p.add_argument("--shapes", default="1x1,8x1", help="CONNSxDEPTH, comma-separated")
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", nargs=4, metavar=("KIND", "EXPORT", "STATE", "OUT"),
                   help=argparse.SUPPRESS)  # fmt: skip
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    print("| op, conns x in flight | server | ops/s | server CPU µs/call | loop read callback "
          "CPU (wall) µs/call | of which Dispatcher.handle µs/call |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- |")
    with (
        tempfile.TemporaryDirectory(prefix="ferry-loopcost-", dir="/var/tmp") as tmp,
        servers(Path(tmp)) as started,
    ):
        calls = calls_for(started[0], Path(tmp) / "export")
        for op in args.ops.split(","):
            for text in args.shapes.split(","):
                conns, depth = (int(x) for x in text.split("x"))
                rows: dict[str, list[tuple[float, float, dict[str, int] | None]]] = {}
                for i in range(args.repeat):
                    for s in started if i % 2 == 0 else started[::-1]:
                        got = measure(s, calls[op], (conns, depth), args.seconds)
                        rows.setdefault(s.name, []).append(got)
                for name, runs in rows.items():
                    print(_row(f"{op}, {text}", name, runs), flush=True)
    return 0


def _row(label: str, name: str, runs: list[tuple[float, float, dict[str, int] | None]]) -> str:
    """The median run by CPU per call."""
    ops, cpu, c = sorted(runs, key=lambda r: r[1])[len(runs) // 2]
    split = "| | |"
    if c is not None and c["calls"]:
        n = c["calls"]
        split = (f"| {c['read_cpu_ns'] / n / 1e3:.1f} ({c['read_wall_ns'] / n / 1e3:.1f}) "
                 f"| {c['answer_ns'] / n / 1e3:.1f} |")  # fmt: skip
    return f"| {label} | {name} | {ops:,.0f} | {cpu:.1f} {split}"


if __name__ == "__main__":
    sys.exit(main())

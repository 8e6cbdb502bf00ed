#!/usr/bin/env python3
"""Instructions per small call (GETATTR, LOOKUP, ACCESS), counted by valgrind's callgrind:
an A/B figure that does not move with what else the machine runs.

On a shared machine the server's CPU time per call swings by 5-15% from one minute to the
next (issue 20: an A/A run of one tree against itself), far more than most changes to the
per-call path. The user-space instructions a call executes do not swing (to about 0.1%),
so they show such a change; they miss the cache misses and the kernel's work, which the
server CPU figures of ``loop_cost.py`` and ``ferry bench server`` still have to confirm.

In one process, with no socket: a local export, ``Dispatcher.handle`` in a loop, then the
async server's loop path (``RpcStreamProtocol.get_buffer``/``buffer_updated``: record
reader, inline route, dispatch, reply framed and written to a transport that drops it).
Each loop runs inside ``functools.reduce``, the one C function callgrind is told to count
in and to dump after. Needs valgrind.

    python benchmarks/instr_cost.py [--src DIR] [--calls N] [--root-squash]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OPS = ("GETATTR", "LOOKUP", "ACCESS")


class _NullTransport:
    """What ``RpcStreamProtocol`` asks of a transport; the replies are dropped."""

    def writelines(self, parts: object) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 800) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def _feed(proto: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        buf = proto.get_buffer(-1)
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        view = view[n:]
        proto.buffer_updated(n)


async def _measured(src: Path, calls: int, root_squash: bool) -> None:
    """Under callgrind: per op, one ``reduce`` of the loop path, then one of ``handle``."""
    sys.path.insert(0, str(src))
    import ferry  # from ``src``, before dispatch_cost puts this tree's first on the path

    assert Path(ferry.__file__).is_relative_to(src), ferry.__file__
    sys.path.insert(0, str(REPO / "benchmarks"))
    from dispatch_cost import PEER, records, root_handle

    from ferry.rpc.record import frame_bytes
    from ferry.server.aio import AsyncServer, RpcStreamProtocol
    from ferry.server.app import build_app
    from ferry.server.config import ExportConfig, ServerConfig

    with tempfile.TemporaryDirectory(prefix="ferry-icost-", dir="/var/tmp") as tmp:
        export = Path(tmp) / "export"
        export.mkdir()
        (export / "hello.txt").write_bytes(b"hello\n")
        config = ServerConfig(exports=[ExportConfig(path=str(export), root_squash=root_squash)],
                              state_dir=Path(tmp) / "state")  # fmt: skip
        app = build_app(config)
        try:
            d = app.dispatcher(2049)
            server = AsyncServer(d, inline=app.inline_policy())
            server.loop = asyncio.get_running_loop()
            server.inline.wire.trip = 1e9  # every call stays on the loop path
            proto = RpcStreamProtocol(server)
            proto.connection_made(_NullTransport())  # type: ignore[arg-type]
            root = root_handle(d, str(export))
            for op, record in records(root).items():
                data = frame_bytes(record)
                for _ in range(300):  # warm: caches, specialized bytecode
                    _feed(proto, data)
                    d.handle(record, PEER)
                functools.reduce(lambda a, _: _feed(proto, data), range(calls), None)
                functools.reduce(lambda a, _: d.handle(record, PEER), range(calls), None)
                assert proto.conn.in_flight == 0 and server.inline.wire.trips == 0, op
        finally:
            app.close()


def _counts(out: Path) -> list[int]:
    """The instructions of each dump, in dump order (callgrind's ``cg.out.1``, ...)."""
    dumps = sorted(out.parent.glob(out.name + ".*"), key=lambda p: int(p.suffix[1:]))
    found = []
    for dump in dumps:
        m = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
        found.append(int(m.group(1)) if m else 0)
    return found


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", type=Path, default=REPO / "src", help="the tree to measure")
    p.add_argument("--calls", type=int, default=1000)
    p.add_argument("--root-squash", action="store_true", help="squash the root caller")
    p.add_argument("--measured", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measured:
        asyncio.run(_measured(args.src.resolve(), args.calls, args.root_squash))
        return 0
    with tempfile.TemporaryDirectory(prefix="ferry-icost-") as tmp:
        out = Path(tmp) / "cg.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                "--toggle-collect=functools_reduce", "--dump-after=functools_reduce",
                sys.executable, __file__, "--measured", "--src", str(args.src),
                "--calls", str(args.calls)]  # fmt: skip
        argv += ["--root-squash"] if args.root_squash else []
        env = dict(os.environ, PYTHONPATH=str(args.src))
        subprocess.run(argv, check=True, capture_output=True, env=env, timeout=900)
        counts = [c for c in _counts(out) if c]
    if len(counts) != 2 * len(OPS):
        print(f"instr_cost: expected {2 * len(OPS)} dumps, got {len(counts)}", file=sys.stderr)
        return 1
    print(f"instructions per call ({args.src}, {args.calls} calls each"
          f"{', root squashed' if args.root_squash else ''}):")  # fmt: skip
    for i, op in enumerate(OPS):
        loop, handle = counts[2 * i] / args.calls, counts[2 * i + 1] / args.calls
        print(f"  {op:8} loop path {loop:9,.0f}  Dispatcher.handle {handle:9,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What the async server's IO adapter costs per call, alone: ``RpcStreamProtocol`` fed
records in this process, on one loop, with a transport that only counts writes and a
dispatcher that answers every call with a canned reply (no protocol work, no socket).

Each read hands the protocol ``--batch`` GETATTR-sized call records at once (1: a client
with one call in flight; 32: a pipelining one), as ``buffer_updated`` does after a
``recv``. ``inline`` answers them on the loop (the default server's route for metadata
calls); ``threads`` sends them to the call threads and back (``--no-inline``). Prints µs
of CPU per call and, with ``--profile``, the adapter functions that take the most time.
Set against ``dispatch_cost.py`` (the protocol work alone) and the server's CPU per call
under load, it splits the gap to the echo ceiling into adapter, protocol and kernel.

    python benchmarks/adapter_cost.py [--batch N] [--calls N] [--route inline|threads]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import struct
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ferry import loops  # noqa: E402
from ferry.nfs3.const import NFS_PROGRAM, NfsProc  # noqa: E402
from ferry.rpc.auth import encode_auth_sys  # noqa: E402
from ferry.rpc.message import NULL_AUTH, CallHeader  # noqa: E402
from ferry.server.aio import AsyncServer, RpcStreamProtocol  # noqa: E402
from ferry.server.inline import METADATA, NO_BACKEND, InlinePolicy  # noqa: E402
from ferry.xdr import Packer  # noqa: E402

REPLY = [bytes(120)]  # about a GETATTR reply: header and fattr3


class Canned:
    """A dispatcher that answers every call with the same bytes."""

    def handle(self, record: Any, peer: Any) -> list[bytes]:
        return REPLY

    def handle_parts(self, record: Any, peer: Any, transport: Any = None) -> list[bytes]:
        return REPLY  # what the call threads ask (READ data may stay in its file)


class Counting:
    """A transport that takes writes and counts them."""

    def __init__(self) -> None:
        self.writes = 0

    def writelines(self, data: Any) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 800) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def stream(batch: int) -> bytes:
    """``batch`` framed GETATTR calls (a 36-byte handle), as one read brings them."""
    p = Packer()
    CallHeader(1, 2, NFS_PROGRAM, 3, NfsProc.GETATTR, encode_auth_sys(0, 0), NULL_AUTH).pack(p)
    record = p.get_buffer() + struct.pack(">I", 36) + bytes(36)
    return (struct.pack(">I", 0x80000000 | len(record)) + record) * batch


async def run(batch: int, calls: int, route: str, profile: bool) -> None:
    inline = InlinePolicy(NO_BACKEND, METADATA) if route == "inline" else InlinePolicy()
    server = AsyncServer(Canned(), inline=inline, threads=8)  # type: ignore[arg-type]
    server.loop = asyncio.get_running_loop()
    proto = RpcStreamProtocol(server)
    transport = Counting()
    proto.connection_made(transport)  # type: ignore[arg-type]
    data = stream(batch)
    rounds = max(1, calls // batch)

    async def one_round() -> None:
        done = 0
        while done < len(data):  # as many reads as the buffer it offers needs
            buf = proto.get_buffer(len(data) - done)
            n = min(len(buf), len(data) - done)
            buf[:n] = data[done : done + n]
            proto.buffer_updated(n)
            done += n
        while proto.conn.in_flight:  # thread replies come back through the loop
            await asyncio.sleep(0)

    for _ in range(max(1, rounds // 10)):  # warm up
        await one_round()
    transport.writes = 0
    prof = cProfile.Profile() if profile else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if prof:
        prof.enable()
    for _ in range(rounds):
        await one_round()
    if prof:
        prof.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    n = rounds * batch
    print(
        f"{route}, {batch} call(s) per read: {cpu / n * 1e6:.2f} us CPU per call "
        f"({wall / n * 1e6:.2f} us wall), {transport.writes / rounds:.2f} writes per read"
    )
    if prof:
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
        print(out.getvalue())
    proto.connection_lost(None)
    await server.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, action="append", help="calls per read (1 and 32)")
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--route", choices=("inline", "threads"), action="append")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    for route in args.route or ["inline", "threads"]:
        for batch in args.batch or [1, 32]:
            calls = args.calls if route == "inline" else args.calls // 5
            loops.run(run(batch, calls, route, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())

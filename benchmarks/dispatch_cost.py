#!/usr/bin/env python3
"""What one small call costs Ferry's protocol side alone: ``Dispatcher.handle`` in a loop,
in this process, on one thread, with no socket, loop or thread hand-off.

For GETATTR, LOOKUP and ACCESS on a local export (the default backend, on disk), it prints
the µs per call and, from cProfile, the Python function calls per RPC and the functions
that take the most time. Set against the server's CPU per call under load (``ferry bench
server``) and the echo ceiling, it splits the gap into the protocol work (this) and the
IO adapter around it (the rest).

    python benchmarks/dispatch_cost.py [--calls N] [--top K] [--dir DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _sub in ("src", "tests", "tests/protocol"):
    sys.path.insert(0, str(REPO / _sub))

from ferry.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, MountProc, NfsProc  # noqa: E402
from ferry.rpc.auth import encode_auth_sys  # noqa: E402
from ferry.rpc.dispatch import Dispatcher  # noqa: E402
from ferry.rpc.message import NULL_AUTH, CallHeader  # noqa: E402
from ferry.server.app import build_app  # noqa: E402
from ferry.server.config import ExportConfig, ServerConfig  # noqa: E402
from ferry.xdr import Packer, Unpacker  # noqa: E402

PEER = ("127.0.0.1", 800)


def call(prog: int, vers: int, proc: int, *args: bytes, xid: int = 1) -> bytes:
    p = Packer()
    CallHeader(xid, 2, prog, vers, proc, encode_auth_sys(0, 0), NULL_AUTH).pack(p)
    return p.get_buffer() + b"".join(args)


def opaque(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data + bytes(-len(data) % 4)


def root_handle(d: Dispatcher, export: str) -> bytes:
    mnt = call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, opaque(export.encode()))
    reply = b"".join(bytes(b) for b in d.handle(mnt, PEER) or [])
    u = Unpacker(reply)
    for _ in range(6):  # xid, REPLY, MSG_ACCEPTED, verifier flavor, verifier length, SUCCESS
        u.unpack_uint()
    assert u.unpack_uint() == 0, "MNT failed"
    return bytes(u.unpack_opaque(64))


def records(root: bytes) -> dict[str, bytes]:
    fh = opaque(root)
    return {
        "GETATTR": call(NFS_PROGRAM, 3, NfsProc.GETATTR, fh),
        "LOOKUP": call(NFS_PROGRAM, 3, NfsProc.LOOKUP, fh, opaque(b"hello.txt")),
        "ACCESS": call(NFS_PROGRAM, 3, NfsProc.ACCESS, fh, (0x3F).to_bytes(4, "big")),
    }


def measure(d: Dispatcher, record: bytes, calls: int) -> float:
    """CPU µs per ``handle`` (this thread's CPU time: other load on the machine does not
    count; best of three rounds)."""
    best = float("inf")
    for _ in range(3):
        t = time.thread_time()
        for _ in range(calls):
            d.handle(record, PEER)
        best = min(best, (time.thread_time() - t) / calls * 1e6)
    return best


def profile(d: Dispatcher, record: bytes, calls: int, top: int) -> tuple[float, str]:
    """(Python function calls per RPC, the top functions by own time, then by cumulative
    time: the profiler's overhead inflates both alike)."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        d.handle(record, PEER)
    prof.disable()
    stats = pstats.Stats(prof, stream=(out := io.StringIO()))
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    total = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    table = [ln for ln in lines if ln.lstrip()[:1].isdigit() or "ncalls" in ln]
    return total / calls, "\n".join(ln.replace(str(REPO / "src") + "/", "") for ln in table)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="the export's parent")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-dcost-", dir=args.dir) as tmp:
        export = Path(tmp) / "export"
        export.mkdir()
        (export / "hello.txt").write_bytes(b"hello\n")
        config = ServerConfig(exports=[ExportConfig(path=str(export), root_squash=False)],
                              state_dir=Path(tmp) / "state")  # fmt: skip
        app = build_app(config)
        try:
            d = app.dispatcher(2049)
            for op, record in records(root_handle(d, str(export))).items():
                us = measure(d, record, args.calls)
                per_rpc, table = profile(d, record, args.calls // 4, args.top)
                print(f"## {op}: {us:.1f} µs CPU per Dispatcher.handle, {per_rpc:.0f} Python "
                      f"function calls per RPC (cProfile)\n{table}\n")  # fmt: skip
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What one READ or WRITE costs Ferry's protocol side alone: ``Dispatcher.handle`` in a
loop, in this process, on one thread, with no socket, loop or thread hand-off.

The data path's share of the user-path bulk rows (``nfs-cp``'s 1 MiB calls, libnfs's
4 KiB ones): for 4 KiB and 1 MiB UNSTABLE WRITEs (each with a new XID, so each makes a
duplicate request cache entry, as a client's do) and READs of a file on a local export
(the default backend, on disk), the CPU µs per call (this thread's user + system time, so
the page-cache copy counts, other load on the machine does not; best of three rounds) and,
with ``--profile``, cProfile's top functions.

    python benchmarks/data_cost.py [--calls N] [--profile] [--dir DIR]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _sub in ("src", "benchmarks"):
    sys.path.insert(0, str(REPO / _sub))

from dispatch_cost import PEER, call, opaque, root_handle  # noqa: E402

from ferry.nfs3.const import NFS_PROGRAM, NfsProc  # noqa: E402
from ferry.rpc.dispatch import Dispatcher  # noqa: E402
from ferry.server.app import build_app  # noqa: E402
from ferry.server.config import ExportConfig, ServerConfig  # noqa: E402
from ferry.xdr import Unpacker  # noqa: E402

KiB, MiB = 1 << 10, 1 << 20
UNSTABLE = 0


def file_handle(d: Dispatcher, root: bytes, name: bytes) -> bytes:
    lookup = call(NFS_PROGRAM, 3, NfsProc.LOOKUP, opaque(root), opaque(name))
    reply = b"".join(bytes(b) for b in d.handle(lookup, PEER) or [])
    u = Unpacker(reply)
    for _ in range(6):
        u.unpack_uint()
    assert u.unpack_uint() == 0, "LOOKUP failed"
    return bytes(u.unpack_opaque(64))


def workloads(fh: bytes, xids: itertools.count[int]) -> dict[str, Callable[[], bytes]]:
    """Call makers: a new XID each (a WRITE's record changes with it, as on the wire)."""
    out: dict[str, Callable[[], bytes]] = {}
    for label, size in (("4 KiB", 4 * KiB), ("1 MiB", MiB)):
        data = bytes(range(256)) * (size // 256)
        args = opaque(fh) + (0).to_bytes(8, "big") + size.to_bytes(4, "big")
        write = args + UNSTABLE.to_bytes(4, "big") + opaque(data)
        out[f"WRITE {label}"] = lambda w=write: call(NFS_PROGRAM, 3, NfsProc.WRITE, w,
                                                     xid=next(xids))  # fmt: skip
        read = call(NFS_PROGRAM, 3, NfsProc.READ, args)
        out[f"READ {label}"] = lambda r=read: r
    return out


def measure(d: Dispatcher, make: Callable[[], bytes], calls: int) -> float:
    best = float("inf")
    for _ in range(3):
        records = [make() for _ in range(calls)]
        t = time.thread_time()
        for record in records:
            d.handle(record, PEER)
        best = min(best, (time.thread_time() - t) / calls * 1e6)
    return best


def profile(d: Dispatcher, make: Callable[[], bytes], calls: int, top: int) -> str:
    records = [make() for _ in range(calls)]
    prof = cProfile.Profile()
    prof.enable()
    for record in records:
        d.handle(record, PEER)
    prof.disable()
    stats = pstats.Stats(prof, stream=(out := io.StringIO()))
    stats.sort_stats("tottime").print_stats(top)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    table = [ln for ln in lines if ln.lstrip()[:1].isdigit() or "ncalls" in ln]
    return "\n".join(ln.replace(str(REPO / "src") + "/", "") for ln in table)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=2000, help="per round (1 MiB: a tenth)")
    p.add_argument("--profile", action="store_true")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="the export's parent")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferry-dcost-", dir=args.dir) as tmp:
        export = Path(tmp) / "export"
        export.mkdir()
        (export / "data.bin").write_bytes(bytes(MiB))
        config = ServerConfig(exports=[ExportConfig(path=str(export), root_squash=False)],
                              state_dir=Path(tmp) / "state")  # fmt: skip
        app = build_app(config)
        try:
            d = app.dispatcher(2049)
            fh = file_handle(d, root_handle(d, str(export)), b"data.bin")
            for label, make in workloads(fh, itertools.count(1000)).items():
                calls = args.calls if "KiB" in label else max(1, args.calls // 10)
                print(f"{label}: {measure(d, make, calls):.1f} µs CPU per Dispatcher.handle")
                if args.profile:
                    print(profile(d, make, calls, args.top) + "\n")
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

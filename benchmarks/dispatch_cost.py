#!/usr/bin/env python3
"""What one small call costs Ferry's protocol side alone: ``Dispatcher.handle`` in a loop,
in this process, on one thread, with no socket, loop or thread hand-off.

For GETATTR, LOOKUP and ACCESS on a local export (the default backend, on disk), it prints
the µs per call and, from cProfile, the Python function calls per RPC and the functions
that take the most time. Set against the server's CPU per call under load (``ferry bench
server``) and the echo ceiling, it splits the gap into the protocol work (this) and the
IO adapter around it (the rest).

With ``--entries N`` (default 5,000; 0: skip) it also lists a directory of N empty files
with READDIRPLUS the way Linux pages it (dircount = maxcount / 8; maxcount 32 KiB and
1 MiB) and prints the CPU µs and Python function calls per entry.

    python benchmarks/dispatch_cost.py [--calls N] [--top K] [--dir DIR] [--entries N]
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
from ferry.nfs3.results import unpack_readdirplus_res  # noqa: E402
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


PAGES: dict[int, int] = {}


def list_plus(
    d: Dispatcher, fh: bytes, maxcount: int, prof: cProfile.Profile | None = None
) -> tuple[int, float]:
    """One whole READDIRPLUS listing, page after page: (entries listed, CPU seconds in
    ``Dispatcher.handle``, which alone ``prof`` profiles; decoding the replies is not
    counted). The calls it took are in ``PAGES[maxcount]``."""
    cookie, verf, total, xid, cpu = 0, bytes(8), 0, 100, 0.0
    PAGES[maxcount] = 0
    while True:
        args = fh + cookie.to_bytes(8, "big") + verf
        args += (maxcount // 8).to_bytes(4, "big") + maxcount.to_bytes(4, "big")
        xid += 1
        record = call(NFS_PROGRAM, 3, NfsProc.READDIRPLUS, args, xid=xid)
        t = time.thread_time()
        if prof is not None:
            prof.enable()
        parts = d.handle(record, PEER) or []
        if prof is not None:
            prof.disable()
        cpu += time.thread_time() - t
        PAGES[maxcount] += 1
        u = Unpacker(b"".join(bytes(b) for b in parts))
        for _ in range(6):
            u.unpack_uint()
        assert u.unpack_uint() == 0, "READDIRPLUS failed"
        res = unpack_readdirplus_res(u)
        total += len(res.entries)
        if res.eof:
            return total, cpu
        cookie, verf = res.entries[-1].cookie, res.cookieverf


def readdir_cost(d: Dispatcher, root: bytes, export: Path, entries: int) -> None:
    """CPU µs and Python calls per entry of a READDIRPLUS listing (best of three)."""
    big = export / "big"
    big.mkdir()
    for i in range(entries):
        (big / f"file-{i:06d}").touch()
    lookup = call(NFS_PROGRAM, 3, NfsProc.LOOKUP, opaque(root), opaque(b"big"))
    reply = b"".join(bytes(b) for b in d.handle(lookup, PEER) or [])
    fh = opaque(reply[32 : 32 + int.from_bytes(reply[28:32], "big")])
    for maxcount in (32 * 1024, 1 << 20):
        list_plus(d, fh, maxcount)  # the listing cache warm, as in a second ls -l
        best = min(cpu / n for n, cpu in (list_plus(d, fh, maxcount) for _ in range(3)))
        prof = cProfile.Profile()
        n, _ = list_plus(d, fh, maxcount, prof)
        calls = sum(v[1] for v in pstats.Stats(prof).stats.values())  # type: ignore[attr-defined]
        print(f"## READDIRPLUS maxcount {maxcount // 1024} KiB: {best * 1e6:.2f} µs CPU per "
              f"entry, {calls / n:.1f} Python function calls per entry ({n} entries, "
              f"{PAGES[maxcount]} calls)")  # fmt: skip


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
    p.add_argument("--entries", type=int, default=5000, help="READDIRPLUS directory size")
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
            root = root_handle(d, str(export))
            for op, record in records(root).items():
                us = measure(d, record, args.calls)
                per_rpc, table = profile(d, record, args.calls // 4, args.top)
                print(f"## {op}: {us:.1f} µs CPU per Dispatcher.handle, {per_rpc:.0f} Python "
                      f"function calls per RPC (cProfile)\n{table}\n")  # fmt: skip
            if args.entries:
                readdir_cost(d, root, export, args.entries)
        finally:
            app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

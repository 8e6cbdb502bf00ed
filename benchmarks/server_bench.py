#!/usr/bin/env python3
"""Ferry's server against NFS-Ganesha, side by side in one run: the user path first, then
Ferry's server models.

``ferry bench server`` runs this script. Two sections:

1. The user path (``userpath.py``, the headline): the default ``ferry serve`` and
   NFS-Ganesha, both exporting directories on the root disk, under third-party clients
   and real workloads: ``nfs-cp`` and libnfs 4 KiB-request reads and writes; GETATTR,
   LOOKUP and ACCESS at 1 and 32 in flight on 1 and 8 connections; READDIRPLUS of a
   50,000-entry directory and ``ls -l`` of it through ``ferry mount``; ``tar -x``, ``find``,
   ``du``, ``rm -r`` of a 5,000-file tree through ``ferry mount`` and the client API; and
   the echo ceiling. Ratios to Ganesha and server CPU beside every figure.
2. Server models (not the user path: tmpfs exports and Ferry's own load generator): every
   model and NFS-Ganesha, each serving its own copy of the export on tmpfs, so disks do not
   decide anything; every measurement runs against each in turn, the order alternating
   between repeats so machine noise hits all alike:

* small calls: GETATTR (of the root) and LOOKUP (of a file) with 1, 8 and 64 concurrent
  clients, each a connection with one call outstanding (``loadgen.small_calls``): ops/s,
  p50/p99 latency, server CPU per call;
* 1 MiB READs and WRITEs (then COMMIT) on one connection with 4 in flight: MB/s;
* idle connections: N connections each answered one NULL and held open; memory per
  connection = (RSS after - RSS before) / the connections kept open (the serial model
  keeps one: it closes an idle connection once another waits) over the server's processes, children
  included (PSS too, which splits pages shared after a fork among the processes).

Load comes from separate client processes (``loadgen``), whose CPU time is reported.
A markdown report (``userpath_report``, ``server_report``) with ratios to Ganesha goes to
stdout and, with ``--write-docs``, is appended to docs/benchmarks.md. Needs NFS-Ganesha
(Debian nfs-ganesha, nfs-ganesha-vfs), rpcbind, libnfs-utils, fuse3, as root. Loopback only.

    python benchmarks/server_bench.py                 # about 20 minutes on 2 cores
    python benchmarks/server_bench.py --quick         # one repeat, 1 s per point
    python benchmarks/server_bench.py --smoke         # every workload, tiny
    python benchmarks/server_bench.py --sections userpath
    python benchmarks/server_bench.py --sections models --targets async,ganesha --seconds 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _sub in ("src", "tests", "tests/server", "tests/protocol", "tests/fuse"):
    sys.path.insert(0, str(REPO / _sub))

import loadgen  # noqa: E402
import server_report as report  # noqa: E402
import userpath  # noqa: E402
import userpath_report  # noqa: E402
from modelserver import start as start_ferry  # noqa: E402
from procstat import cpu_seconds  # noqa: E402
from rawclient import RawClient, nfs_lookup  # noqa: E402

from ferry.nfs3.const import NFS_PROGRAM, NfsProc  # noqa: E402
from ferry.rpc.auth import encode_auth_sys  # noqa: E402
from ferry.rpc.message import NULL_AUTH, CallHeader  # noqa: E402
from ferry.xdr import Packer  # noqa: E402
from helpers import peers  # noqa: E402

MiB = 1 << 20
NCPU = os.cpu_count() or 1
FERRY = {  # target -> ``ferry serve`` arguments
    "serial": ("--model", "serial"),
    "thread": ("--model", "thread"),
    "process": ("--model", "process"),
    "prefork": ("--model", "prefork"),  # its default: max(4, 2 x CPUs) workers
    "async": ("--model", "async", "--workers", "1"),  # one loop (the default runs one per CPU)
    f"async-{NCPU}": ("--model", "async", "--workers", str(NCPU)),
}
TARGETS = (*FERRY, "ganesha")
SECTIONS = ("userpath", "models")
OPS = ("GETATTR", "LOOKUP")


@dataclass
class Server:
    """One running server and the calls prepared for it."""

    name: str
    export: Path
    addr: tuple[str, int]
    pids: Callable[[], list[int]]
    stop: Callable[[], None]
    calls: dict[str, bytes] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    result: report.Row = field(default_factory=report.Row)

    def cpu(self) -> float:
        """CPU seconds used so far by the server's processes."""
        return cpu_seconds(self.pids())


# -- servers -------------------------------------------------------------------------------


def start(name: str, root: Path, size: int, log: list[str]) -> Server:
    export = root / "export"
    export.mkdir(parents=True)
    (export / "hello.txt").write_bytes(b"hello\n")
    with open(export / "read.bin", "wb") as f:
        for i in range(size // MiB):
            f.write(bytes([i % 251]) * MiB)
    (export / "write.bin").write_bytes(b"")
    if name == "ganesha":
        g = peers.GaneshaServer(export, root / "ganesha").start()
        server = Server(name, g.export, ("127.0.0.1", g.nfs_port), lambda: [g.pid or 0], g.stop)
        mount_port = g.mnt_port
    else:
        f = start_ferry(export, root / "state", FERRY[name], root / "ferry.log")
        f.wait_settled()

        def stop() -> None:
            f.stop()
            if "Traceback" in f.stderr():
                log.append(f"{name}: traceback in its log:\n{f.stderr()[-3000:]}")

        server = Server(name, export.resolve(), ("127.0.0.1", f.port), f.pids, stop)
        mount_port = f.port
    prepare_calls(server, mount_port)
    return server


def prepare_calls(server: Server, mount_port: int) -> None:
    """Mount, look up the files, and build every call record the workloads send."""
    with contextlib.closing(RawClient(mount_port)) as m:
        root = m.mount(str(server.export))
    with contextlib.closing(RawClient(server.addr[1])) as c:
        fh = {n: nfs_lookup(c, root, n)[1] for n in ("read.bin", "write.bin")}
    assert all(fh.values()), f"{server.name}: LOOKUP failed"
    calls = server.calls
    calls["NULL"] = call(NfsProc.NULL)
    calls["GETATTR"] = call(NfsProc.GETATTR, opaque(root))
    calls["LOOKUP"] = call(NfsProc.LOOKUP, opaque(root), string(b"hello.txt"))
    head = call(NfsProc.READ, opaque(fh["read.bin"]))
    calls["READ"], server.offsets["READ"] = head + uint64(0) + uint32(MiB), len(head)
    head = call(NfsProc.WRITE, opaque(fh["write.bin"]))
    data = uint64(0) + uint32(MiB) + uint32(0) + opaque(bytes(range(256)) * (MiB // 256))
    calls["WRITE"], server.offsets["WRITE"] = head + data, len(head)
    calls["COMMIT"] = call(NfsProc.COMMIT, opaque(fh["write.bin"]), uint64(0), uint32(0))


def call(proc: int, *args: bytes) -> bytes:
    p = Packer()
    CallHeader(0, 2, NFS_PROGRAM, 3, proc, encode_auth_sys(0, 0), NULL_AUTH).pack(p)
    return p.get_buffer() + b"".join(args)


def opaque(data: bytes) -> bytes:
    return uint32(len(data)) + data + bytes(-len(data) % 4)


def string(data: bytes) -> bytes:
    return opaque(data)


def uint32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def uint64(n: int) -> bytes:
    return n.to_bytes(8, "big")


# -- /proc -----------------------------------------------------------------------------------


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) summed over ``pids``, in KiB."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


# -- measurements ---------------------------------------------------------------------------


def in_turn(servers: list[Server], repeat: int) -> Iterator[tuple[int, Server]]:
    """Every server once per repeat, the order reversed every other repeat."""
    for i in range(repeat):
        for s in servers if i % 2 == 0 else servers[::-1]:
            yield i, s


def measure_calls(servers: list[Server], args: argparse.Namespace) -> None:
    for op in OPS:
        for n in args.clients:
            print(f"server_bench: {op} x{n}", file=sys.stderr, flush=True)
            for _, s in in_turn(servers, args.repeat):
                calls, (cpu0, cpu1) = loadgen.small_calls(
                    s.addr, s.calls[op], n, args.seconds, args.procs, s.cpu
                )
                s.result.calls.setdefault((op, n), []).append((calls, float(cpu1) - float(cpu0)))


def measure_streams(servers: list[Server], args: argparse.Namespace) -> None:
    wrap = args.size_mib
    for op in ("READ", "WRITE"):
        print(f"server_bench: {op} 1 MiB", file=sys.stderr, flush=True)
        for _, s in in_turn(servers, args.repeat):
            commit = s.calls["COMMIT"] if op == "WRITE" else None
            result = loadgen.stream(
                s.addr, s.calls[op], s.offsets[op], wrap * args.passes, wrap, args.window,
                commit, s.cpu,
            )  # fmt: skip
            s.result.streams.setdefault(op, []).append(result)


def measure_idle(servers: list[Server], args: argparse.Namespace) -> None:
    print(f"server_bench: {args.idle} idle connections", file=sys.stderr, flush=True)
    for s in servers:
        before = memory_kib(s.pids())
        with loadgen.hold_idle(s.addr, s.calls["NULL"], args.idle) as (answered, still_open):
            time.sleep(1.0)  # let forked children settle
            after = memory_kib(s.pids())
        rss, pss = after[0] - before[0], after[1] - before[1]
        s.result.idle = report.Idle(still_open, answered, rss, pss, asked=args.idle)


# -- main -------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    u = p.add_argument_group("user path (the default ferry serve vs Ganesha, on disk)")
    u.add_argument("--disk-dir", type=Path, help="where the exports go (default /var/tmp)")
    u.add_argument("--user-size-mib", type=int, default=256, help="nfs-cp file size")
    u.add_argument("--user-small-mib", type=int, default=64, help="4 KiB-request file size")
    u.add_argument("--user-seconds", type=float, default=2.0, help="window per call point")
    u.add_argument("--user-repeat", type=int, default=3, help="runs of every workload")
    u.add_argument("--dir-entries", type=int, default=50_000, help="big directory's size")
    u.add_argument("--tree-files", type=int, default=5_000, help="files in the tar tree")
    p.add_argument("--targets", default=",".join(TARGETS), help=f"models section: {TARGETS}")
    p.add_argument("--seconds", type=float, default=2.0, help="window per small-call point")
    p.add_argument("--clients", default="1,8,64", help="concurrent clients per point")
    p.add_argument("--repeat", type=int, default=3, help="repeats of every measurement")
    p.add_argument("--size-mib", type=int, default=128, help="file read and written")
    p.add_argument("--passes", type=int, default=2, help="times the file is read/written")
    p.add_argument("--window", type=int, default=4, help="1 MiB calls in flight")
    p.add_argument("--idle", type=int, default=200, help="idle connections held open")
    p.add_argument("--procs", type=int, default=2 * NCPU, help="load-generator processes")
    p.add_argument("--quick", action="store_true", help="one repeat, 1 s per point")
    p.add_argument("--smoke", action="store_true", help="every workload, tiny: < 60 s")
    p.add_argument("--workdir", type=Path, help="where exports go (default: tmpfs)")
    p.add_argument(
        "--write-docs", nargs="?", const=REPO / "docs" / "benchmarks.md", type=Path,
        metavar="PATH", help="append the report to PATH (default docs/benchmarks.md)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.seconds, args.repeat = 1.0, 1
        args.user_seconds, args.user_repeat = 1.0, 1
    if args.smoke:
        args.seconds, args.clients, args.repeat = 0.25, "1,8", 1
        args.size_mib, args.passes, args.idle = 8, 1, 16
        args.user_seconds, args.user_repeat, args.user_size_mib = 0.2, 1, 4
        args.user_small_mib, args.dir_entries, args.tree_files = 1, 300, 40
    args.sections = [x for x in args.sections.split(",") if x]
    if not args.sections or set(args.sections) - set(SECTIONS):
        p.error(f"--sections: choose from {', '.join(SECTIONS)}")
    args.clients = [int(c) for c in args.clients.split(",")]
    args.targets = [t for t in args.targets.split(",") if t]
    unknown = set(args.targets) - set(TARGETS)
    if unknown or not args.targets:
        p.error(f"unknown target(s) {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    return args


def tmpfs() -> Path | None:
    """/dev/shm when a tmpfs is mounted there (in a minimal chroot it can be a plain
    directory of /dev, where NFS-Ganesha cannot export); else None (the system's temp)."""
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, where, kind, *_ = line.split()
        if where == "/dev/shm" and kind == "tmpfs":
            return Path(where)
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        need_tools(args)
    except peers.ToolMissing as e:
        print(f"server_bench: {e}", file=sys.stderr)
        return 2
    log: list[str] = []
    texts, errors = [], 0
    if "userpath" in args.sections:
        outcome = userpath.run(args, log)
        texts.append(userpath_report.render(outcome, userpath.settings(args)))
        print(texts[-1], flush=True)
    if "models" in args.sections:
        text, errors = models_section(args, log)
        texts.append(text)
        print(text, flush=True)
    if log or errors:
        print(f"server_bench: {errors} failed calls; problems:\n" + "\n".join(log), file=sys.stderr)
    if args.write_docs is not None:
        with open(args.write_docs, "a") as f:
            f.write("".join("\n" + text + "\n" for text in texts))
        print(f"server_bench: appended to {args.write_docs}", file=sys.stderr)
    return 1 if log or errors else 0


def need_tools(args: argparse.Namespace) -> None:
    """Raises ToolMissing for a tool a chosen section needs."""
    if "userpath" in args.sections or "ganesha" in args.targets:
        peers.need_tool("ganesha.nfsd", "nfs-ganesha")
        peers.need_tool("rpcbind", "rpcbind")
    if "userpath" in args.sections:
        for tool, package in (("nfs-cp", "libnfs-utils"), ("fusermount3", "fuse3"),
                              ("findmnt", "util-linux")):  # fmt: skip
            peers.need_tool(tool, package)


def models_section(args: argparse.Namespace, log: list[str]) -> tuple[str, int]:
    """Every chosen model and Ganesha on tmpfs, Ferry's own load generator: the report and
    the number of failed calls."""
    base = args.workdir or tmpfs()
    work = Path(tempfile.mkdtemp(prefix="ferry-sbench-", dir=base))
    servers: list[Server] = []
    t0, load0 = time.monotonic(), os.getloadavg()
    try:
        for name in args.targets:
            print(f"server_bench: starting {name}", file=sys.stderr, flush=True)
            servers.append(start(name, work / name, args.size_mib * MiB, log))
        measure_idle(servers, args)  # first: before big buffers come and go
        measure_calls(servers, args)
        measure_streams(servers, args)
        drc = report.drc_cost(work / "drc.lock")
    finally:
        for s in servers:
            try:
                s.stop()
            except peers.PeerError as e:
                log.append(f"{s.name} stop: {e}")
        shutil.rmtree(work, ignore_errors=True)
    context = report.Context(args, FERRY, load0, os.getloadavg(), time.monotonic() - t0, drc)
    text = report.render({s.name: s.result for s in servers}, context)
    return text, sum(s.result.errors() for s in servers)


if __name__ == "__main__":
    sys.exit(main())

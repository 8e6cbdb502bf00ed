#!/usr/bin/env python3
"""Profile a server under one user-path load: py-spy stacks and system calls per RPC.

Starts the default ``ferry serve`` (or NFS-Ganesha, for its system calls) on a directory of
the root disk, runs a load on it, and meanwhile either samples the server with py-spy
(``--spy``: raw stacks summarised by ``stacks_top.py``) or counts its system calls with
``strace -c -f`` (``--strace``) or, per thread and with less overhead, ``perf trace -s``
(``--perf``). Loads:

* ``getattr``: GETATTR of the root, ``--conns`` connections x ``--depth`` in flight
  (``pipeline.py``); system calls are divided by the calls answered meanwhile;
* ``nfscp-write``: ``nfs-cp`` of a SIZE MiB file into the export, over and over; system
  calls are divided by the 1 MiB WRITEs (the size nfs-cp sends) made meanwhile;
* ``nfscp-read``: ``nfs-cp`` of a SIZE MiB file out of the export, over and over;
* ``write4k`` / ``read4k``: libnfs ``nfs_pwrite``/``nfs_pread`` of 4 KiB one at a time
  (``libnfs_io.py``) of a 16 MiB file, over and over.

    python benchmarks/profile_server.py getattr --spy "--gil --native"
    python benchmarks/profile_server.py getattr --strace
    python benchmarks/profile_server.py nfscp-write --perf        # per thread, less overhead
    python benchmarks/profile_server.py nfscp-write --strace --server ganesha

Needs py-spy (``pip install py-spy``) or strace; root (to attach). Loopback only; the
load and the sampling are bounded by ``--seconds``.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _sub in ("src", "tests", "tests/protocol", "tests/fuse", "benchmarks"):
    sys.path.insert(0, str(REPO / _sub))

import pipeline  # noqa: E402
import stacks_top  # noqa: E402
import userpath  # noqa: E402
from procstat import cpu_seconds, session_pids  # noqa: E402
from rawclient import RawClient  # noqa: E402

from helpers import peers  # noqa: E402

MiB = 1 << 20


def start(kind: str, work: Path) -> tuple[Any, int, int]:
    """(server, its pid, the port MOUNT answers on)."""
    export = work / "export"
    export.mkdir(parents=True)
    (export / "hello.txt").write_bytes(b"hello\n")
    if kind == "ganesha":
        g = peers.GaneshaServer(export, work / "ganesha").start()
        return g, g.pid or 0, g.mnt_port
    f = peers.FerryServer(export, work / "state", work / "logs",
                          extra_args=peers.FERRY_PEER_ARGS).start()  # fmt: skip
    assert f.proc is not None
    return f, f.proc.pid, f.port


def run_load(args: argparse.Namespace, server: Any, mount_port: int, pids: list[int],
             work: Path, out: dict[str, Any], stop: threading.Event) -> None:  # fmt: skip
    """The load, until ``stop`` (or ``--seconds``): what it did goes to ``out``."""
    if args.load == "getattr":
        with contextlib.closing(RawClient(mount_port)) as m:
            root = m.mount(str(server.export))
        record = userpath.call(1, userpath.opaque(root))
        out["result"] = pipeline.run(
            ("127.0.0.1", server.port),
            record,
            args.conns,
            args.depth,
            args.seconds,
            2,
            lambda: cpu_seconds(pids),
        )
        return
    source = work / "source.bin"
    peers.write_random_file(source, args.size_mib * MiB, seed=3)
    if args.load in ("nfscp-read", "read4k"):
        peers.write_random_file(server.export / "r.bin", args.size_mib * MiB, seed=5)
    nfs_cp = peers.need_tool("nfs-cp", "libnfs-utils")
    io_script = str(REPO / "benchmarks" / "libnfs_io.py")
    copies, deadline = 0, time.monotonic() + args.seconds
    while not stop.is_set() and time.monotonic() < deadline:
        name = f"w{copies}.bin"
        if args.load == "nfscp-write":
            peers.run([nfs_cp, source, server.file_url(name)], timeout=600)
            (server.export / name).unlink()
        elif args.load == "nfscp-read":
            peers.run([nfs_cp, server.file_url("r.bin"), work / name], timeout=600)
            (work / name).unlink()
        else:
            op, rel = ("write", name) if args.load == "write4k" else ("read", "r.bin")
            size = str(min(args.size_mib, 16) * MiB)
            peers.run([sys.executable, io_script, op, server.file_url(rel), size], timeout=600)
            if op == "write":
                (server.export / name).unlink()
        copies += 1
    out["copies"] = copies


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("load", choices=("getattr", "nfscp-write", "nfscp-read", "write4k", "read4k"))
    p.add_argument("--server", choices=("ferry", "ganesha"), default="ferry")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--spy", metavar="OPTIONS", help="py-spy record with these options")
    how.add_argument("--strace", action="store_true", help="strace -c -f the server")
    how.add_argument(
        "--perf",
        action="store_true",
        help="perf trace -s: system calls per thread, with less overhead",
    )
    p.add_argument("--seconds", type=float, default=14.0, help="the load's length")
    p.add_argument("--sample", type=float, default=8.0, help="seconds sampled/traced")
    p.add_argument("--conns", type=int, default=1)
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--out", type=Path, default=Path("."), help="where the raw files go")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ferry-prof-", dir="/var/tmp"))
    server, pid, mount_port = start(args.server, work)
    pids = session_pids([pid]) if args.server == "ferry" else [pid]
    out: dict[str, Any] = {}
    stop = threading.Event()
    load = threading.Thread(target=run_load, args=(args, server, mount_port, pids, work, out, stop))
    try:
        load.start()
        time.sleep(2.0)  # past connection set-up and the first copy's start
        kind = "raw" if args.spy else "perf" if args.perf else "strace"
        raw = args.out / f"{args.load}-{args.server}.{kind}"
        cpu0, t0 = cpu_seconds(pids), time.monotonic()
        if args.spy:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            subprocess.run([spy, "record", "-p", str(pid), "-d", f"{args.sample:g}", "-r", "250",
                            "--threads", "--format", "raw", "-o", str(raw),
                            *shlex.split(args.spy)], check=True)  # fmt: skip
        elif args.perf:
            every = ",".join(map(str, pids))
            subprocess.run(["timeout", "-s", "INT", f"{args.sample:g}", "perf", "trace", "-s",
                            "-p", every, "-o", str(raw)], check=False)  # fmt: skip
        else:
            subprocess.run(["timeout", "-s", "INT", f"{args.sample:g}", "strace", "-c", "-f",
                            "-p", str(pid), "-o", str(raw)], check=False)  # fmt: skip
        cpu, wall = cpu_seconds(pids) - cpu0, time.monotonic() - t0
        stop.set()
        load.join()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"server CPU {cpu:.2f} s over {wall:.1f} s sampled ({cpu / wall:.0%} of a core)")
    if "result" in out:
        r = out["result"][0]
        print(f"load: {r.calls:,} calls in {r.seconds:g} s, {r.ops:,.0f}/s, {r.errors} errors")
    if "copies" in out:
        print(f"load: {out['copies']} copies ({args.load})")
    if args.spy:
        return stacks_top_main([str(raw), "--top", str(args.top)])
    print(raw.read_text())
    return 0


def stacks_top_main(argv: list[str]) -> int:
    sys.argv = ["stacks_top.py", *argv]
    return stacks_top.main()


if __name__ == "__main__":
    sys.exit(main())

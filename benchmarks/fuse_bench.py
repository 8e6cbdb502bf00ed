#!/usr/bin/env python3
"""A FUSE mount (``ferry mount``) against Ferry's client API, over one server on loopback.

One server (Ferry, or NFS-Ganesha with ``--server ganesha``) exports a directory on disk
and one ``ferry mount`` of it stays up for the whole run. Each repeat runs every method
once, the order alternating, so machine noise hits all alike:

  read   a SIZE MiB file: ``dd bs=1M`` and ``cat`` from the mount to /dev/null, cold (the
         file's cached pages dropped first, untimed); the client API into memory:
         ``client.open()`` and ``readinto`` of BLOCK-sized pieces (its fastest way), and
         ``read_file``.
  write  a SIZE MiB file: ``dd bs=1M conv=fsync`` and ``cat >`` from tmpfs into the mount;
         the client API from memory: ``write`` of BLOCK-sized pieces, and ``write_file``.
         Each is durable (COMMIT) before the clock stops: dd's fsync, the close of cat's
         output (FUSE flush) and the API's close.

The API is timed from connect to close; the mount is already up (as a kernel mount would
be). Reported: median MB/s (min–max) per method, the mount's ratios to ``open()``
against the target (70% or better), and the CPU seconds each transfer cost the server,
the mount and the caller, as markdown on stdout and, with --write-docs, appended to
docs/benchmarks.md.

    python benchmarks/fuse_bench.py              # 256 MiB, 5 repeats
    ferry bench fuse --quick                     # 256 MiB, 1 repeat
    ferry bench fuse --quick --size-mib 4        # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "fuse"))
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "src"))

from mounthelp import Mount, start_mount  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ferry_transfers as transfers  # noqa: E402
from machine import machine_line  # noqa: E402
from procstat import cpu_seconds, session_pids  # noqa: E402
from timings import Result, local_dir, timed_read, timed_write, write_docs  # noqa: E402

from helpers import peers  # noqa: E402

MiB, BLOCK = transfers.MiB, transfers.BLOCK
METHODS = ("api", "api-file", "dd", "cat")
MOUNTED = ("dd", "cat")  # compared with "api", the client's fastest way
LABEL = {
    "api": f"client API: open(), {BLOCK // MiB} MiB blocks",
    "api-file": "client API: read_file/write_file",
    "dd": "mount: dd bs=1M (write: conv=fsync)",
    "cat": "mount: cat",
}
OPS = ("read", "write")
TARGET = 0.70


@dataclass
class Env:
    server: peers.FerryServer | peers.GaneshaServer
    mount: Mount
    source: Path  # on tmpfs: what dd and cat write
    data: bytes  # the same bytes in memory: what the API writes
    size: int
    timeout: float
    server_pids: list[int] = field(default_factory=list)  # for its CPU time

    def export_url(self) -> str:
        return self.server.url.replace("/?", "?")


# --------------------------------------------------------------------------- methods


def _run(argv: list[str], env: Env) -> subprocess.CompletedProcess[bytes]:
    return peers.run(argv, timeout=env.timeout)


def _dd_bytes(cp: subprocess.CompletedProcess[bytes]) -> int:
    m = re.search(rb"^(\d+) bytes", cp.stderr, re.M)
    return int(m.group(1)) if m else -1


def api_read(env: Env, name: str) -> int:
    return transfers.open_read(env.export_url(), name, env.size)


def api_write(env: Env, name: str) -> None:
    transfers.open_write(env.export_url(), name, env.data)


def api_file_read(env: Env, name: str) -> int:
    return transfers.file_read(env.export_url(), name)


def api_file_write(env: Env, name: str) -> None:
    transfers.file_write(env.export_url(), name, env.data)


def dd_read(env: Env, name: str) -> int:
    return _dd_bytes(_run(["dd", f"if={env.mount.path / name}", "of=/dev/null", "bs=1M"], env))


def dd_write(env: Env, name: str) -> None:
    dst = env.mount.path / name
    _run(["dd", f"if={env.source}", f"of={dst}", "bs=1M", "conv=fsync"], env)


def cat_read(env: Env, name: str) -> int:
    _run(["sh", "-c", 'cat "$1" > /dev/null', "sh", str(env.mount.path / name)], env)
    return env.size  # checked once, by sha256, before the timed runs


def cat_write(env: Env, name: str) -> None:
    _run(["sh", "-c", 'cat "$1" > "$2"', "sh", str(env.source), str(env.mount.path / name)], env)


READERS: dict[str, Callable[[Env, str], int]] = {
    "api": api_read, "api-file": api_file_read, "dd": dd_read, "cat": cat_read,
}  # fmt: skip
WRITERS: dict[str, Callable[[Env, str], None]] = {
    "api": api_write, "api-file": api_file_write, "dd": dd_write, "cat": cat_write,
}  # fmt: skip


# --------------------------------------------------------------------------- measure


def measure(env: Env, method: str, op: str, i: int, digest: str, res: Result) -> float:
    """One timed transfer, checked outside the timing (sha256 of writes the first time);
    what it cost each side in CPU goes to ``res.cpu``."""
    meter = cpu_of_sides(env, res.cpu)
    if op == "read":
        if method in MOUNTED:
            drop_cached(env.mount.path / "read.bin")
        return timed_read(partial(READERS[method], env, "read.bin"), env.size, meter)
    name = f"write-{method}-{i}.bin"
    write, check = partial(WRITERS[method], env, name), digest if i == 0 else None
    return timed_write(write, env.server.export / name, env.size, check, meter)


SIDES = ("server", "mount", "caller")


def cpu_now(env: Env) -> dict[str, float]:
    """CPU seconds used so far by the server, the mount, and the caller: this process
    (where the API runs) with the children it has waited for (dd, cat)."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return {
        "server": cpu_seconds(env.server_pids),
        "mount": cpu_seconds([env.mount.proc.pid]),
        "caller": me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime,
    }


@contextlib.contextmanager
def cpu_of_sides(env: Env, into: dict[str, list[float]]) -> Iterator[None]:
    """What the transfer inside cost each side, appended to ``into`` if it succeeded."""
    start = cpu_now(env)
    yield
    for side, secs in cpu_now(env).items():
        into.setdefault(side, []).append(secs - start[side])


def drop_cached(path: Path) -> None:
    """Start a read through the mount cold: an open keeps the pages of a file that has not
    changed (as the kernel NFS client does), so the previous read's are dropped first."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm_up(env: Env, digest: str) -> None:
    """Server page cache, mount and connections warm; the mount reads the right bytes."""
    api_read(env, "read.bin")
    if peers.sha256_file(env.mount.path / "read.bin") != digest:
        raise peers.PeerError("the mount reads different bytes than the export holds")


def run_all(
    env: Env, repeat: int, read_digest: str, log: list[str]
) -> dict[str, dict[str, Result]]:
    results = {m: {op: Result() for op in OPS} for m in METHODS}
    write_digest = hashlib.sha256(env.data).hexdigest()
    for op in OPS:
        print(f"fuse_bench: {op} x{repeat}", file=sys.stderr, flush=True)
        for i in range(repeat):
            order = METHODS if i % 2 == 0 else METHODS[::-1]
            for method in order:
                res = results[method][op]
                if res.error:
                    continue
                digest = read_digest if op == "read" else write_digest
                try:
                    res.seconds.append(measure(env, method, op, i, digest, res))
                except Exception as e:  # noqa: BLE001 - reported in the table
                    res.error = str(e).splitlines()[0] if str(e) else type(e).__name__
                    log.append(f"{method} {op}: {e!r}")
    return results


# --------------------------------------------------------------------------- report


def ratios(results: dict[str, dict[str, Result]], size: int) -> dict[tuple[str, str], float]:
    """mount method / API, per operation, where both were measured."""
    out = {}
    for method in MOUNTED:
        for op in OPS:
            a, b = results[method][op], results["api"][op]
            if a.seconds and b.seconds and not a.error and not b.error:
                out[(method, op)] = a.rate(size) / b.rate(size)
    return out


def paired(mount: Result, api: Result) -> list[float]:
    """mount / API within each repeat, where the two ran back to back: a slow spell of the
    machine (this VM has them, seconds long) then hits both sides of a ratio alike."""
    if mount.error or api.error or len(mount.seconds) != len(api.seconds):
        return []
    return [b / a for a, b in zip(mount.seconds, api.seconds, strict=True)]


def ratio_cell(ratio: float | None, pairs: list[float]) -> str:
    if ratio is None:
        return "–"
    if len(pairs) < 2:
        return f"{ratio:.2f}"
    mid, lo, hi = statistics.median(pairs), min(pairs), max(pairs)
    return f"{ratio:.2f} (per repeat {mid:.2f}, {lo:.2f}–{hi:.2f})"


def cpu_table(results: dict[str, dict[str, Result]]) -> list[str]:
    """Median CPU seconds per transfer of each side, and their sum: on a machine with
    fewer cores than busy sides, the sum bounds the speed."""
    out = ["", f"| CPU seconds per transfer (median) | {' | '.join(SIDES)} | sum |",
           "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for op in OPS:
        for m in ("api", *MOUNTED):
            cpu = results[m][op].cpu
            if results[m][op].error or not all(cpu.get(side) for side in SIDES):
                continue
            mids = [statistics.median(cpu[side]) for side in SIDES]
            cells = " | ".join(f"{v:.3f}" for v in [*mids, sum(mids)])
            out.append(f"| {m} {op} | {cells} |")
    out += ["", "CPU: user + system seconds from /proc (server, mount; 10 ms ticks) and "
            "getrusage (the caller: this process, where the API runs, and dd or cat)."]  # fmt: skip
    return out


def render(results: dict[str, dict[str, Result]], args: argparse.Namespace, export: Path,
           source: Path) -> str:  # fmt: skip
    size = args.size_mib * MiB
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    server = "NFS-Ganesha (VFS)" if args.server == "ganesha" else "Ferry (`ferry serve`)"
    opts = f"`{args.mount_args}`" if args.mount_args else "default options"
    out = [f"## FUSE mount vs client API, {now}", ""]
    out.append(
        f"`ferry bench fuse` (`benchmarks/fuse_bench.py`): loopback, one {server} exporting "
        f"`{export}`, one `ferry mount` of it ({opts}); {args.size_mib} MiB "
        f"file, median of {args.repeat} run(s) (seconds: median, min–max), methods "
        f"alternating. Reads go to /dev/null (API: memory) and start cold (the mount's cached "
        f"pages of the file dropped first, untimed); writes come from `{source}` "
        f"(API: memory) and are COMMITted before the clock stops. The API is timed from "
        f"connect to close. Target: the mount at {TARGET:.0%} of the API or better."
    )
    out += ["", "| method | read | write |", "| --- | --- | --- |"]
    for m in METHODS:
        out.append(f"| {LABEL[m]} | {results[m]['read'].cell(size)} | "
                   f"{results[m]['write'].cell(size)} |")  # fmt: skip
    r = ratios(results, size)
    out += ["", "| mount / API open() | read | write |", "| --- | --- | --- |"]
    for m in MOUNTED:
        cells = [ratio_cell(r.get((m, op)), paired(results[m][op], results["api"][op]))
                 for op in OPS]  # fmt: skip
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    if args.repeat > 1:
        out += ["", "Ratios: of the median rates; in brackets the median and range of the "
                "ratios within each repeat, where the mount's run and the API's ran back to "
                "back."]  # fmt: skip
    out += cpu_table(results)
    out += [
        "",
        machine_line("libfuse3-3", *(["nfs-ganesha"] if args.server == "ganesha" else [])),
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ferry bench fuse", description=__doc__.split("\n")[1])
    p.add_argument("--quick", action="store_true", help="one repeat instead of five")
    p.add_argument("--repeat", type=int, default=None, help="repeats per measurement (5)")
    p.add_argument("--size-mib", type=int, default=256, help="file size (MiB, default 256)")
    p.add_argument("--server", choices=("ferry", "ganesha"), default="ferry")
    p.add_argument("--mount-args", default="", help="options for ferry mount, one string")
    p.add_argument("--workdir", type=Path, help="export and mount point (default /var/tmp)")
    p.add_argument("--local-dir", type=Path, help="dd's and cat's source (default /dev/shm)")
    p.add_argument("--timeout", type=float, default=600.0, help="per transfer, seconds")
    p.add_argument("--write-docs", nargs="?", const=REPO_ROOT / "docs" / "benchmarks.md",
                   type=Path, default=None, metavar="PATH",
                   help="append the report to PATH (default docs/benchmarks.md)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 5
    if args.repeat < 1 or args.size_mib < 1:
        p.error("--repeat and --size-mib must be >= 1")
    return args


def _server(args: argparse.Namespace, workdir: Path) -> peers.FerryServer | peers.GaneshaServer:
    if args.server == "ganesha":
        peers.need_tool("ganesha.nfsd", "nfs-ganesha")
        peers.need_tool("rpcbind", "rpcbind")
        return peers.GaneshaServer(workdir / "export", workdir / "ganesha")
    return peers.FerryServer(
        workdir / "export", workdir / "state", workdir / "logs", extra_args=peers.FERRY_PEER_ARGS
    )


def _server_pids(server: peers.FerryServer | peers.GaneshaServer) -> list[int]:
    """The server's processes: NFS-Ganesha's one, or Ferry's session (its workers)."""
    if isinstance(server, peers.GaneshaServer):
        return [server.pid] if server.pid is not None else []
    return session_pids([server.proc.pid]) if server.proc is not None else []


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        for tool, package in (("fusermount3", "fuse3"), ("dd", "coreutils")):
            peers.need_tool(tool, package)
        size = args.size_mib * MiB
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ferry-fbench-", dir="/var/tmp"))
        server = _server(args, workdir)
    except peers.ToolMissing as e:
        print(f"fuse_bench: {e}", file=sys.stderr)
        return 2
    local = local_dir(args.local_dir, size, workdir, "ferry-fbench-")
    log: list[str] = []
    t0 = time.monotonic()
    mount: Mount | None = None
    try:
        server.export.mkdir(parents=True, exist_ok=True)
        read_digest = peers.write_random_file(server.export / "read.bin", size, seed=7)
        peers.write_random_file(local / "source.bin", size, seed=11)
        print(f"fuse_bench: starting {args.server} and the mount", file=sys.stderr, flush=True)
        server.start()
        mount = start_mount(server, workdir / "mnt", *shlex.split(args.mount_args))
        source = local / "source.bin"
        env = Env(server, mount, source, source.read_bytes(), size, args.timeout)
        env.server_pids = _server_pids(server)
        warm_up(env, read_digest)
        results = run_all(env, args.repeat, read_digest, log)
    finally:
        try:
            if mount is not None and mount.stop() != 0:
                log.append(f"ferry mount failed:\n{mount.text()}")
        finally:
            server.stop()
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
                shutil.rmtree(local, ignore_errors=True)
    report = render(results, args, server.export, local)
    print(report, flush=True)
    print(f"fuse_bench: done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    if log:
        print("fuse_bench: problems:\n" + "\n".join(log), file=sys.stderr)
    if args.write_docs is not None:
        write_docs(report, args.write_docs)
        print(f"fuse_bench: appended to {args.write_docs}", file=sys.stderr)
    failed = log or any(r.error for rs in results.values() for r in rs.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Ferry vs NFS-Ganesha on loopback, same client (libnfs-utils), one run.

Measures, for each server:
  * sequential read of a SIZE MiB file   (nfs-cp nfs://.../file  LOCAL)
  * sequential write of a SIZE MiB file  (nfs-cp LOCAL  nfs://.../new-file)
  * listing a directory of ENTRIES files (nfs-ls, which uses READDIRPLUS; count verified)

Each is repeated N times; the median is reported as a markdown table with
Ferry/Ganesha ratios (> 1 means Ferry is faster) and machine details, on stdout and,
with --write-docs, appended to docs/benchmarks.md.

Needs Debian packages libnfs-utils, nfs-ganesha, nfs-ganesha-vfs, rpcbind (as root:
Ganesha binds its ports and registers with rpcbind). Only loopback is used.

    python benchmarks/server_bench.py            # 256 MiB, 50,000 entries, 3 repeats
    python benchmarks/server_bench.py --quick    # 1 repeat
    python benchmarks/server_bench.py --size-mib 4 --entries 500 --repeat 1   # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from helpers import peers  # noqa: E402

MiB = 1 << 20
SERVERS = ("ferry", "ganesha")
LABEL = {"ferry": "Ferry", "ganesha": "NFS-Ganesha"}


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    amount: float = 0.0  # bytes (MB/s) or entries (entries/s)
    unit: str = "MB/s"
    error: str | None = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rate(self) -> float:
        div = 1e6 if self.unit == "MB/s" else 1.0
        return self.amount / div / self.median_s if self.seconds else 0.0

    def cell(self) -> str:
        if self.error:
            return f"failed: {self.error}"
        if not self.seconds:
            return "not run"
        rate = f"{self.rate:,.1f}" if self.unit == "MB/s" else f"{self.rate:,.0f}"
        spread = ""
        if len(self.seconds) > 1:
            spread = f", {min(self.seconds):.3f}–{max(self.seconds):.3f}"
        return f"{rate} {self.unit} ({self.median_s:.3f} s{spread})"


# --------------------------------------------------------------------------- setup


def make_listing_dir(path: Path, entries: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for i in range(entries):
        fd = os.open(path / f"entry-{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644)
        os.close(fd)


def prepare_export(export: Path, size: int, entries: int) -> str:
    export.mkdir(parents=True, exist_ok=True)
    digest = peers.write_random_file(export / "read.bin", size, seed=7)
    make_listing_dir(export / "listing", entries)
    return digest


def start_server(name: str, root: Path) -> peers.FerryServer | peers.GaneshaServer:
    export = root / "export"
    if name == "ferry":
        return peers.FerryServer(
            export, root / "state", root / "logs", extra_args=peers.FERRY_PEER_ARGS
        ).start()
    return peers.GaneshaServer(export, root / "ganesha").start()


def timed(argv: list[str], timeout: float) -> tuple[float, subprocess.CompletedProcess[bytes]]:
    t0 = time.perf_counter()
    cp = peers.run(argv, timeout=timeout)
    return time.perf_counter() - t0, cp


# --------------------------------------------------------------------------- measure

OPS = ("read", "write", "list")


@dataclass
class Target:
    name: str
    root: Path
    read_digest: str = ""
    server: peers.FerryServer | peers.GaneshaServer | None = None
    results: dict[str, Result] = field(default_factory=dict)


def measure_once(
    t: Target, op: str, i: int, local: Path, size: int, entries: int, src_digest: str,
    timeout: float,
) -> float:  # fmt: skip
    """One timed client run; verifies the outcome (outside the timing). Raises PeerError."""
    assert t.server is not None
    nfs_cp = peers.need_tool("nfs-cp", "libnfs-utils")
    nfs_ls = peers.need_tool("nfs-ls", "libnfs-utils")
    if op == "read":
        dst = local / f"{t.name}-read.bin"
        dst.unlink(missing_ok=True)
        secs, _ = timed([nfs_cp, t.server.file_url("read.bin"), str(dst)], timeout)
        got = dst.stat().st_size
        if got != size:
            raise peers.PeerError(f"read copy has {got} bytes, not {size}")
        if i == 0 and peers.sha256_file(dst) != t.read_digest:
            raise peers.PeerError("read copy differs from the file on the export")
        dst.unlink()
        return secs
    if op == "write":
        target = t.server.export / f"write-{i}.bin"
        secs, _ = timed(
            [nfs_cp, str(local / "source.bin"), t.server.file_url(target.name)], timeout
        )
        got = target.stat().st_size
        if got != size:
            raise peers.PeerError(f"written file has {got} bytes, not {size}")
        if i == 0 and peers.sha256_file(target) != src_digest:
            raise peers.PeerError("written file differs from the source")
        return secs
    secs, cp = timed([nfs_ls, t.server.file_url("listing/")], timeout)
    n = len(peers.parse_nfs_ls(cp.stdout.decode(errors="replace")))
    if n != entries:
        raise peers.PeerError(f"nfs-ls listed {n} entries, expected {entries}")
    return secs


def run_benchmarks(
    names: list[str], workdir: Path, local: Path, size: int, entries: int, repeat: int,
    src_digest: str, timeout: float, log: list[str],
) -> dict[str, dict[str, Result]]:  # fmt: skip
    """All servers run at once; repeats alternate between them so that machine noise
    (other load, page cache, CPU frequency) hits both alike."""
    targets = [Target(n, workdir / n) for n in names]
    for t in targets:
        t.results = {
            "read": Result(amount=size),
            "write": Result(amount=size),
            "list": Result(amount=entries, unit="entries/s"),
        }
        t.read_digest = prepare_export(t.root / "export", size, entries)
    try:
        for t in targets:
            print(f"server_bench: starting {LABEL[t.name]}", file=sys.stderr, flush=True)
            try:
                t.server = start_server(t.name, t.root)
                nfs_ls = peers.need_tool("nfs-ls", "libnfs-utils")
                peers.run([nfs_ls, t.server.url], timeout=timeout)  # warm-up: MNT, connect
            except peers.PeerError as e:
                for r in t.results.values():
                    r.error = str(e).splitlines()[0]
                log.append(f"{t.name}: start failed:\n{e}")
                t.server = None
        for op in OPS:
            print(f"server_bench: {op} x{repeat}", file=sys.stderr, flush=True)
            for i in range(repeat):
                order = targets if i % 2 == 0 else targets[::-1]
                for t in order:
                    res = t.results[op]
                    if t.server is None or res.error:
                        continue
                    try:
                        res.seconds.append(
                            measure_once(t, op, i, local, size, entries, src_digest, timeout)
                        )
                    except (peers.PeerError, OSError) as e:
                        res.error = str(e).splitlines()[0]
                        log.append(f"{t.name} {op}: {e}")
    finally:
        for t in targets:
            if t.server is None:
                continue
            try:
                t.server.stop()
            except peers.PeerError as e:
                log.append(f"{t.name} stop: {e}")
            if isinstance(t.server, peers.FerryServer):
                tb = t.server.tracebacks()
                if tb:
                    log.append(f"ferry wrote a traceback to stderr:\n{tb[-4000:]}")
                    for r in t.results.values():
                        r.error = r.error or "server traceback (see stderr)"
                log.extend(t.server.problems)
    return {t.name: t.results for t in targets}


# --------------------------------------------------------------------------- report


def _cmd(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine_info() -> list[tuple[str, str]]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def pkg(name: str) -> str:
        return _cmd(["dpkg-query", "-W", "-f=${Version}", name]) or "not installed"

    rev = _cmd(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]) or "uncommitted"
    dirty = _cmd(["git", "-C", str(REPO_ROOT), "status", "--porcelain"])
    return [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
        ("nfs-ganesha", pkg("nfs-ganesha")),
        ("libnfs-utils", pkg("libnfs-utils")),
        ("Ferry", rev + (" (+ local changes)" if dirty else "")),
    ]


def render(results: dict[str, dict[str, Result]], args: argparse.Namespace, servers: list[str],
           local: Path) -> str:  # fmt: skip
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    rows = [
        ("read", f"sequential read {args.size_mib} MiB (nfs-cp)"),
        ("write", f"sequential write {args.size_mib} MiB (nfs-cp)"),
        ("list", f"list {args.entries:,} entries (nfs-ls, READDIRPLUS)"),
    ]
    out = [f"## Ferry vs NFS-Ganesha, {now}", ""]
    out.append(
        f"Loopback, same client for both (libnfs-utils `nfs-cp` / `nfs-ls`), median of "
        f"{args.repeat} run(s) (seconds: median, min–max), servers running side by side "
        f"with repeats alternating between them; copy destination and write source on "
        f"`{local}`. Ratio > 1 means Ferry is faster."
    )
    out.append("")
    out.append("| operation | " + " | ".join(LABEL[s] for s in servers) + " | Ferry/Ganesha |")
    out.append("| --- " * (len(servers) + 2) + "|")
    for key, label in rows:
        cells = [results[s][key].cell() for s in servers]
        ratio = "–"
        if set(SERVERS) <= set(servers):
            f, g = results["ferry"][key], results["ganesha"][key]
            if f.seconds and g.seconds and not f.error and not g.error and g.rate > 0:
                ratio = f"{f.rate / g.rate:.2f}"
        out.append(f"| {label} | " + " | ".join(cells) + f" | {ratio} |")
    out.append("")
    out.append("Machine: " + ", ".join(f"{k} {v}" for k, v in machine_info()) + ".")
    out.append("")
    return "\n".join(out)


def write_docs(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(
            "# Benchmarks\n\nWritten by `benchmarks/server_bench.py --write-docs` "
            "(`make bench BENCH_ARGS=--write-docs`); newest last.\n\n"
        )
    with open(path, "a") as f:
        f.write(text + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="one repeat instead of three")
    p.add_argument("--repeat", type=int, default=None, help="repeats per measurement (default 3)")
    p.add_argument("--size-mib", type=int, default=256, help="read/write file size (MiB)")
    p.add_argument("--entries", type=int, default=50_000, help="entries in the listed directory")
    p.add_argument("--servers", default="ferry,ganesha", help="comma list of: ferry,ganesha")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where exports go (default: a new dir under /var/tmp, on disk)",
    )
    p.add_argument(
        "--local-dir",
        type=Path,
        default=None,
        help="where nfs-cp copies to/from (default: tmpfs /dev/shm if usable)",
    )
    p.add_argument("--timeout", type=float, default=900.0, help="per client command, seconds")
    p.add_argument(
        "--write-docs",
        nargs="?",
        const=REPO_ROOT / "docs" / "benchmarks.md",
        type=Path,
        default=None,
        metavar="PATH",
        help="append the report to PATH (default docs/benchmarks.md)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat < 1 or args.size_mib < 0 or args.entries < 0:
        p.error("--repeat must be >= 1, sizes >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown or not servers:
        print(f"unknown server(s) {sorted(unknown)}; choose from {SERVERS}", file=sys.stderr)
        return 2
    try:
        for tool, pkg in [("nfs-cp", "libnfs-utils"), ("nfs-ls", "libnfs-utils")]:
            peers.need_tool(tool, pkg)
        if "ganesha" in servers:
            peers.need_tool("ganesha.nfsd", "nfs-ganesha")
            peers.need_tool("rpcbind", "rpcbind")
    except peers.ToolMissing as e:
        print(f"server_bench: {e}", file=sys.stderr)
        return 2

    size = args.size_mib * MiB
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ferry-bench-", dir="/var/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    if args.local_dir is not None:
        local = args.local_dir
    elif Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 3 * size + 64 * MiB:
        local = Path(tempfile.mkdtemp(prefix="ferry-bench-", dir="/dev/shm"))
    else:
        local = workdir / "local"
    local.mkdir(parents=True, exist_ok=True)

    log: list[str] = []
    results: dict[str, dict[str, Result]] = {}
    t0 = time.monotonic()
    try:
        src_digest = peers.write_random_file(local / "source.bin", size, seed=11)
        results = run_benchmarks(servers, workdir, local, size, args.entries, args.repeat,
                                 src_digest, args.timeout, log)  # fmt: skip
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(local, ignore_errors=True)
    report = render(results, args, servers, local)
    print(report, flush=True)
    print(f"server_bench: done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    if log:
        print("server_bench: problems:\n" + "\n".join(log), file=sys.stderr)
    if args.write_docs is not None:
        write_docs(report, args.write_docs)
        print(f"server_bench: appended to {args.write_docs}", file=sys.stderr)
    failed = any(r.error for rs in results.values() for r in rs.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

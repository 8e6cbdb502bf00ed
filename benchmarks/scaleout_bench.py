#!/usr/bin/env python3
"""1, 2 and 3 NFS servers in front of one throwaway Ceph cluster (CephFS), side by side.

One cluster (tests/helpers/ceph.py: mon + OSD on a sparse bluestore file + MDS) serves every
configuration of the run: Ferry (``ferry serve --config``, one handle key, the chosen
model) and NFS-Ganesha with FSAL_CEPH (Debian nfs-ganesha-ceph; left out, and said so, when
it is not installed), each with 1, 2 and 3 servers on their own loopback ports. CLIENTS
client processes are spread over the servers (client i talks to server i mod n) and run
at once; per configuration, the median of REPEAT rounds of:

  write   every client ``nfs-cp`` (libnfs, C) a SIZE MiB file from tmpfs to the server:
          aggregate MB/s = all bytes / wall time from the first start to the last exit
  read    every client ``nfs-cp`` its file back to tmpfs (checked by sha256 afterwards),
          through the server that wrote it, or with ``--cross-read`` through the next
          one (client i writes through server i mod n, reads through i+1 mod n): then
          no read is served from the writing server's cache
  getattr every client a Ferry client process making OPS GETATTR calls, 16 in flight,
          started together after a barrier: aggregate calls/s over the common wall time

Besides the rates, the CPU seconds spent in each group (Ceph daemons, NFS servers,
clients) during each phase are recorded: on a machine with few cores they show where the
time went, and why adding servers cannot add throughput when everything shares the cores.

With ``--servers HOST:PORT,HOST:PORT,...`` nothing is started: the phases run against
servers already running (on real machines, say), with the first 1, 2, ... n of them,
exporting ``--export``; only the clients' CPU is measured then.

    python benchmarks/scaleout_bench.py                 # 64 MiB x 3 clients, 3 repeats
    python benchmarks/scaleout_bench.py --quick         # 16 MiB, 1 repeat, 2,000 calls
    ferry bench scaleout --servers 1,2 --peers ferry --size-mib 4 --ops 200 --repeat 1
    ferry bench scaleout --servers 10.0.0.1:2049,10.0.0.2:2049 --export /ceph --cross-read
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for _p in (
    REPO_ROOT / "src",
    REPO_ROOT / "tests",
    REPO_ROOT / "tests" / "ceph",
    REPO_ROOT / "benchmarks",
):
    sys.path.insert(0, str(_p))

import cpu_caps  # noqa: E402
import link_caps  # noqa: E402
from ceph_support import ConfiguredFerry, write_config  # noqa: E402
from procstat import cpu_seconds, session_pids  # noqa: E402

import ferry  # noqa: E402
from helpers import peers  # noqa: E402
from helpers.ceph import CephCluster  # noqa: E402

MiB = 1 << 20
PEERS = ("ferry", "ganesha")
BENCH_DIR = "/bench"  # the CephFS directory every server exports (--dir)
FSAL_CEPH = ("/usr/lib/x86_64-linux-gnu/ganesha/libfsalceph.so", "/usr/lib/ganesha/libfsalceph.so")
GANESHA_CEPH_CONF = """\
NFS_CORE_PARAM {{ Protocols = 3; NFS_Port = {nfs_port}; MNT_Port = {mnt_port};
  Bind_Addr = {host}; Enable_NLM = false; Enable_RQUOTA = false; Enable_UDP = false; }}
NFSV4 {{ Graceless = true; }}
NFS_KRB5 {{ Active_krb5 = false; }}
MDCACHE {{ Dir_Chunk = 0; }}
CEPH {{ Ceph_Conf = "{ceph_conf}"; }}
EXPORT {{ Export_Id = {export_id}; Path = "{path}"; Pseudo = "{path}"; Access_Type = RW;
  Squash = No_Root_Squash; Attr_Expiration_Time = 0; Protocols = 3; Transports = TCP;
  SecType = sys; FSAL {{ Name = CEPH; User_Id = "admin"; }} }}
"""
GETATTR_CLIENT = textwrap.dedent(
    """
    import asyncio, sys, time
    from ferry.client import AsyncNfsClient
    url, name, ops = sys.argv[1], sys.argv[2], int(sys.argv[3])
    async def main():
        c = await AsyncNfsClient.connect(url, attr_cache=0)
        try:
            fh, _ = await c.resolve(name)
            print("ready", flush=True)
            sys.stdin.readline()
            t0 = time.time()
            for _ in range(ops // 16):
                await asyncio.gather(*(c.nfs.getattr(fh) for _ in range(16)))
            print(t0, time.time(), flush=True)
        finally:
            await c.close()
    asyncio.run(main())
    """
)


# --------------------------------------------------------------------------- servers


@dataclasses.dataclass
class Group:
    """Running servers of one kind: a URL per server for libnfs and for Ferry's client."""

    kind: str
    n: int
    file_url: list[Callable[[str], str]]
    nfs_url: list[str]
    pids: Callable[[], list[int]]
    stop: Callable[[], None]
    ports: list[list[int]]  # per server: the ports its clients talk to
    each_pids: Callable[[], list[list[int]]]  # per server: its processes


def start_ferry(
    cluster: CephCluster, n: int, base: Path, server: dict[str, object], where: str
) -> Group:
    export = (where, "cephfs", {"conf": str(cluster.conf), "op_timeout": 60})
    base.mkdir(parents=True, exist_ok=True)
    config = write_config(base / "shared.toml", export, os.urandom(32), **server)
    servers = [ConfiguredFerry(config, base, f"s{i}") for i in range(n)]

    def stop() -> None:
        for s in servers:
            s.stop()
        for s in servers:
            if s.tracebacks():
                print(
                    f"scaleout_bench: ferry traceback:\n{s.tracebacks()[-3000:]}", file=sys.stderr
                )

    try:
        for s in servers:
            s.ready_timeout = 60
            s.start()
    except BaseException:
        stop()
        raise
    return Group(
        "ferry", n, [s.file_url for s in servers], [s.nfs_url for s in servers],
        lambda: session_pids([s.proc.pid for s in servers if s.proc is not None]), stop,
        [[s.port] for s in servers],
        lambda: [session_pids([s.proc.pid]) if s.proc else [] for s in servers],
    )  # fmt: skip


def given_servers(addresses: list[tuple[str, int, int]], n: int, export: str, label: str) -> Group:
    """The first ``n`` of servers already running (``--servers HOST:PORT[:MOUNTPORT],...``):
    nothing to start or stop, and their CPU is not ours to measure."""
    chosen = addresses[:n]

    def file_url(host: str, nfs: int, mnt: int) -> Callable[[str], str]:
        return lambda rel: peers.libnfs_url(host, export, rel, nfs, mnt)

    return Group(
        label, n, [file_url(*a) for a in chosen],
        [f"nfs://{h}{export}?nfsport={p}&mountport={m}" for h, p, m in chosen],
        lambda: [], lambda: None, [[p, m] for _, p, m in chosen], lambda: [[] for _ in chosen],
    )  # fmt: skip


def ganesha_missing() -> str | None:
    """Why Ganesha's FSAL_CEPH cannot run here, or None."""
    if peers.find_tool("ganesha.nfsd") is None:
        return peers.tool_missing_message("ganesha.nfsd", "nfs-ganesha")
    if not any(Path(p).exists() for p in FSAL_CEPH):
        return peers.tool_missing_message("libfsalceph.so (FSAL_CEPH)", "nfs-ganesha-ceph")
    return None


class CephGanesha(peers.GaneshaServer):
    """NFS-Ganesha exporting a CephFS directory through FSAL_CEPH (NFSv3 only)."""

    def __init__(self, cluster: CephCluster, workdir: Path, export_id: int, where: str) -> None:
        super().__init__(Path(where), workdir, ready_timeout=60)
        self.export_id = export_id
        self.export = Path(where)  # a CephFS path, not a local one
        self.cluster = cluster

    def start(self) -> CephGanesha:
        exe = peers.need_tool("ganesha.nfsd", "nfs-ganesha")
        peers.ensure_rpcbind()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            GANESHA_CEPH_CONF.format(
                nfs_port=self.nfs_port,
                mnt_port=self.mnt_port,
                host=self.host,
                ceph_conf=self.cluster.conf,
                path=self.export,
                export_id=self.export_id,
            )  # fmt: skip
        )
        for p in (self.log, self.pidfile):
            p.unlink(missing_ok=True)
        argv = [exe, "-f", self.conf, "-L", self.log, "-p", self.pidfile, "-N", "NIV_EVENT"]
        peers.run(argv, timeout=30)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.pid is None and self.pidfile.exists():
                with contextlib.suppress(ValueError, OSError):
                    self.pid = int(self.pidfile.read_text().strip())
            up = "NFS SERVER INITIALIZED" in self.log_tail() and self.pid is not None
            if up and peers.wait_until(lambda: peers.port_accepts(self.host, self.nfs_port), 10):
                return self
            time.sleep(0.1)
        self.stop()
        raise peers.PeerError(f"ganesha (FSAL_CEPH) did not start; log:\n{self.log_tail()}")


def start_ganesha(cluster: CephCluster, n: int, base: Path, where: str) -> Group:
    # FSAL_CEPH names its CephFS session "ganesha-<nodeid>-<export id>" and, starting,
    # resets (evicts) any session of that name: with one Export_Id, a second instance on
    # this host would evict the first (its calls then fail with ESHUTDOWN/SERVERFAULT).
    servers = [CephGanesha(cluster, base / f"g{i}", i + 1, where) for i in range(n)]

    def stop() -> None:
        for s in servers:
            with contextlib.suppress(peers.PeerError):
                s.stop()
            if os.environ.get("SCALEOUT_LOGS"):
                bad = [
                    ln
                    for ln in s.log.read_text(errors="replace").splitlines()
                    if ":EVENT :" not in ln
                ]
                print(f"--- {s.log} ---\n" + "\n".join(bad[-30:]), file=sys.stderr)

    try:
        for s in servers:
            s.start()
    except BaseException:
        stop()
        raise
    urls = [f"nfs://{s.host}{where}?nfsport={s.nfs_port}&mountport={s.mnt_port}" for s in servers]
    return Group(
        "ganesha", n, [s.file_url for s in servers], urls,
        lambda: session_pids([s.pid for s in servers if s.pid is not None]), stop,
        [[s.nfs_port, s.mnt_port] for s in servers],
        lambda: [session_pids([s.pid]) if s.pid else [] for s in servers],
    )  # fmt: skip


# --------------------------------------------------------------------------- phases


@dataclasses.dataclass
class Phase:
    """One round of one phase: the aggregate rate and where the CPU went."""

    rate: float  # MB/s or calls/s
    seconds: float
    cpu: dict[str, float]  # group -> CPU seconds during the phase


class Meter:
    """CPU seconds of the Ceph daemons, the NFS servers and our child processes."""

    def __init__(self, cluster: CephCluster | None, group: Group) -> None:
        self.cluster, self.group = cluster, group

    def sample(self) -> dict[str, float]:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        ceph = cpu_seconds([p.pid for p in self.cluster.procs.values()]) if self.cluster else 0.0
        return {"ceph": ceph, "servers": cpu_seconds(self.group.pids()),
                "clients": ru.ru_utime + ru.ru_stime}  # fmt: skip

    @contextlib.contextmanager
    def phase(self, out: dict[str, float]) -> Iterator[None]:
        before = self.sample()
        yield
        after = self.sample()
        out.update({k: round(after[k] - before[k], 2) for k in after})


def run_all(argvs: list[list[str]], timeout: float) -> float:
    """Start every command at once; wall seconds until the last one exits (0 each)."""
    t0 = time.monotonic()
    procs = [subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for a in argvs]
    for p, a in zip(procs, argvs, strict=True):
        try:
            _, err = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
                q.wait()
            raise peers.PeerError(f"timed out after {timeout}s: {' '.join(a)}") from None
        if p.returncode != 0:
            raise peers.PeerError(f"exit {p.returncode}: {' '.join(a)}\n{err.decode()[-2000:]}")
    return time.monotonic() - t0


def transfers(group: Group, meter: Meter, args: argparse.Namespace, srcs: list[Path],
              tmp: Path, tag: str) -> tuple[Phase, Phase]:  # fmt: skip
    """Write, then read back, one new file per client (``nfs-cp`` does not overwrite a
    file on Ganesha: NFS3ERR_EXIST)."""
    nfs_cp = peers.need_tool("nfs-cp", "libnfs-utils")
    urls = [group.file_url[i % group.n](f"{tag}-c{i}.bin") for i in range(len(srcs))]
    shift = 1 if args.cross_read else 0  # read through the next server, not the writer
    back = [group.file_url[(i + shift) % group.n](f"{tag}-c{i}.bin") for i in range(len(srcs))]
    total = sum(p.stat().st_size for p in srcs)
    wcpu: dict[str, float] = {}
    with meter.phase(wcpu):
        wsec = run_all([[nfs_cp, str(s), u] for s, u in zip(srcs, urls, strict=True)], args.timeout)
    dsts = [tmp / f"back{i}.bin" for i in range(len(srcs))]
    for d in dsts:
        d.unlink(missing_ok=True)
    rcpu: dict[str, float] = {}
    with meter.phase(rcpu):
        rsec = run_all([[nfs_cp, u, str(d)] for u, d in zip(back, dsts, strict=True)], args.timeout)
    for s, d in zip(srcs, dsts, strict=True):
        if peers.sha256_file(s) != peers.sha256_file(d):
            raise peers.PeerError(f"{group.kind}: {d.name} read back differs from {s.name}")
        d.unlink()
    return Phase(total / wsec / 1e6, wsec, wcpu), Phase(total / rsec / 1e6, rsec, rcpu)


def getattrs(group: Group, meter: Meter, args: argparse.Namespace, tag: str) -> Phase:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                GETATTR_CLIENT,
                group.nfs_url[i % group.n],
                f"{tag}-c{i}.bin",
                str(args.ops),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )  # fmt: skip
        for i in range(args.clients)
    ]
    cpu: dict[str, float] = {}
    try:
        for p in procs:  # the barrier: every client has mounted
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise peers.PeerError(f"getattr client failed: {p.communicate(timeout=30)[1]}")
        with meter.phase(cpu):
            for p in procs:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            times = []
            for p in procs:
                out, err = p.communicate(timeout=args.timeout)
                if p.returncode != 0:
                    raise peers.PeerError(f"getattr client failed: {err[-2000:]}")
                times.append(tuple(map(float, out.split())))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    wall = max(t[1] for t in times) - min(t[0] for t in times)
    calls = args.clients * (args.ops // 16 * 16)
    return Phase(calls / wall, wall, cpu)


# --------------------------------------------------------------------------- report


def median_phase(rounds: list[Phase]) -> Phase:
    best = sorted(rounds, key=lambda p: p.rate)[len(rounds) // 2]
    return Phase(statistics.median(p.rate for p in rounds), best.seconds, best.cpu)


def machine_info() -> list[tuple[str, str]]:
    def cmd(argv: list[str]) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        return ""

    rev = cmd(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]) or "?"
    dirty = (
        " (+ local changes)" if cmd(["git", "-C", str(REPO_ROOT), "status", "--porcelain"]) else ""
    )
    pkgs = [(p, cmd(["dpkg-query", "-W", "-f=${Version}", p]) or "not installed")
            for p in ("ceph-mds", "nfs-ganesha-ceph", "libnfs-utils")]  # fmt: skip
    return [("nproc", str(os.cpu_count())), ("kernel", platform.release()),
            ("Python", platform.python_version()), *pkgs, ("Ferry", rev + dirty)]  # fmt: skip


def report(results: dict[str, dict[int, dict[str, Phase]]], args: argparse.Namespace,
           notes: list[str]) -> str:  # fmt: skip
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if args.given:
        where = ", ".join(f"{h}:{p}" for h, p, _ in args.given)
        title = f"## Scale-out: servers already running ({where}, export {args.export}), {when}"
    else:
        title = f"## Scale-out over CephFS: 1-3 servers, {when}"
    reads = ("the next server's (not the writer's)" if args.cross_read
             else "the server that wrote it")  # fmt: skip
    out = [title, ""]
    out.append(
        f"{args.clients} client processes spread over the servers, all at once; "
        f"{args.size_mib} MiB per client (`nfs-cp`), read back through {reads}; {args.ops} "
        f"GETATTRs per client (Ferry's client, 16 in flight); median of {args.repeat} "
        "round(s). Aggregate rates; `xN`: against 1 server of the same kind. CPU: seconds "
        "used during the phase by the Ceph daemons / the NFS servers / the clients"
        + (" (only the clients' are measured here)." if args.given else ".")
    )
    if not args.given:
        out[-1] += f" Ferry: model `{args.model}`, {args.workers} worker(s) per server."
    if args.link_mbit or args.server_cpus:
        caps = [f"its own {args.link_mbit:g} Mbit/s link each way (tc htb on lo, by port)"
                if args.link_mbit else "", f"at most {args.server_cpus:g} core(s) (a CPU "
                "cgroup)" if args.server_cpus else ""]  # fmt: skip
        out[-1] += (" Each server has " + " and ".join(c for c in caps if c) + "; the Ceph "
                    "daemons and the clients are not capped and share the host.")  # fmt: skip
    head = "| servers | write MB/s | read MB/s | GETATTR calls/s | CPU write (ceph/srv/cli) "
    out += ["", head + "| CPU read | CPU getattr |", "|" + " --- |" * 7]
    for kind, by_n in results.items():
        one = by_n.get(min(by_n)) if by_n else None
        for n, ph in sorted(by_n.items()):
            cells = []
            for key, fmt in (("write", "{:.0f}"), ("read", "{:.0f}"), ("getattr", "{:.0f}")):
                x = f" (x{ph[key].rate / one[key].rate:.2f})" if one and n != min(by_n) else ""
                cells.append(fmt.format(ph[key].rate) + x)
            groups = ("clients",) if args.given else ("ceph", "servers", "clients")
            cpus = [" / ".join(("-",) * (3 - len(groups)) + tuple(
                        f"{ph[k].cpu.get(g, 0):.1f}" for g in groups))
                    for k in ("write", "read", "getattr")]  # fmt: skip
            out.append(f"| {kind} x{n} | " + " | ".join(cells + cpus) + " |")
    if "ferry" in results and "ganesha" in results:
        out += ["", "Ferry / Ganesha at the same number of servers (> 1: Ferry faster):", ""]
        out += ["| servers | write | read | GETATTR |", "| --- | --- | --- | --- |"]
        for n in sorted(set(results["ferry"]) & set(results["ganesha"])):
            f, g = results["ferry"][n], results["ganesha"][n]
            cells = [f"{f[k].rate / g[k].rate:.2f}" for k in ("write", "read", "getattr")]
            out.append(f"| {n} | " + " | ".join(cells) + " |")
    out += ["", *notes] if notes else []
    out += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine_info()) + ".", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ferry bench scaleout", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="16 MiB, 1 repeat, 2,000 calls")
    p.add_argument(
        "--servers",
        default="1,2,3",
        help="server counts to start (default 1,2,3), or HOST:PORT[:MOUNTPORT],... of servers "
        "already running (nothing is started; runs with the first 1, 2, ... of them)",
    )
    p.add_argument("--export", default="/", help="with running servers: the export to mount")
    p.add_argument("--label", default="given", help="with running servers: their row's name")
    p.add_argument(
        "--cross-read",
        action="store_true",
        help="read each file back through another server than the one that wrote it",
    )
    p.add_argument("--peers", default=",".join(PEERS), help=f"comma list of {PEERS}")
    p.add_argument("--clients", type=int, default=3, help="client processes (default 3)")
    p.add_argument("--size-mib", type=int, default=None, help="MiB per client (default 64)")
    p.add_argument("--ops", type=int, default=None, help="GETATTRs per client (default 10,000)")
    p.add_argument("--repeat", type=int, default=None, help="rounds per configuration (3)")
    p.add_argument("--model", default="async", help="Ferry server model (default async)")
    p.add_argument("--workers", type=int, default=1, help="Ferry workers per server (1)")
    p.add_argument(
        "--link-mbit",
        type=float,
        default=None,
        help="give each server its own link of this many Mbit/s each way (tc on lo)",
    )
    p.add_argument(
        "--server-cpus",
        type=float,
        default=None,
        help="cap each server's processes to this many cores (a CPU cgroup each)",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="per phase, seconds")
    p.add_argument("--dir", default=BENCH_DIR, help=f"CephFS directory to export ({BENCH_DIR})")
    p.add_argument("--json", type=Path, help="also write the raw results there")
    p.add_argument("--write-docs", nargs="?", const=REPO_ROOT / "docs" / "benchmarks.md",
                   type=Path, default=None, metavar="PATH",
                   help="append the report to PATH (default docs/benchmarks.md)")  # fmt: skip
    args = p.parse_args(argv)
    args.size_mib = args.size_mib or (16 if args.quick else 64)
    args.ops = max(16, args.ops or (2000 if args.quick else 10000))
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.given = []
    args.peers = [x for x in args.peers.split(",") if x]
    items = [x.strip() for x in args.servers.split(",") if x.strip()]
    if all(x.isdigit() for x in items):
        args.servers = sorted({int(x) for x in items})
    else:
        try:
            args.given = [_address(x) for x in items]
        except ValueError as exc:
            p.error(f"--servers: {exc}")
        args.servers = list(range(1, len(args.given) + 1))
        args.peers = [args.label]
    if not args.given and not set(args.peers) <= set(PEERS):
        p.error(f"--peers must come from {PEERS}")
    if not all(1 <= n <= 8 for n in args.servers):
        p.error("--servers: from 1 to 8 servers")
    if args.given and (args.link_mbit or args.server_cpus):
        p.error("--link-mbit and --server-cpus shape servers started here, not given ones")
    return args


def _address(item: str) -> tuple[str, int, int]:
    """``HOST:PORT`` (MOUNT on the NFS port, as Ferry serves it) or ``HOST:PORT:MOUNTPORT``."""
    parts = item.split(":")
    if len(parts) not in (2, 3) or not all(x.isdigit() for x in parts[1:]) or not parts[0]:
        raise ValueError(f"{item!r} is neither a count nor HOST:PORT[:MOUNTPORT]")
    nfs = int(parts[1])
    return parts[0], nfs, int(parts[2]) if len(parts) == 3 else nfs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    peers.need_tool("nfs-cp", "libnfs-utils")
    if args.given:
        results, text = bench(args, None)
    else:
        cluster = CephCluster(objectstore="bluestore", store_bytes=4 << 30)
        try:
            cluster.start()
            print(f"scaleout_bench: ceph up in {cluster.timings['total']} s", file=sys.stderr)
            results, text = bench(args, cluster)
        finally:
            cluster.stop()
    print(text)
    if args.json:
        raw = {k: {n: {p: dataclasses.asdict(x) for p, x in v.items()} for n, v in by.items()}
               for k, by in results.items()}  # fmt: skip
        args.json.write_text(json.dumps(raw, indent=1))
    if args.write_docs is not None:
        with open(args.write_docs, "a") as f:
            f.write("\n" + text)
        print(f"scaleout_bench: appended to {args.write_docs}", file=sys.stderr)
    return 0


Results = dict[str, dict[int, dict[str, Phase]]]


def bench(args: argparse.Namespace, cluster: CephCluster | None) -> tuple[Results, str]:
    """Every configuration against a running ``cluster`` (None: against the servers given
    with ``--servers HOST:PORT,...``): (results, markdown report)."""
    notes: list[str] = []
    if not args.given and "ganesha" in args.peers and (why := ganesha_missing()):
        notes.append(f"NFS-Ganesha left out: {why}")
        args.peers.remove("ganesha")
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    tmp = Path(tempfile.mkdtemp(prefix="ferry-scaleout-", dir=shm))
    results: Results = {k: {} for k in args.peers}
    try:
        srcs = [tmp / f"src{i}.bin" for i in range(args.clients)]
        for i, s in enumerate(srcs):
            peers.write_random_file(s, args.size_mib * MiB, seed=i)
        for n in args.servers:
            order = args.peers if n % 2 else args.peers[::-1]  # alternate who goes first
            for kind in order:
                try:
                    results[kind][n] = run_config(kind, n, cluster, args, srcs, tmp)
                except peers.PeerError as exc:  # say so in the report, go on with the rest
                    print(f"scaleout_bench: {kind} x{n} failed: {exc}", file=sys.stderr)
                    notes.append(f"{kind} x{n} failed: {str(exc).splitlines()[-1][:300]}")
                    continue
                ph = results[kind][n]
                print(f"scaleout_bench: {kind} x{n}: write {ph['write'].rate:.0f} MB/s, read "
                      f"{ph['read'].rate:.0f} MB/s, getattr {ph['getattr'].rate:.0f}/s",
                      file=sys.stderr)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results, report(results, args, notes)


def make_bench_dir(cluster: CephCluster, where: str) -> None:
    """Create the CephFS directory ``where`` and its parents (a libcephfs client of our
    own, then unmounted)."""
    from ferry.backends.base import SetAttr
    from ferry.backends.cephfs import CephFsBackend
    from ferry.errors import NfsError

    b = CephFsBackend("/", conf=str(cluster.conf))
    try:
        fid = b.root()
        for name in where.strip("/").encode().split(b"/"):
            try:
                fid = b.lookup(fid, name)
            except (NfsError, FileNotFoundError):
                fid = b.mkdir(fid, name, SetAttr(mode=0o777))
    finally:
        b.close()


def run_config(kind: str, n: int, cluster: CephCluster | None, args: argparse.Namespace,
               srcs: list[Path], tmp: Path) -> dict[str, Phase]:  # fmt: skip
    base = tmp / f"{kind}-{n}"
    where = f"{args.dir}/{kind}-{n}"
    if cluster is None:
        group = given_servers(args.given, n, args.export, kind)
    elif kind == "ferry":
        make_bench_dir(cluster, where)
        server = {"model": args.model, "workers": args.workers}
        group = start_ferry(cluster, n, base, server, where)
    else:
        make_bench_dir(cluster, where)
        group = start_ganesha(cluster, n, base, where)
    meter = Meter(cluster, group)
    rounds: dict[str, list[Phase]] = {"write": [], "read": [], "getattr": []}
    caps = contextlib.ExitStack()
    try:
        if args.link_mbit:
            caps.enter_context(link_caps.port_links(group.ports, args.link_mbit))
        if args.server_cpus:
            caps.enter_context(cpu_caps.server_cpus(group.each_pids(), args.server_cpus))
        for i in range(args.repeat):
            tag = f"{kind}{n}r{i}"
            w, r = transfers(group, meter, args, srcs, tmp, tag)
            rounds["write"].append(w)
            rounds["read"].append(r)
            rounds["getattr"].append(getattrs(group, meter, args, tag))
            last = ", ".join(f"{k} {v[-1].rate:.0f} in {v[-1].seconds:.2f} s"
                             for k, v in rounds.items())  # fmt: skip
            print(f"scaleout_bench: {tag}: {last}", file=sys.stderr)
            with ferry.connect(group.nfs_url[0]) as c:  # keep the 4 GiB store from filling
                for j in range(len(srcs)):
                    c.remove(f"{tag}-c{j}.bin")
    finally:
        caps.close()
        group.stop()
        if cluster is not None and (evicted := cluster.evict_dead_clients()):
            print(f"scaleout_bench: evicted dead CephFS sessions {evicted}", file=sys.stderr)
    return {k: median_phase(v) for k, v in rounds.items()}


if __name__ == "__main__":
    sys.exit(main())

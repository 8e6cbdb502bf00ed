"""The user path of ``ferry bench server`` (issue 20): the default ``ferry serve`` against
NFS-Ganesha with third-party clients and real workloads, both exporting directories on the
same real disk, ratios in the same run, server CPU beside every figure.

The two servers run side by side for the whole section; each measurement is taken on one
at a time, ``repeat`` times, the order alternating, so machine noise hits both alike.
Ferry runs as a user starts it: ``ferry serve DIR`` (the default model and workers), with
``--no-root-squash`` only because the Ganesha export says ``Squash = No_Root_Squash`` and
the clients here run as root. Workloads (the rows of the headline table):

* bulk: ``nfs-cp`` (libnfs-utils) writes and reads a SIZE MiB file (local side on tmpfs);
  libnfs (``libnfs_io.py``) the same with 4 KiB ``nfs_pwrite``/``nfs_pread`` calls one at
  a time, the request pattern of libnfs's FUSE client fuse-nfs. Writes end with COMMIT.
* small calls: GETATTR (of the root), LOOKUP (of a file), ACCESS (of the root) with 1 and
  32 calls in flight per connection, on 1 and on 8 connections (``pipeline.py``).
* big directory: the READDIRPLUS listing of a directory of N entries, paged one call at a
  time with maxcount 32 KiB and 1 MiB (dircount maxcount/8, as Linux sends); ``ls -l``
  of it through a fresh ``ferry mount`` of each server.
* metadata: ``tar -x`` of a generated source tree (``dirtree.py``), then ``find``, ``du -s``
  and ``rm -r`` of it, each phase on a fresh ``ferry mount`` (so the kernel's caches are
  empty and the server is asked), and the same four through Ferry's sync client API.

Plus the echo ceiling (``echo_server.py``) under the same load generator: what a Python
server could answer if answering cost nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dirtree
import pipeline
from mounthelp import Mount, start_mount
from procstat import cpu_seconds, session_pids
from rawclient import RawClient, nfs_lookup
from timings import local_dir

from ferry.nfs3.const import NFS_PROGRAM, NfsProc
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.message import NULL_AUTH, CallHeader
from ferry.xdr import Packer
from helpers import peers

MiB = 1 << 20
BENCH_DIR = Path(__file__).resolve().parent
SERVERS = ("ferry", "ganesha")
SMALL_OPS = ("GETATTR", "LOOKUP", "ACCESS")
SHAPES = ((1, 1), (1, 32), (8, 1), (8, 32))  # (connections, calls in flight per connection)
ECHO_MODES = ("per-call", "thread-hop")
ACCESS_ALL = 0x3F  # READ | LOOKUP | MODIFY | EXTEND | DELETE | EXECUTE (RFC 1813 3.3.4)


@dataclass
class Sample:
    """One timed run: wall seconds, the server's CPU seconds meanwhile, and what was done
    (bytes, calls or entries: the unit of the row)."""

    seconds: float
    server_cpu: float
    done: float
    client_cpu: float = 0.0
    calls: int = 0  # RPCs, where known (READDIRPLUS pages)


@dataclass
class Row:
    """One workload: its label, unit, and samples per server."""

    section: str
    label: str
    kind: str  # "rate" (done/s, higher is better) or "time" (seconds, lower is better)
    unit: str  # "MB/s", "ops/s", "s"
    cpu_unit: str  # "µs/MiB", "µs/call", "ms"
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    note: str = ""

    def add(self, server: str, sample: Sample) -> None:
        self.samples.setdefault(server, []).append(sample)


@dataclass
class Target:
    """One running server and what the workloads need of it."""

    name: str
    server: peers.FerryServer | peers.GaneshaServer | None
    addr: tuple[str, int]
    pids: Callable[[], list[int]]
    stop: Callable[[], None]
    export: Path
    calls: dict[str, bytes] = field(default_factory=dict)
    big_fh: bytes = b""

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def url(self, rel: str) -> str:
        assert self.server is not None
        return self.server.file_url(rel)


@dataclass
class Settings:
    size_mib: int
    small_mib: int
    seconds: float
    repeat: int
    entries: int
    tree_files: int
    procs: int
    timeout: float = 900.0


# -- set-up --------------------------------------------------------------------------------


def settings(args: argparse.Namespace) -> Settings:
    return Settings(
        args.user_size_mib, args.user_small_mib, args.user_seconds, args.user_repeat,
        args.dir_entries, args.tree_files, args.procs,
    )  # fmt: skip


def prepare_export(export: Path, s: Settings) -> None:
    export.mkdir(parents=True)
    (export / "hello.txt").write_bytes(b"hello\n")
    peers.write_random_file(export / "read.bin", s.size_mib * MiB, seed=7)
    dirtree.make_flat_dir(export / "big", s.entries)


def start_targets(work: Path, s: Settings, log: list[str]) -> list[Target]:
    targets = []
    for name in SERVERS:
        print(f"server_bench: user path: preparing and starting {name}", file=sys.stderr,
              flush=True)  # fmt: skip
        base = work / name
        prepare_export(base / "export", s)
        targets.append(_start(name, base, log))
        _prepare_calls(targets[-1], targets[-1].addr[1] if name == "ferry" else _mnt(targets[-1]))
    return targets


def _mnt(t: Target) -> int:
    assert isinstance(t.server, peers.GaneshaServer)
    return t.server.mnt_port


def _start(name: str, base: Path, log: list[str]) -> Target:
    if name == "ganesha":
        g = peers.GaneshaServer(base / "export", base / "ganesha").start()
        return Target(name, g, ("127.0.0.1", g.nfs_port), lambda: [g.pid or 0], g.stop, g.export)
    f = peers.FerryServer(
        base / "export", base / "state", base / "logs", extra_args=peers.FERRY_PEER_ARGS
    ).start()  # the default ``ferry serve``: no model, worker or tuning flags
    sid = f.proc.pid if f.proc is not None else 0

    def stop() -> None:
        f.stop()
        if tb := f.tracebacks():
            log.append(f"ferry: traceback in its log:\n{tb[-3000:]}")

    return Target(name, f, ("127.0.0.1", f.port), lambda: session_pids([sid]), stop, f.export)


def _prepare_calls(t: Target, mount_port: int) -> None:
    with contextlib.closing(RawClient(mount_port)) as m:
        root = m.mount(str(t.export))
    with contextlib.closing(RawClient(t.addr[1])) as c:
        status, big, _ = nfs_lookup(c, root, "big")
    assert big, f"{t.name}: LOOKUP of big failed: {status}"
    t.big_fh = big
    t.calls["GETATTR"] = call(NfsProc.GETATTR, opaque(root))
    t.calls["LOOKUP"] = call(NfsProc.LOOKUP, opaque(root), opaque(b"hello.txt"))
    t.calls["ACCESS"] = call(NfsProc.ACCESS, opaque(root), ACCESS_ALL.to_bytes(4, "big"))
    t.calls["READDIRPLUS"] = call(NfsProc.READDIRPLUS)


def call(proc: int, *args: bytes) -> bytes:
    p = Packer()
    CallHeader(0, 2, NFS_PROGRAM, 3, proc, encode_auth_sys(0, 0), NULL_AUTH).pack(p)
    return p.get_buffer() + b"".join(args)


def opaque(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data + bytes(-len(data) % 4)


def in_turn(targets: list[Target], repeat: int) -> Iterator[tuple[int, Target]]:
    for i in range(repeat):
        for t in targets if i % 2 == 0 else targets[::-1]:
            yield i, t


@contextlib.contextmanager
def metered(t: Target, out: list[float]) -> Iterator[None]:
    """Appends (wall seconds, server CPU seconds, caller's CPU seconds) of the block."""
    cpu0, me0, t0 = t.cpu(), _my_cpu(), time.perf_counter()
    yield
    out[:] = [time.perf_counter() - t0, t.cpu() - cpu0, _my_cpu() - me0]


def _my_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


# -- bulk ----------------------------------------------------------------------------------


def bulk(targets: list[Target], s: Settings, local: Path, log: list[str]) -> list[Row]:
    size, small = s.size_mib * MiB, s.small_mib * MiB
    rows = {
        "cp-write": Row("bulk", f"nfs-cp write {s.size_mib} MiB", "rate", "MB/s", "µs/MiB"),
        "cp-read": Row("bulk", f"nfs-cp read {s.size_mib} MiB", "rate", "MB/s", "µs/MiB"),
        "4k-write": Row(
            "bulk", f"libnfs 4 KiB writes, {s.small_mib} MiB", "rate", "MB/s", "µs/MiB"
        ),  # fmt: skip
        "4k-read": Row(
            "bulk", f"libnfs 4 KiB reads, {s.small_mib} MiB", "rate", "MB/s", "µs/MiB"
        ),  # fmt: skip
    }
    source = local / "source.bin"
    digest = peers.write_random_file(source, size, seed=11)
    nfs_cp = peers.need_tool("nfs-cp", "libnfs-utils")
    script = str(BENCH_DIR / "libnfs_io.py")
    for key, row in rows.items():
        print(f"server_bench: user path: {row.label}", file=sys.stderr, flush=True)
        for i, t in in_turn(targets, s.repeat):
            name, out = f"w-{key}-{i}.bin", []
            try:
                if key == "cp-write":
                    with metered(t, out):
                        peers.run([nfs_cp, source, t.url(name)], timeout=s.timeout)
                    _check_file(t.export / name, size, digest if i == 0 else None)
                elif key == "cp-read":
                    dst = local / "read.bin"
                    dst.unlink(missing_ok=True)
                    with metered(t, out):
                        peers.run([nfs_cp, t.url("read.bin"), dst], timeout=s.timeout)
                    _check_size(dst, size)
                    dst.unlink()
                else:
                    op = key.split("-")[1]
                    target = name if op == "write" else "read.bin"
                    argv = [sys.executable, script, op, t.url(target), str(small)]
                    with metered(t, out):
                        cp = peers.run(argv, timeout=s.timeout)
                    if int(cp.stdout.split()[0]) != small:
                        raise peers.PeerError(f"libnfs_io moved {cp.stdout!r}, not {small}")
                    if op == "write":
                        _check_file(t.export / name, small, None)
            except (peers.PeerError, OSError) as e:
                log.append(f"{t.name} {row.label}: {e}")
                continue
            moved = size if key.startswith("cp") else small
            row.add(t.name, Sample(out[0], out[1], moved, client_cpu=out[2]))
    source.unlink()
    return list(rows.values())


def _check_size(path: Path, size: int) -> None:
    if (got := path.stat().st_size) != size:
        raise OSError(f"{path.name}: {got} bytes, not {size}")


def _check_file(path: Path, size: int, digest: str | None) -> None:
    """Size (and sha256) of a file written over NFS, checked untimed, then removed."""
    _check_size(path, size)
    if digest is not None and peers.sha256_file(path) != digest:
        raise OSError(f"{path.name} differs from the source")
    path.unlink()


# -- small calls ---------------------------------------------------------------------------


def small_calls(targets: list[Target], s: Settings, log: list[str]) -> list[Row]:
    rows = []
    for op in SMALL_OPS:
        for conns, depth in SHAPES:
            row = Row("calls", f"{op}, {conns} conn x {depth} in flight", "rate", "ops/s",
                      "µs/call")  # fmt: skip
            print(f"server_bench: user path: {row.label}", file=sys.stderr, flush=True)
            for _, t in in_turn(targets, s.repeat):
                r, (cpu0, cpu1) = pipeline.run(
                    t.addr, t.calls[op], conns, depth, s.seconds, s.procs, t.cpu
                )
                if r.errors:
                    log.append(f"{t.name} {row.label}: {r.errors} failed calls")
                row.add(t.name, Sample(r.seconds, float(cpu1) - float(cpu0), r.calls,  # type: ignore[arg-type]
                                       client_cpu=r.client_cpu, calls=r.calls))  # fmt: skip
            rows.append(row)
    return rows


@contextlib.contextmanager
def echo_server(mode: str) -> Iterator[Target]:
    proc = subprocess.Popen(
        [sys.executable, str(BENCH_DIR / "echo_server.py"), "--mode", mode],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("echo: serving on"):
            raise peers.PeerError(f"echo server did not start: {line!r}")
        port = int(line.rsplit(":", 1)[1])
        yield Target(f"echo {mode}", None, ("127.0.0.1", port), lambda: [proc.pid],
                     lambda: None, Path("."))  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)


def echo_ceiling(record: bytes, s: Settings, log: list[str]) -> list[Row]:
    """The echo server in each mode at (1 conn x 1) and (1 conn x 32), GETATTR-shaped."""
    rows = []
    for mode in ECHO_MODES:
        with echo_server(mode) as t:
            for conns, depth in ((1, 1), (1, 32)):
                row = Row("echo", f"echo ({mode}), {conns} conn x {depth} in flight", "rate",
                          "ops/s", "µs/call")  # fmt: skip
                print(f"server_bench: user path: {row.label}", file=sys.stderr, flush=True)
                for _ in range(s.repeat):
                    r, (cpu0, cpu1) = pipeline.run(t.addr, record, conns, depth, s.seconds,
                                                   s.procs, t.cpu)  # fmt: skip
                    if r.errors:
                        log.append(f"{row.label}: {r.errors} failed calls")
                    row.add("echo", Sample(r.seconds, float(cpu1) - float(cpu0), r.calls,  # type: ignore[arg-type]
                                           client_cpu=r.client_cpu, calls=r.calls))  # fmt: skip
                rows.append(row)
    return rows


# -- the big directory -------------------------------------------------------------------------


def big_directory(targets: list[Target], s: Settings, work: Path, log: list[str]) -> list[Row]:
    """The first listing of the big directory (each server's first, maxcount 32 KiB: one
    sample per server whatever the repeat), then listings the server has made before on
    the same connection (Ferry's worker has the listing, Ganesha its directory cache),
    then ``ls -l`` on fresh mounts (each may reach a Ferry worker that has not listed)."""
    first = Row("dir", f"READDIRPLUS of {s.entries:,} entries, first listing, maxcount 32 KiB",
                "time", "s", "ms")  # fmt: skip
    rows = [first]
    listed: set[str] = set()
    for maxcount in (32 << 10, 1 << 20):
        size = f"{maxcount >> 10} KiB" if maxcount < MiB else "1 MiB"
        row = Row("dir", f"READDIRPLUS of {s.entries:,} entries, maxcount {size}", "time", "s",
                  "ms")  # fmt: skip
        print(f"server_bench: user path: {row.label}", file=sys.stderr, flush=True)
        for _, t in in_turn(targets, s.repeat):
            with dirtree.Lister(t.addr) as lister:
                timed = [row]
                if t.name in listed:
                    lister.list(t.calls["READDIRPLUS"], t.big_fh, maxcount)  # untimed
                else:
                    timed.insert(0, first)
                    listed.add(t.name)
                for r in timed:
                    out: list[float] = []
                    with metered(t, out):
                        entries, calls = lister.list(t.calls["READDIRPLUS"], t.big_fh, maxcount)
                    if entries != s.entries:
                        log.append(f"{t.name} {r.label}: {entries} entries, not {s.entries}")
                        continue
                    r.add(t.name, Sample(out[0], out[1], entries, client_cpu=out[2], calls=calls))
        rows.append(row)
    row = Row("dir", f"`ls -l` of {s.entries:,} entries via `ferry mount`", "time", "s", "ms")
    print(f"server_bench: user path: {row.label}", file=sys.stderr, flush=True)
    for i, t in in_turn(targets, s.repeat):
        with _mounted(t, work / f"mnt-ls-{t.name}-{i}", log) as mnt:
            out = []
            with metered(t, out):
                cp = peers.run(["ls", "-l", "--color=never", mnt / "big"], timeout=s.timeout)
            lines = cp.stdout.count(b"\n")
            if lines != s.entries + 1:  # and "total N"
                log.append(f"{t.name} {row.label}: {lines} lines, not {s.entries + 1}")
                continue
            row.add(t.name, Sample(out[0], out[1], s.entries, client_cpu=out[2]))
    rows.append(row)
    return rows


@contextlib.contextmanager
def _mounted(t: Target, where: Path, log: list[str]) -> Iterator[Path]:
    assert t.server is not None
    mount: Mount = start_mount(t.server, where)
    try:
        yield where
    finally:
        if mount.stop() != 0:
            log.append(f"{t.name}: ferry mount failed:\n{mount.text()[-2000:]}")
        with contextlib.suppress(OSError):
            where.rmdir()


# -- tar -x, find, du, rm -r -------------------------------------------------------------------

PHASES = ("tar -x", "find", "du -s", "rm -r")


def metadata(targets: list[Target], s: Settings, work: Path, local: Path,
             log: list[str]) -> list[Row]:  # fmt: skip
    tar = local / "tree.tar"
    files, dirs, nbytes = dirtree.write_tar(tar, s.tree_files)
    what = f"{files:,} files, {dirs} dirs, {nbytes / MiB:.0f} MiB"
    mount_rows = {p: Row("meta", f"{p} via `ferry mount` ({what})", "time", "s", "ms")
                  for p in PHASES}  # fmt: skip
    api_rows = {p: Row("meta", f"{p} via the client API", "time", "s", "ms") for p in PHASES}
    names = files + dirs + 1  # what find lists, the top included
    for i, t in in_turn(targets, s.repeat):
        print(f"server_bench: user path: tar/find/du/rm on {t.name}, run {i + 1}",
              file=sys.stderr, flush=True)  # fmt: skip
        try:
            _mount_phases(t, tar, names, work / f"mnt-tree-{t.name}-{i}", mount_rows, s, log)
            _api_phases(t, tar, names, api_rows)
        except (peers.PeerError, OSError, AssertionError) as e:
            log.append(f"{t.name} tar/find/du/rm: {e}")
            shutil.rmtree(t.export / "tree", ignore_errors=True)
    tar.unlink()
    return [*mount_rows.values(), *api_rows.values()]


def _mount_phases(t: Target, tar: Path, names: int, where: Path, rows: dict[str, Row],
                  s: Settings, log: list[str]) -> None:  # fmt: skip
    """Each phase on a fresh mount: the kernel's and the mount's caches start empty."""
    for phase in PHASES:
        with _mounted(t, where, log) as mnt:
            top = mnt / "tree"
            argv: list[str | os.PathLike[str]] = {
                "tar -x": ["tar", "-x", "-f", tar, "-C", mnt, "--one-top-level=tree",
                           "--no-same-owner"],
                "find": ["find", top],
                "du -s": ["du", "-s", "-B1", top],
                "rm -r": ["rm", "-r", top],
            }[phase]  # fmt: skip
            out: list[float] = []
            with metered(t, out):
                cp = peers.run(argv, timeout=s.timeout)
            listed = cp.stdout.count(b"\n")
            if phase == "find" and listed != names:
                raise OSError(f"find listed {listed} names, not {names}")
            rows[phase].add(t.name, Sample(out[0], out[1], names, client_cpu=out[2]))
    if (t.export / "tree").exists():
        raise OSError("rm -r through the mount left the tree behind")


def _api_phases(t: Target, tar: Path, names: int, rows: dict[str, Row]) -> None:
    """Each phase with a new client (its caches empty), as a script would."""
    import ferry

    url = t.url("").replace("/?", "?")
    for phase in PHASES:
        with ferry.connect(url) as client:
            out: list[float] = []
            with metered(t, out):
                if phase == "tar -x":
                    got = dirtree.api_extract(client, tar, "tree") + 1
                elif phase == "find":
                    got = dirtree.api_find(client, "tree")
                elif phase == "du -s":
                    dirtree.api_du(client, "tree")
                    got = names
                else:
                    got = dirtree.api_rmtree(client, "tree")
            if got != names:
                raise OSError(f"{phase} through the API counted {got} names, not {names}")
            rows[phase].add(t.name, Sample(out[0], out[1], names, client_cpu=out[2]))


# -- the section -------------------------------------------------------------------------------


@dataclass
class Outcome:
    rows: list[Row]
    fs: str  # the exports' file system, as findmnt names it
    where: Path
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    seconds: float
    ferry_shape: str = "?"  # processes and threads the default server ran as


def shape(pids: list[int]) -> str:
    """``N process(es), M threads`` of a running server, from /proc."""
    threads = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{pid}/status").read_text()
            threads += int(status.split("Threads:", 1)[1].split()[0])
    return f"{len(pids)} process{'es' * (len(pids) != 1)}, {threads} threads"


def fs_type(path: Path) -> str:
    cp = subprocess.run(["findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(path)],
                        capture_output=True, text=True, check=False)  # fmt: skip
    return " on ".join(cp.stdout.split()) or "?"


def run(args: argparse.Namespace, log: list[str]) -> Outcome:
    s = settings(args)
    base = args.disk_dir or Path("/var/tmp")
    work = Path(tempfile.mkdtemp(prefix="ferry-upath-", dir=base))
    local = local_dir(None, s.size_mib * MiB, work, "ferry-upath-")
    t0, load0 = time.monotonic(), os.getloadavg()
    fs = fs_type(work)
    rows: list[Row] = []
    targets: list[Target] = []
    ferry_shape = "?"
    try:
        targets = start_targets(work, s, log)
        rows += bulk(targets, s, local, log)
        ferry_shape = shape(targets[0].pids())  # threads started by now
        rows += small_calls(targets, s, log)
        rows += echo_ceiling(targets[0].calls["GETATTR"], s, log)
        rows += big_directory(targets, s, work, log)
        rows += metadata(targets, s, work, local, log)
    finally:
        for t in targets:
            try:
                t.stop()
            except peers.PeerError as e:
                log.append(f"{t.name} stop: {e}")
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(local, ignore_errors=True)
    return Outcome(rows, fs, base, load0, os.getloadavg(), time.monotonic() - t0, ferry_shape)

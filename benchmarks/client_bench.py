#!/usr/bin/env python3
"""NFS clients side by side against NFS-Ganesha on loopback: Ferry, libnfs, nfs-rs.

One Ganesha (VFS export on disk, explicit ports, started here) serves every client in the
same run; each repeat runs every client once, the order alternating, so machine noise
(page cache, CPU frequency, other load) hits all alike. Measured per client:

  * sequential read of a SIZE MiB file (all bytes into the client's memory, or for
    nfs-cp into a file on tmpfs), and
  * sequential write of a SIZE MiB file (from memory, or for nfs-cp from tmpfs), made
    durable (COMMIT) before the clock stops.

Clients (each timed from connect to close, so mount and set-up count as for nfs-cp):

  ferry          ``ferry.connect(url)`` then ``read_file`` / ``write_file`` (whole file)
  ferry-open     ``client.open()``: ``readinto`` / ``write`` of BLOCK-sized pieces
  ferry-open-1mib   ``client.open()``: a loop of ``read(1 MiB)`` (new bytes each, dropped) /
                 ``write`` of 1 MiB views: the chunked loop of issue 17
  ferry-open-whole  ``client.open()``: one ``read()`` / ``write()`` of the whole file
  nfs-cp         libnfs-utils' ``nfs-cp`` (C), one process per transfer
  nfs-rs         PyPI ``nfs-rs`` (Rust): ``Client.open()``, ``readinto`` / ``write`` of BLOCK
  nfs-rs-whole   the same, one ``read()`` / ``write()`` of the whole file: the like-for-like
                 peer of ``read_file``/``write_file`` (one bytes object of SIZE MiB)
  local-open, local-open-whole
                 no NFS: Python's built-in ``open()`` on a local copy (tmpfs), the same two
                 idioms (written files fsync'd): what a whole ``read()`` costs Python itself
                 against BLOCK pieces into a reused buffer (a new SIZE MiB bytes object is
                 fresh memory the kernel must map and zero), to read the Ferry rows against

The median of N repeats is reported in MB/s with ratios Ferry/peer (> 1: Ferry faster) as
markdown on stdout and, with --write-docs, appended to docs/benchmarks.md.

    python benchmarks/client_bench.py                 # 256 MiB, 5 repeats
    python benchmarks/client_bench.py --quick         # 2 repeats
    ferry bench client --size-mib 2 --repeat 1        # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "src"))

from helpers import peers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ferry_transfers as transfers  # noqa: E402
from machine import machine_info  # noqa: E402
from timings import Result, local_dir, timed_read, timed_write, write_docs  # noqa: E402

MiB, BLOCK = transfers.MiB, transfers.BLOCK
CLIENTS = ("ferry", "ferry-open", "ferry-open-1mib", "ferry-open-whole", "nfs-cp", "nfs-rs",
           "nfs-rs-whole", "local-open", "local-open-whole")  # fmt: skip
LABEL = {
    "ferry": "Ferry read_file/write_file",
    "ferry-open": "Ferry open()",
    "ferry-open-1mib": "Ferry open() read()/write() of 1 MiB pieces",
    "ferry-open-whole": "Ferry open() read()/write() whole",
    "nfs-cp": "libnfs nfs-cp (C)",
    "nfs-rs": "nfs-rs (Rust)",
    "nfs-rs-whole": "nfs-rs (Rust) read()/write() whole",
    "local-open": "no NFS: local file (tmpfs), open()",
    "local-open-whole": "no NFS: local file (tmpfs), open() read()/write() whole",
}
LOCAL = ("local-open", "local-open-whole")
WHOLE_VS_BLOCKS = (("ferry-open-whole", "ferry-open"), ("ferry-open-whole", "ferry-open-1mib"),
                   ("nfs-rs-whole", "nfs-rs"), ("local-open-whole", "local-open"))  # fmt: skip
PEERS = ("nfs-cp", "nfs-rs", "nfs-rs-whole")
OPS = ("read", "write")


@dataclass
class Env:
    server: peers.GaneshaServer
    local: Path  # tmpfs: nfs-cp's read destination and write source
    source: bytes  # what the writers write
    size: int
    timeout: float

    def url(self, rel: str = "") -> str:
        return self.server.file_url(rel)

    def export_url(self) -> str:
        return self.url("").replace("/?", "?")


# --------------------------------------------------------------------------- clients


def ferry_read(env: Env, name: str) -> int:
    return transfers.file_read(env.export_url(), name)


def ferry_write(env: Env, name: str) -> None:
    transfers.file_write(env.export_url(), name, env.source)


def ferry_open_read(env: Env, name: str) -> int:
    return transfers.open_read(env.export_url(), name, env.size)


def ferry_open_write(env: Env, name: str) -> None:
    transfers.open_write(env.export_url(), name, env.source)


def ferry_open_1mib_read(env: Env, name: str) -> int:
    return transfers.open_pieces_read(env.export_url(), name)


def ferry_open_1mib_write(env: Env, name: str) -> None:
    transfers.open_pieces_write(env.export_url(), name, env.source)


def ferry_open_whole_read(env: Env, name: str) -> int:
    return transfers.open_whole_read(env.export_url(), name)


def ferry_open_whole_write(env: Env, name: str) -> None:
    transfers.open_whole_write(env.export_url(), name, env.source)


def nfscp_read(env: Env, name: str) -> int:
    dst = env.local / "nfs-cp-read.bin"
    dst.unlink(missing_ok=True)
    peers.run([peers.need_tool("nfs-cp", "libnfs-utils"), env.url(name), dst], timeout=env.timeout)
    size = dst.stat().st_size
    dst.unlink()
    return size


def nfscp_write(env: Env, name: str) -> None:
    nfs_cp = peers.need_tool("nfs-cp", "libnfs-utils")
    peers.run([nfs_cp, env.local / "source.bin", env.url(name)], timeout=env.timeout)


def _nfsrs_connect(env: Env):  # type: ignore[no-untyped-def]
    import nfs_rs

    return nfs_rs.Client.connect(env.export_url(), operation_timeout=env.timeout)


def nfsrs_read(env: Env, name: str) -> int:
    with _nfsrs_connect(env) as client, client.open(name, "rb") as f:
        return transfers.read_blocks(f, env.size)


def nfsrs_write(env: Env, name: str) -> None:
    with _nfsrs_connect(env) as client, client.open(name, "wb") as f:
        transfers.write_blocks(f, env.source)


def nfsrs_whole_read(env: Env, name: str) -> int:
    with _nfsrs_connect(env) as client, client.open(name, "rb") as f:
        return len(f.read())


def nfsrs_whole_write(env: Env, name: str) -> None:
    with _nfsrs_connect(env) as client, client.open(name, "wb") as f:
        f.write(env.source)


def local_read(env: Env, name: str) -> int:
    with open(env.local / "source.bin", "rb", buffering=0) as f:
        return transfers.read_blocks(f, env.size)


def local_whole_read(env: Env, name: str) -> int:
    with open(env.local / "source.bin", "rb") as f:
        return len(f.read())


def local_write(env: Env, name: str) -> None:
    with open(env.local / name, "wb", buffering=0) as f:
        transfers.write_blocks(f, env.source)
        os.fsync(f.fileno())


def local_whole_write(env: Env, name: str) -> None:
    with open(env.local / name, "wb") as f:
        f.write(env.source)
        f.flush()
        os.fsync(f.fileno())


READERS: dict[str, Callable[[Env, str], int]] = {
    "ferry": ferry_read, "ferry-open": ferry_open_read, "ferry-open-1mib": ferry_open_1mib_read,
    "ferry-open-whole": ferry_open_whole_read, "nfs-cp": nfscp_read,
    "nfs-rs": nfsrs_read, "nfs-rs-whole": nfsrs_whole_read,
    "local-open": local_read, "local-open-whole": local_whole_read,
}  # fmt: skip
WRITERS: dict[str, Callable[[Env, str], None]] = {
    "ferry": ferry_write, "ferry-open": ferry_open_write, "ferry-open-1mib": ferry_open_1mib_write,
    "ferry-open-whole": ferry_open_whole_write, "nfs-cp": nfscp_write,
    "nfs-rs": nfsrs_write, "nfs-rs-whole": nfsrs_whole_write,
    "local-open": local_write, "local-open-whole": local_whole_write,
}  # fmt: skip


# --------------------------------------------------------------------------- measure


def measure(env: Env, client: str, op: str, i: int, digest: str) -> float:
    """One timed transfer; the outcome is checked outside the timing (sha256 the first
    time). Raises PeerError, TransferError or OSError."""
    if op == "read":
        return timed_read(partial(READERS[client], env, "read.bin"), env.size)
    name = f"write-{client}-{i}.bin"
    write, check = partial(WRITERS[client], env, name), digest if i == 0 else None
    where = env.local if client in LOCAL else env.server.export
    return timed_write(write, where / name, env.size, check)


def run_all(
    env: Env, clients: list[str], repeat: int, log: list[str]
) -> dict[str, dict[str, Result]]:
    results = {c: {op: Result() for op in OPS} for c in clients}
    digest = hashlib.sha256(env.source).hexdigest()
    for c in clients:  # warm-up (and a first check): connect, mount, page cache
        try:
            READERS[c](env, "read.bin")
        except Exception as e:  # noqa: BLE001 - a peer's failure is reported, not fatal
            for r in results[c].values():
                r.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            log.append(f"{c} warm-up: {e!r}")
    for op in OPS:
        print(f"client_bench: {op} x{repeat}", file=sys.stderr, flush=True)
        for i in range(repeat):
            order = clients if i % 2 == 0 else clients[::-1]
            for c in order:
                res = results[c][op]
                if res.error:
                    continue
                try:
                    res.seconds.append(measure(env, c, op, i, digest))
                except Exception as e:  # noqa: BLE001
                    res.error = str(e).splitlines()[0] if str(e) else type(e).__name__
                    log.append(f"{c} {op}: {e!r}")
    return results


# --------------------------------------------------------------------------- report


def render(results: dict[str, dict[str, Result]], args: argparse.Namespace, local: Path,
           export: Path) -> str:  # fmt: skip
    size = args.size_mib * MiB
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    clients = list(results)
    out = [f"## NFS clients against NFS-Ganesha, {now}", ""]
    out.append(
        f"`ferry bench client` (`benchmarks/client_bench.py`): loopback, one NFS-Ganesha "
        f"(VFS export on `{export.parent}`), {args.size_mib} MiB file, median of "
        f"{args.repeat} run(s) (seconds: median, min–max), clients alternating in one run, "
        f"each timed from connect to close. Reads land in memory (nfs-cp: a file on "
        f"`{local}`); writes come from memory (nfs-cp: that tmpfs) and are COMMITted "
        f"before the clock stops. Python clients use {BLOCK // MiB} MiB blocks with "
        f"open(), but for the whole-file rows. Ratio > 1 means Ferry is faster."
    )
    out += ["", "| client | read | write |", "| --- | --- | --- |"]
    for c in clients:
        out.append(
            f"| {LABEL[c]} | {results[c]['read'].cell(size)} | {results[c]['write'].cell(size)} |"
        )
    ferrys = [c for c in clients if c.startswith("ferry")]
    peers_here = [c for c in clients if c in PEERS]
    if ferrys and peers_here:
        out += ["", "| ratio | read | write |", "| --- | --- | --- |"]
        for f in ferrys:
            for p in peers_here:
                cells = [_ratio(results[f][op], results[p][op], size) for op in OPS]
                out.append(f"| {LABEL[f]} / {LABEL[p]} | " + " | ".join(cells) + " |")
    pairs = [(w, b) for w, b in WHOLE_VS_BLOCKS if w in clients and b in clients]
    if pairs:
        out += ["", "| one whole read()/write() against pieces | read | write |",
                "| --- | --- | --- |"]  # fmt: skip
        for w, b in pairs:
            out.append(f"| {LABEL[w]} / {LABEL[b]} | " + " | ".join(
                _ratio(results[w][op], results[b][op], size) for op in OPS) + " |")  # fmt: skip
    out.append("")
    info = machine_info("nfs-ganesha", "libnfs-utils")
    try:
        from importlib.metadata import version

        info.append(("nfs-rs", version("nfs-rs")))
    except Exception:  # noqa: BLE001 - not installed: say so
        info.append(("nfs-rs", "not installed"))
    out.append("Machine: " + ", ".join(f"{k} {v}" for k, v in info) + ".")
    out.append("")
    return "\n".join(out)


def _ratio(a: Result, b: Result, size: int) -> str:
    ok = a.seconds and b.seconds and not a.error and not b.error
    return f"{a.rate(size) / b.rate(size):.2f}" if ok else "–"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ferry bench client", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="two repeats instead of five")
    p.add_argument("--repeat", type=int, default=None, help="repeats per measurement (5)")
    p.add_argument("--size-mib", type=int, default=256, help="file size (MiB, default 256)")
    p.add_argument("--clients", default=",".join(CLIENTS), help=f"comma list of {CLIENTS}")
    p.add_argument("--workdir", type=Path, help="export and Ganesha files (default /var/tmp)")
    p.add_argument("--local-dir", type=Path, help="nfs-cp's local side (default /dev/shm)")
    p.add_argument("--timeout", type=float, default=900.0, help="per transfer, seconds")
    p.add_argument("--write-docs", nargs="?", const=REPO_ROOT / "docs" / "benchmarks.md",
                   type=Path, default=None, metavar="PATH",
                   help="append the report to PATH (default docs/benchmarks.md)")  # fmt: skip
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    args = p.parse_args(argv)
    if args.repeat is None:
        args.repeat = 2 if args.quick else 5
    if args.repeat < 1 or args.size_mib < 1:
        p.error("--repeat and --size-mib must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not clients or set(clients) - set(CLIENTS):
        print(f"client_bench: choose clients from {CLIENTS}", file=sys.stderr)
        return 2
    try:
        peers.need_tool("ganesha.nfsd", "nfs-ganesha")
        peers.need_tool("rpcbind", "rpcbind")
        if "nfs-cp" in clients:
            peers.need_tool("nfs-cp", "libnfs-utils")
    except peers.ToolMissing as e:
        print(f"client_bench: {e}", file=sys.stderr)
        return 2
    size = args.size_mib * MiB
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ferry-cbench-", dir="/var/tmp"))
    local = local_dir(args.local_dir, size, workdir, "ferry-cbench-")
    log: list[str] = []
    t0 = time.monotonic()
    server = peers.GaneshaServer(workdir / "export", workdir / "ganesha")
    try:
        server.export.mkdir(parents=True, exist_ok=True)
        peers.write_random_file(server.export / "read.bin", size, seed=7)
        peers.write_random_file(local / "source.bin", size, seed=11)
        env = Env(server, local, (local / "source.bin").read_bytes(), size, args.timeout)
        print("client_bench: starting NFS-Ganesha", file=sys.stderr, flush=True)
        server.start()
        results = run_all(env, clients, args.repeat, log)
    finally:
        try:
            server.stop()
        finally:
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)
                shutil.rmtree(local, ignore_errors=True)
    report = render(results, args, local, server.export)
    print(report, flush=True)
    print(f"client_bench: done in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    if log:
        print("client_bench: problems:\n" + "\n".join(log), file=sys.stderr)
    if args.write_docs is not None:
        write_docs(report, args.write_docs)
        print(f"client_bench: appended to {args.write_docs}", file=sys.stderr)
    return 1 if any(r.error for rs in results.values() for r in rs.values()) else 0


if __name__ == "__main__":
    sys.exit(main())

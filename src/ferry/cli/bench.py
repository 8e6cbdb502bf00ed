"""``ferry bench client|server``: the benchmark scripts of a source checkout, run by name.

The benchmarks start third-party peers (NFS-Ganesha, rpcbind) through the test helpers, so
they live in ``benchmarks/`` beside ``tests/`` and are not installed with the package; this
module only finds the script and hands it the remaining arguments (its own ``--help``
lists them).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

SCRIPTS = {  # command -> script in benchmarks/, and what it measures
    "client": ("client_bench.py", "Ferry's client vs nfs-cp and nfs-rs against NFS-Ganesha"),
    "server": (
        "server_bench.py",
        "the default server (user path: third-party clients, disk) and every model vs Ganesha",
    ),
    "rpc": ("rpc_bench.py", "sync vs pipelined vs batched vs prefetched RPC over an emulated link"),
    "fuse": ("fuse_bench.py", "a FUSE mount vs Ferry's client API"),
    "scaleout": ("scaleout_bench.py", "1-3 Ferry servers vs Ganesha (FSAL_CEPH) over one CephFS"),
}
BENCH_DIR = Path(__file__).resolve().parents[3] / "benchmarks"  # src/ferry/cli/bench.py


def add_bench_command(sub: Any) -> None:
    """Register ``bench`` on ``ferry``'s subparsers (called from ``cli``)."""
    bench = sub.add_parser("bench", help="run a benchmark (from a source checkout)")
    which = bench.add_subparsers(dest="bench", required=True)
    for name, (_, help_text) in SCRIPTS.items():
        # "+" as the only prefix: every "--option" is left to the script, -h included
        p = which.add_parser(name, help=help_text, add_help=False, prefix_chars="+")
        p.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script")
        p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    script = BENCH_DIR / SCRIPTS[args.bench][0]
    if not script.is_file():
        print(f"ferry: {script} not found: benchmarks run from a source checkout",
              file=sys.stderr)  # fmt: skip
        return 2
    return subprocess.run([sys.executable, str(script), *args.args], check=False).returncode

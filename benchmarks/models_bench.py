#!/usr/bin/env python3
"""Superseded by ``server_bench.py`` (``ferry bench server``), which runs every server model
and NFS-Ganesha under the same workloads in one run; this name runs it for Ferry's models
only. (The "Server models, 2026-11-26 09:35 UTC" section of docs/benchmarks.md was written
by this script's earlier form: NULL and GETATTR calls/s and an ``nfs-cp`` read.)

    python benchmarks/models_bench.py [server_bench options]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import server_bench  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    if not any(a.startswith("--targets") for a in argv):
        argv = ["--targets", ",".join(server_bench.FERRY), *argv]
    sys.exit(server_bench.main(argv))

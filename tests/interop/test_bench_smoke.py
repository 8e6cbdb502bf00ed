"""``ferry bench server --smoke`` runs every workload against every server model and
NFS-Ganesha end to end and writes its report (tiny sizes; no timing asserts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tools import require_tool

pytestmark = [pytest.mark.interop, pytest.mark.slow]

TARGETS = ("serial", "thread", "process", "prefork", "async", "ganesha")
SRC = Path(__file__).resolve().parents[2] / "src"


def test_server_bench_smoke(tmp_path: Path) -> None:
    require_tool("ganesha.nfsd", "nfs-ganesha")
    require_tool("rpcbind", "rpcbind")
    docs = tmp_path / "benchmarks.md"
    cp = subprocess.run(
        [sys.executable, "-m", "ferry", "bench", "server", "--smoke", "--write-docs", str(docs)],
        capture_output=True,
        text=True,
        timeout=240,
        env=dict(os.environ, PYTHONPATH=str(SRC)),  # ``-m ferry`` from this checkout
    )
    out = cp.stdout + "\n--- stderr ---\n" + cp.stderr
    assert cp.returncode == 0, out
    tables = cp.stdout.split("\n\n")
    ops = next(t for t in tables if t.startswith("| server | GETATTR x1 | GETATTR x8 |"))
    streams = next(t for t in tables if t.startswith("| server | READ MB/s |"))
    idle = next(t for t in tables if t.startswith("| server | RSS KiB/conn |"))
    for target in TARGETS:
        for table in (ops, streams, idle):
            row = next((ln for ln in table.splitlines() if ln.startswith(f"| {target}")), None)
            assert row is not None, f"no {target} row in\n{table}"
            assert "n/a" not in row, row
    ganesha = next(ln for ln in ops.splitlines() if ln.startswith("| ganesha"))
    assert ganesha.count("(1.00)") == 4  # the reference, against itself
    assert "| workload | best Ferry model | ratio to Ganesha | target | met |" in cp.stdout
    assert "Duplicate request cache, per non-idempotent call" in cp.stdout
    assert "Machine: nproc" in cp.stdout and "nfs-ganesha" in cp.stdout
    assert docs.read_text().count("## Server models vs NFS-Ganesha") == 1

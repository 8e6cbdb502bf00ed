"""``ferry bench client`` runs end to end with every client (tiny size; no timing asserts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tools import require_tool

pytestmark = [pytest.mark.interop, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_client_bench_smoke(tmp_path: Path, libnfs_tools: dict[str, str]) -> None:
    require_tool("ganesha.nfsd", "nfs-ganesha")
    require_tool("rpcbind", "rpcbind")
    docs = tmp_path / "benchmarks.md"
    cp = subprocess.run(
        [sys.executable, "-m", "ferry", "bench", "client", "--size-mib", "2", "--repeat", "2",
         "--workdir", str(tmp_path / "work"), "--local-dir", str(tmp_path / "local"),
         "--write-docs", str(docs)],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
    )  # fmt: skip
    out = cp.stdout + "\n--- stderr ---\n" + cp.stderr
    assert cp.returncode == 0, out
    rows = [ln for ln in cp.stdout.splitlines() if ln.startswith("| ") and "MB/s" in ln]
    assert [ln.split(" | ")[0] for ln in rows] == [
        "| Ferry read_file/write_file", "| Ferry open()",
        "| Ferry open() read()/write() of 1 MiB pieces",
        "| Ferry open() read()/write() whole", "| libnfs nfs-cp (C)",
        "| nfs-rs (Rust)", "| nfs-rs (Rust) read()/write() whole",
        "| no NFS: local file (tmpfs), open()",
        "| no NFS: local file (tmpfs), open() read()/write() whole",
    ], out  # fmt: skip
    assert all(ln.count("MB/s") == 2 for ln in rows), out  # read and write measured
    ratios = [ln for ln in cp.stdout.splitlines() if " / " in ln and "MB/s" not in ln]
    assert len(ratios) == 12 + 4 and all("–" not in ln for ln in ratios), out  # 4 x 3 peers,
    # then one whole read()/write() against pieces: Ferry's twice (BLOCK, 1 MiB), nfs-rs, local
    assert "nproc" in cp.stdout and "nfs-rs 0." in cp.stdout
    assert docs.read_text().count("## NFS clients against NFS-Ganesha") == 1
    assert not (tmp_path / "work").exists() and not (tmp_path / "local").exists()

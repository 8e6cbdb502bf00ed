"""The benchmark script runs end to end (tiny sizes; no timing asserts)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.tools import require_tool

pytestmark = [pytest.mark.interop, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_server_bench_smoke(tmp_path: Path, libnfs_tools: dict[str, str]) -> None:
    require_tool("ganesha.nfsd", "nfs-ganesha")
    require_tool("rpcbind", "rpcbind")
    docs = tmp_path / "benchmarks.md"
    cp = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks" / "server_bench.py"),
            "--size-mib",
            "4",
            "--entries",
            "500",
            "--repeat",
            "1",
            "--workdir",
            str(tmp_path / "work"),
            "--local-dir",
            str(tmp_path / "local"),
            "--write-docs",
            str(docs),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = cp.stdout + "\n--- stderr ---\n" + cp.stderr
    assert cp.returncode == 0, out
    for row in ("sequential read 4 MiB", "sequential write 4 MiB", "list 500 entries"):
        line = next((ln for ln in cp.stdout.splitlines() if row in ln), None)
        assert line is not None, out
        assert "failed" not in line and "not run" not in line, out
        assert line.count("MB/s") + line.count("entries/s") == 2, line  # both servers measured
    assert "| operation | Ferry | NFS-Ganesha | Ferry/Ganesha |" in cp.stdout
    assert "nproc" in cp.stdout and "nfs-ganesha" in cp.stdout
    assert docs.read_text().count("## Ferry vs NFS-Ganesha") == 1

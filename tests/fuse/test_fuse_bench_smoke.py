"""``ferry bench fuse`` runs end to end in its quick mode (tiny size; no timing asserts)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fusetest import SERVERS

from helpers import peers
from helpers.tools import require_tool


@pytest.mark.parametrize("server", SERVERS)
def test_fuse_bench_quick(server: str, tmp_path: Path) -> None:
    require_tool("fusermount3", "fuse3")
    if server == "ganesha":
        require_tool("ganesha.nfsd", "nfs-ganesha")
        require_tool("rpcbind", "rpcbind")
    docs = tmp_path / "benchmarks.md"
    cp = subprocess.run(
        [sys.executable, "-m", "ferry", "bench", "fuse", "--quick", "--size-mib", "4",
         "--server", server, "--workdir", str(tmp_path / "work"),
         "--local-dir", str(tmp_path / "local"), "--write-docs", str(docs)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(peers.SRC_DIR)},
    )  # fmt: skip
    out = cp.stdout + "\n--- stderr ---\n" + cp.stderr
    assert cp.returncode == 0, out
    rows = [ln for ln in cp.stdout.splitlines() if ln.startswith("| ") and "MB/s" in ln]
    assert [ln.split(" | ")[0] for ln in rows] == [
        "| client API: open(), 8 MiB blocks", "| client API: read_file/write_file",
        "| mount: dd bs=1M (write: conv=fsync)", "| mount: cat",
    ], out  # fmt: skip
    assert all(ln.count("MB/s") == 2 for ln in rows), out  # read and write measured
    ratios = [ln for ln in cp.stdout.splitlines() if ln.startswith(("| dd |", "| cat |"))]
    assert len(ratios) == 2 and all("–" not in ln for ln in ratios), out
    assert docs.read_text().count("## FUSE mount vs client API") == 1
    assert not (tmp_path / "work").exists() and not (tmp_path / "local").exists()

"""``ferry bench fuse`` runs end to end (tiny size, two repeats; no timing asserts), and
how it pairs the mount's runs with the API's."""

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
        [sys.executable, "-m", "ferry", "bench", "fuse", "--repeat", "2", "--size-mib", "4",
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
    cells = [cell for ln in ratios for cell in ln.strip("| ").split(" | ")[1:]]
    assert len(cells) == 4 and all(cell.count(" (per repeat ") == 1 for cell in cells), out
    lines = [ln for ln in cp.stdout.splitlines() if not ln.startswith("| ---")]
    cpu = [ln for ln in lines if ln.endswith(" |") and ln.count(" | ") == 4]
    assert [ln.split(" | ")[0] for ln in cpu[1:]] == [
        "| api read", "| dd read", "| cat read", "| api write", "| dd write", "| cat write",
    ], out  # fmt: skip
    for ln in cpu[1:]:  # server, mount, caller, sum: seconds, the sum theirs
        server, mount, caller, total = map(float, ln.strip("| ").split(" | ")[1:])
        assert min(server, mount, caller) >= 0 and abs(server + mount + caller - total) < 0.002
    assert docs.read_text().count("## FUSE mount vs client API") == 1
    assert not (tmp_path / "work").exists() and not (tmp_path / "local").exists()


def test_ratios_within_a_repeat_pair_the_runs_made_back_to_back() -> None:
    sys.path.insert(0, str(peers.REPO_ROOT / "benchmarks"))
    import fuse_bench
    from timings import Result

    api = Result([1.0, 1.0, 1.0])
    assert fuse_bench.paired(Result([2.0, 1.0, 4.0]), api) == [0.5, 1.0, 0.25]
    assert fuse_bench.paired(Result([2.0]), api) == []  # a run missing: nothing to pair
    assert fuse_bench.paired(Result([2.0, 1.0, 4.0], error="EIO"), api) == []
    cell = fuse_bench.ratio_cell(0.5, [0.5, 1.0, 0.25])
    assert cell == "0.50 (per repeat 0.50, 0.25–1.00)"
    assert fuse_bench.ratio_cell(None, []) == "–"

"""``ferry bench server --smoke`` runs every workload end to end and writes its report (tiny
sizes; no timing asserts): the user path (the default ``ferry serve`` and NFS-Ganesha on
disk, third-party clients, ``ferry mount``, the echo ceiling) first, then every server
model and NFS-Ganesha on tmpfs."""

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
USER_PATH = [  # every workload of the headline table, at --smoke sizes
    "nfs-cp write 4 MiB", "nfs-cp read 4 MiB",
    "libnfs 4 KiB writes, 1 MiB", "libnfs 4 KiB reads, 1 MiB",
    *(f"{op}, {c} conn x {d} in flight" for op in ("GETATTR", "LOOKUP", "ACCESS")
      for c, d in ((1, 1), (1, 32), (8, 1), (8, 32))),
    "READDIRPLUS of 300 entries, maxcount 32 KiB", "READDIRPLUS of 300 entries, maxcount 1 MiB",
    "`ls -l` of 300 entries via `ferry mount`",
    *(f"{phase} via `ferry mount`" for phase in ("tar -x", "find", "du -s", "rm -r")),
    *(f"{phase} via the client API" for phase in ("tar -x", "find", "du -s", "rm -r")),
]  # fmt: skip


def test_server_bench_smoke(tmp_path: Path) -> None:
    for tool, package in (("ganesha.nfsd", "nfs-ganesha"), ("rpcbind", "rpcbind"),
                          ("nfs-cp", "libnfs-utils"), ("fusermount3", "fuse3")):  # fmt: skip
        require_tool(tool, package)
    docs = tmp_path / "benchmarks.md"
    cp = subprocess.run(
        [sys.executable, "-m", "ferry", "bench", "server", "--smoke", "--write-docs", str(docs)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(SRC)),  # ``-m ferry`` from this checkout
    )
    out = cp.stdout + "\n--- stderr ---\n" + cp.stderr
    assert cp.returncode == 0, out
    check_user_path(cp.stdout)
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
    text = docs.read_text()
    assert text.count("## Server models vs NFS-Ganesha") == 1
    assert text.count("## User path: default `ferry serve` vs NFS-Ganesha") == 1
    assert text.index("## User path") < text.index("## Server models"), "headline first"
    assert "**Not the user path**" in text


def check_user_path(stdout: str) -> None:
    """Every user-path workload has a figure for both servers, a ratio and server CPU; the
    exports were on a disk, not tmpfs; the echo ceiling was measured."""
    section = stdout.split("## Server models")[0]
    assert "## User path: default `ferry serve` vs NFS-Ganesha" in section, stdout
    rows = {ln.split(" | ")[0].lstrip("| "): ln for ln in section.splitlines()
            if ln.startswith("| ")}  # fmt: skip
    for label in USER_PATH:
        row = next((r for k, r in rows.items() if k.startswith(label)), None)
        assert row is not None, f"no row {label!r} in\n{section}"
        cells = [c.strip() for c in row.strip("| ").split(" | ")]
        assert len(cells) == 7 and "failed" not in row, row
        assert cells[3].startswith("**") and cells[4] in ("met", "not met"), row
        assert all(("µs" in c or " ms" in c) for c in cells[5:]), row
    for mode in ("per-call", "thread-hop"):
        for shape in ("1 conn x 1 in flight", "1 conn x 32 in flight"):
            row = rows.get(f"echo ({mode}), {shape}", "")
            assert row and "failed" not in row, f"no echo ({mode}) {shape} row:\n{section}"
    fs = section.split("(file system: ")[1].split()[0]
    assert fs not in ("tmpfs", "ramfs"), f"the user path's exports were on {fs}, not a disk"

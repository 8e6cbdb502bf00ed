"""What a benchmark ran on: one line of facts every report in docs/benchmarks.md ends with."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_quietly(argv: list[str]) -> str:
    """A command's stdout, stripped; "" if it is missing, fails to start or hangs."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def package_version(name: str) -> str:
    return run_quietly(["dpkg-query", "-W", "-f=${Version}", name]) or "not installed"


def ferry_revision() -> str:
    rev = run_quietly(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"]) or "?"
    dirty = run_quietly(["git", "-C", str(REPO_ROOT), "status", "--porcelain"])
    return rev + (" (+ local changes)" if dirty else "")


def machine_info(*packages: str) -> list[tuple[str, str]]:
    """(name, value) pairs: cores, CPU, kernel, Python, each Debian package's version, Ferry."""
    info = [
        ("nproc", str(os.cpu_count())),
        ("CPU", cpu_model()),
        ("kernel", platform.release()),
        ("Python", platform.python_version()),
    ]
    info += [(name, package_version(name)) for name in packages]
    return [*info, ("Ferry", ferry_revision())]


def machine_line(*packages: str) -> str:
    return "Machine: " + ", ".join(f"{k} {v}" for k, v in machine_info(*packages)) + "."

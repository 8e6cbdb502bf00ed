"""Cap each server's processes to a fraction of a core (a CPU cgroup per server).

The other half of modelling one machine per server on a single host (see link_caps.py):
on two shared cores, a second server process adds no core, so server-bound work cannot
scale. With every server capped to ``cpus`` cores, and ``n x cpus`` well below the
machine's cores, each server is bounded by its own budget as it would be by its own
machine. Uses cgroup v2 when mounted, else v1's ``cpu`` controller (CFS quota); needs
root. The groups are removed on exit, their processes moved back first.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

PERIOD_US = 100_000
V2 = Path("/sys/fs/cgroup")
V1 = Path("/sys/fs/cgroup/cpu")


def _root() -> tuple[Path, bool]:
    """The cgroup directory to create groups in, and whether it is cgroup v2."""
    if (V2 / "cgroup.controllers").exists():
        return V2, True
    if (V1 / "cpu.cfs_quota_us").exists():
        return V1, False
    raise RuntimeError("no CPU cgroup controller mounted (cgroup v2 or v1 'cpu')")


def _make(root: Path, v2: bool, name: str, cpus: float) -> Path:
    group = root / name
    group.mkdir(exist_ok=True)
    quota = max(1000, int(cpus * PERIOD_US))
    if v2:
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
    else:
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    return group


def _release(root: Path, group: Path) -> None:
    """Move any process left back to the root group and remove ``group``."""
    with contextlib.suppress(OSError):
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):
                (root / "cgroup.procs").write_text(pid)
    for _ in range(50):
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.1)


@contextlib.contextmanager
def _hierarchy() -> Iterator[tuple[Path, bool]]:
    """The cgroup directory to make groups in, and whether it is cgroup v2: the one mounted
    where systemd mounts it, or, where none is (a minimal chroot or container), the CPU
    hierarchy mounted on a temporary directory for the while (root only)."""
    try:
        found = _root()
    except RuntimeError:
        if os.geteuid() != 0:
            raise
    else:
        yield found
        return
    with tempfile.TemporaryDirectory(prefix="ferry-cgroup-") as where:
        for fstype, options in (("cgroup2", ()), ("cgroup", ("-o", "cpu"))):
            mount = ["mount", "-t", fstype, *options, fstype, where]
            if subprocess.run(mount, capture_output=True, check=False).returncode:
                continue
            try:
                v2 = fstype == "cgroup2"
                if not v2 or "cpu" in (Path(where) / "cgroup.controllers").read_text().split():
                    yield Path(where), v2
                    return
            finally:
                subprocess.run(["umount", where], capture_output=True, check=False)
    raise RuntimeError("no CPU cgroup controller mounted or mountable (cgroup v2 or v1 'cpu')")


@contextlib.contextmanager
def server_cpus(servers: Sequence[Sequence[int]], cpus: float) -> Iterator[list[Path]]:
    """Put each server's processes (pid lists) in a group capped to ``cpus`` cores; yields
    the groups' directories."""
    with _hierarchy() as (root, v2):
        groups = [
            _make(root, v2, f"ferry-bench-{os.getpid()}-{i}", cpus) for i in range(len(servers))
        ]
        try:
            for group, pids in zip(groups, servers, strict=True):
                for pid in pids:
                    (group / "cgroup.procs").write_text(str(pid))
            yield groups
        finally:
            for group in groups:
                _release(root, group)

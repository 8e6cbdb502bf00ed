"""What /proc/PID/stat tells the benchmarks: CPU time used, and which session a process is in."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses): state is [0], session [3], utime [11], stime [12]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` (processes gone meanwhile count 0)."""
    ticks = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError):
            fields = stat_fields(pid)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def session_pids(sids: list[int]) -> list[int]:
    """Every process in the sessions ``sids`` (a server and the workers it forked)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat_fields(d.name)[3]) in sids:
                    out.append(int(d.name))
    return out

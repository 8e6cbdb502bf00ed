"""Helpers for the FUSE tests: ``ferry mount`` as a subprocess, and /proc/mounts checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import peers


def mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point according to /proc/mounts."""
    target = str(path.resolve())
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target for line in f)


@dataclass
class Mount:
    server: peers.FerryServer
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if mounted(self.path):  # never leave a dead mount behind
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
        return self.proc.returncode


def start_mount(server: peers.FerryServer, where: Path, *extra: str) -> Mount:
    where.mkdir(parents=True, exist_ok=True)
    log = where.parent / f"{where.name}.log"
    env = dict(os.environ, PYTHONPATH=str(peers.SRC_DIR))
    argv = [sys.executable, "-m", "ferry", "mount", server.url, str(where), "--foreground"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*argv, *extra], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
    m = Mount(server, where, proc, log)
    deadline = time.monotonic() + 20
    while not (mounted(where) and b"ferry: mounted" in log.read_bytes()):
        if proc.poll() is not None or time.monotonic() > deadline:
            m.stop()
            pytest.fail(f"ferry mount did not come up:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    return m

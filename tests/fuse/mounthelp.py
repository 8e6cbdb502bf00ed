"""``ferry mount`` as a subprocess, and /proc/mounts checks (no pytest: the FUSE benchmark
uses this module too, and raises ``peers.PeerError`` where a test would fail)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from helpers import peers


class Server(Protocol):
    """What a mount needs of a peer: ``FerryServer`` and ``GaneshaServer`` both fit."""

    @property
    def export(self) -> Path: ...

    @property
    def url(self) -> str: ...


def mounted(path: Path) -> bool:
    """Whether ``path`` is a mount point according to /proc/mounts (no access to the mount
    itself, which would hang on a mount whose daemon is stuck)."""
    target = str(path.resolve())
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target for line in f)


@dataclass
class Mount:
    server: Server
    path: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the mount process and wait; never leaves a mount or a process behind."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", str(self.path)], check=False)
        return self.proc.returncode


def start_mount(
    server: Server, where: Path, *extra: str, timeout: float = 20.0, url: str | None = None
) -> Mount:
    """``ferry mount URL WHERE --foreground EXTRA...`` (URL: the server's unless given),
    returned once it is mounted."""
    peers.need_tool("fusermount3", "fuse3")
    where.mkdir(parents=True, exist_ok=True)
    log = where.parent / f"{where.name}.log"
    env = dict(os.environ, PYTHONPATH=str(peers.SRC_DIR))
    argv = [sys.executable, "-m", "ferry", "mount", url or server.url, str(where), "--foreground"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*argv, *extra], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, start_new_session=True,
        )  # fmt: skip
    m = Mount(server, where, proc, log)
    deadline = time.monotonic() + timeout
    while not (mounted(where) and b"ferry: mounted" in log.read_bytes()):
        if proc.poll() is not None or time.monotonic() > deadline:
            m.stop()
            raise peers.PeerError(f"ferry mount did not come up:\n{m.text()}")
        time.sleep(0.05)
    return m

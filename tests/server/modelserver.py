"""Run ``python -m ferry serve --model M`` as a subprocess and look at it through /proc.

Plain Python (no pytest), so ``benchmarks/models_bench.py`` uses it too. Loopback only;
every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_READY = re.compile(rb"^ferry: serving .* on 127\.0\.0\.1:(\d+) ")

# name -> extra ``ferry serve`` arguments; "async-2" is the async model with two processes.
VARIANTS: dict[str, tuple[str, ...]] = {
    "serial": ("--model", "serial"),
    "thread": ("--model", "thread"),
    "process": ("--model", "process"),
    "prefork": ("--model", "prefork", "--workers", "3"),
    "async": ("--model", "async", "--workers", "1"),
    "async-2": ("--model", "async", "--workers", "2"),
}
MULTI_PROCESS = ("process", "prefork", "async-2")


@dataclass
class ModelServer:
    """A running ``ferry serve`` subprocess."""

    proc: subprocess.Popen[bytes]
    port: int
    export: Path
    stderr_path: Path
    stopped: bool = field(default=False)
    forks: int = 0
    """Worker processes the server forks at start-up (prefork, async with several)."""
    banner: str = ""
    """What it printed up to and with its ready line (the start-up banner)."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def pids(self) -> list[int]:
        """The server process and all its descendants."""
        return [self.pid, *descendants(self.pid)]

    def workers(self) -> list[int]:
        return descendants(self.pid)

    def fd_count(self) -> int:
        return sum(_fd_count(p) for p in self.pids())

    def fd_report(self) -> dict[int, list[str]]:
        """What each process has open, for failure messages."""
        report = {}
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fds = os.listdir(f"/proc/{pid}/fd")
                report[pid] = sorted(_readlink(f"/proc/{pid}/fd/{fd}") for fd in fds)
        return report

    def rss_kib(self) -> int:
        return sum(_rss_kib(p) for p in self.pids())

    def wait_settled(self, timeout: float = 10.0) -> None:
        """Until the server serves from every process it forks at start-up: each worker
        has answered a NULL call. The connections are held open (a prefork worker serves
        one at a time, so the next goes to another worker), then closed, and this waits
        until the server has let go of them too."""
        deadline = time.monotonic() + timeout
        held: list[socket.socket] = []
        served: set[int] = set()
        try:
            while True:
                conn = socket.create_connection(("127.0.0.1", self.port), timeout)
                held.append(conn)
                if _null_call(conn) and (pid := serving_pid(self, conn)) is not None:
                    served.add(pid)
                if len(served - {self.pid}) >= self.forks or not self.forks and served:
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"{len(served)} of {self.forks} workers served")
        finally:
            ports = [conn.getsockname()[1] for conn in held]
            for conn in held:
                conn.close()
        for port in ports:  # the server's ends are gone before a test counts descriptors
            while _holder(self, port) is not None and time.monotonic() < deadline:
                time.sleep(0.02)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM the parent (it stops its workers); returns the exit status."""
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for pid in self.pids():
                _kill(pid)
            self.proc.wait(5)
            raise
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def start(
    export: Path,
    state: Path,
    args: Sequence[str],
    log: Path,
    timeout: float = 20.0,
    serve_path: bool = True,
) -> ModelServer:
    """Start a server on a free loopback port and wait for its ready line. Without
    ``serve_path`` the exports come from a ``--config`` in ``args`` alone."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    argv = [sys.executable, "-m", "ferry", "serve", *([str(export)] * serve_path), "--port", "0"]
    argv += ["--state-dir", str(state), "--no-root-squash", *args]
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and proc.poll() is None:
            if sel.select(0.2):
                buf += os.read(proc.stdout.fileno(), 65536)
            for line in buf.splitlines():
                if m := _READY.match(line):
                    banner = buf.decode(errors="replace")
                    port = int(m.group(1))
                    return ModelServer(proc, port, export, log, forks=forks(args), banner=banner)
    proc.kill()
    proc.wait(5)
    proc.stdout.close()
    raise RuntimeError(f"ferry did not start: {buf!r}\n{log.read_text(errors='replace')}")


def forks(args: Sequence[str]) -> int:
    """Worker processes ``ferry serve args`` forks at start-up: what the server works out
    (``ferry.server.models.worker_processes``) from the same model, workers and backend."""
    from ferry.server.config import ExportConfig, ServerConfig, load
    from ferry.server.models import worker_processes

    def option(name: str, default: str) -> str:
        return args[args.index(name) + 1] if name in args else default

    if "--config" in args:
        config = load(Path(option("--config", "")))
    else:
        config = ServerConfig([ExportConfig("/", backend=option("--backend", "local"))])
    config.model = option("--model", config.model)
    config.workers = int(option("--workers", str(config.workers)))
    n = worker_processes(config)
    return n if config.model == "prefork" or (config.model == "async" and n > 1) else 0


_NULL_CALL = struct.pack(">11I", 0x80000028, 0x5E771ED, 0, 2, 100003, 3, 0, 0, 0, 0, 0)
"""A record: NFSv3 NULL with AUTH_NONE (RFC 5531), xid 0x5E771ED."""


def _null_call(conn: socket.socket) -> bool:
    """Whether the server answered a NULL call on ``conn`` (False: it closed it)."""
    try:
        conn.sendall(_NULL_CALL)
        reply = b""
        while len(reply) < 28:  # record mark + xid, REPLY, MSG_ACCEPTED, verifier, SUCCESS
            chunk = conn.recv(28 - len(reply))
            if not chunk:
                return False
            reply += chunk
    except OSError:
        return False
    return reply[4:8] == _NULL_CALL[4:8]


# -- /proc ---------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: list[int] = []
    todo = [pid]
    while todo:
        cur = todo.pop()
        kids = [p for p, pp in parents.items() if pp == cur]
        found += kids
        todo += kids
    return found


def _fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def serving_pid(server: ModelServer, client: socket.socket) -> int | None:
    """Which process of ``server`` holds the server end of ``client``'s connection."""
    return _holder(server, client.getsockname()[1])


def _holder(server: ModelServer, lport: int) -> int | None:
    """Which process of ``server`` holds the server end of the connection from ``lport``."""
    want = f"0100007F:{server.port:04X} 0100007F:{lport:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        if f"{cols[1]} {cols[2]}" == want:
            inode = cols[9]
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    holders = []
    for pid in server.pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    holders.append(pid)
                    break
            except OSError:
                continue
    workers = [p for p in holders if p != server.pid]  # the parent may not have closed it yet
    return (workers or holders or [None])[0]

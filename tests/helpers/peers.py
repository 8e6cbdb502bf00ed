"""Start and stop Ferry and the reference peers (NFS-Ganesha, rpcbind) on loopback.

Plain Python, no pytest: tests/conftest.py wraps these in fixtures and
benchmarks/server_bench.py imports them directly.

Traps this module encodes are documented in the project's notes on reference servers:
Ganesha daemonizes, needs rpcbind and an explicit pid file, and clobbers rpcbind
registrations of other instances, so every client URL carries explicit ports.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_ROOT / "src"
LOOPBACK = "127.0.0.1"

# Extra places to look for tools (rpcbind lives in /usr/sbin, which a non-login PATH may lack).
_EXTRA_BIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")

# "ferry: serving <PATH> on <HOST>:<PORT>", possibly followed by more text on the line.
READY_RE = re.compile(
    r"^ferry: serving (?P<path>.+) on (?P<host>\[[^\]]+\]|[^\s\[\]:]+):(?P<port>\d+)(?:\s.*)?$"
)
TRACEBACK_MARKER = "Traceback (most recent call last)"

# Tests and benchmarks run as root, so libnfs sends AUTH_SYS uid 0. Ferry squashes root to
# nobody by default (like exports(5)); the reference Ganesha config says
# Squash = No_Root_Squash, so Ferry gets the same policy for a like-for-like comparison.
FERRY_PEER_ARGS: tuple[str, ...] = ("--no-root-squash",)


class PeerError(RuntimeError):
    """A server or tool did not behave as expected (with its output attached)."""


class ToolMissing(PeerError):
    """A required third-party binary is not installed."""


# --------------------------------------------------------------------------- tools


def find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in _EXTRA_BIN_DIRS:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


def tool_missing_message(name: str, package: str) -> str:
    return (
        f"required tool {name!r} not found: install Debian package {package} "
        f"(make test installs every package scripts/debian-packages lists)"
    )


def need_tool(name: str, package: str) -> str:
    """Return the path of `name` or raise ToolMissing with an install hint."""
    path = find_tool(name)
    if path is None:
        raise ToolMissing(tool_missing_message(name, package))
    return path


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = 120.0,
    check: bool = True,
    stdout: int | None = subprocess.PIPE,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command with a hard timeout; on failure raise PeerError carrying its output."""
    argv = [os.fspath(a) for a in args]
    try:
        cp = subprocess.run(
            argv,
            stdout=stdout,
            stderr=subprocess.PIPE,
            input=input,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise PeerError(f"command timed out after {timeout}s: {' '.join(argv)}") from e
    if check and cp.returncode != 0:
        out = (cp.stdout or b"")[-2000:].decode(errors="replace")
        err = (cp.stderr or b"")[-4000:].decode(errors="replace")
        raise PeerError(
            f"command failed (exit {cp.returncode}): {' '.join(argv)}\n"
            f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
        )
    return cp


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_random_file(path: Path, size: int, seed: int = 0) -> str:
    """Write `size` pseudo-random bytes (deterministic per seed) and return their sha256."""
    rng = random.Random(f"ferry-{seed}-{size}")
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left > 0:
            chunk = rng.randbytes(min(left, 1 << 20))
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- ports


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port that was free a moment ago on `host`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_ports(n: int, host: str = LOOPBACK) -> list[int]:
    """`n` distinct free ports (sockets held open together so they differ)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(pred, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def libnfs_url(host: str, export: str, rel: str, nfsport: int, mountport: int) -> str:
    """libnfs URL with explicit ports (no portmapper look-ups)."""
    export = export.rstrip("/")
    rel = rel.lstrip("/")
    return f"nfs://{host}{export}/{rel}?version=3&nfsport={nfsport}&mountport={mountport}"


def url_at(server: FerryServer | GaneshaServer, path: str) -> str:
    """A client URL of ``server`` for any absolute ``path`` (an export or not), ports given."""
    if isinstance(server, GaneshaServer):
        return libnfs_url(server.host, path, "", server.nfs_port, server.mnt_port)
    return libnfs_url(server.host, path, "", server.port, server.port)


# --------------------------------------------------------------------------- ferry


def _tail(path: Path, limit: int = 6000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return "<no output>"
    return data[-limit:].decode(errors="replace")


class FerryServer:
    """Ferry as a subprocess: `python -m ferry serve EXPORT --port P --bind H --state-dir S`."""

    def __init__(
        self,
        export: Path,
        state_dir: Path,
        log_dir: Path,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
        ready_timeout: float = 20.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.export = Path(export).resolve()
        self.state_dir = Path(state_dir)
        self.log_dir = Path(log_dir)
        self.host = host
        self.port = port
        self.extra_args = list(extra_args)
        self.python = python
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.generation = -1
        self.ready_line = ""
        self.stdout_paths: list[Path] = []
        self.stderr_paths: list[Path] = []
        self.problems: list[str] = []  # e.g. "needed SIGKILL"
        self.exit_codes: list[int] = []

    # -- info
    @property
    def url(self) -> str:
        return self.file_url("")

    def file_url(self, rel: str) -> str:
        return libnfs_url(self.host, str(self.export), rel, self.port, self.port)

    def argv(self) -> list[str]:
        return [
            self.python, "-m", "ferry", "serve", str(self.export),
            "--port", str(self.port), "--bind", self.host,
            "--state-dir", str(self.state_dir), *self.extra_args,
        ]  # fmt: skip

    def stderr_text(self) -> str:
        return "".join(_tail(p, 1 << 20) for p in self.stderr_paths)

    def tracebacks(self) -> str:
        """Stderr of every run so far if any contained a Python traceback, else ''."""
        text = self.stderr_text()
        return text if TRACEBACK_MARKER in text else ""

    # -- lifecycle
    def start(self) -> FerryServer:
        if self.proc is not None:
            raise PeerError("ferry already running")
        self.export.mkdir(parents=True, exist_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.generation += 1
        out_p = self.log_dir / f"ferry.{self.generation}.stdout"
        err_p = self.log_dir / f"ferry.{self.generation}.stderr"
        self.stdout_paths.append(out_p)
        self.stderr_paths.append(err_p)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(SRC_DIR)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        with open(out_p, "wb") as out, open(err_p, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                cwd=str(self.log_dir),
                start_new_session=True,
            )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            m = self._find_ready(out_p)
            if m is not None:
                self.ready_line = m.group(0)
                port = int(m.group("port"))
                if self.port not in (0, port):
                    self.stop()
                    raise PeerError(f"ferry asked for port {self.port} but reports {port}")
                self.port = port
                return self
            rc = self.proc.poll()
            if rc is not None:
                self.proc = None
                self.exit_codes.append(rc)
                raise PeerError(
                    f"ferry exited (code {rc}) before printing 'ferry: serving ... on HOST:PORT'\n"
                    f"argv: {' '.join(self.argv())}\n"
                    f"--- stdout ---\n{_tail(out_p)}\n--- stderr ---\n{_tail(err_p)}"
                )
            if time.monotonic() >= deadline:
                self.stop()
                raise PeerError(
                    f"ferry printed no 'ferry: serving ... on HOST:PORT' line within "
                    f"{self.ready_timeout}s (is stdout flushed?)\n"
                    f"--- stdout ---\n{_tail(out_p)}\n--- stderr ---\n{_tail(err_p)}"
                )
            time.sleep(0.05)

    @staticmethod
    def _find_ready(path: Path) -> re.Match[str] | None:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return None
        for line in text.splitlines():
            m = READY_RE.match(line.strip())
            if m:
                return m
        return None

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL after stop_timeout. Returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.problems.append(
                    f"ferry did not exit within {self.stop_timeout}s of SIGTERM; sent SIGKILL"
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        else:
            self.problems.append(f"ferry had already exited (code {proc.returncode}) before stop")
        assert proc.returncode is not None
        self.exit_codes.append(proc.returncode)
        return proc.returncode

    def restart(self) -> FerryServer:
        """SIGTERM, then start again on the same port and state dir."""
        if self.port == 0:
            raise PeerError("restart() before the first start")
        self.stop()
        return self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> FerryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- rpcbind


def ensure_rpcbind(timeout: float = 10.0) -> bool:
    """Start `rpcbind -w` if none is running. Returns True if this call started it.

    An rpcbind we did not start is never touched. One we did start is left running
    too: other Ganesha instances (another test session, a benchmark) may have
    registered with it meanwhile, and CI ends every process after the run anyway.
    """
    if port_accepts(LOOPBACK, 111):
        return False
    exe = need_tool("rpcbind", "rpcbind")
    # rpcbind daemonizes; a concurrent start loses the lock and exits non-zero: fine.
    run([exe, "-w"], timeout=timeout, check=False)
    if not wait_until(lambda: port_accepts(LOOPBACK, 111), timeout):
        raise PeerError(f"rpcbind did not start listening on {LOOPBACK}:111 within {timeout}s")
    return True


# --------------------------------------------------------------------------- ganesha

GANESHA_CONF = """\
NFS_CORE_PARAM {{
    Protocols = 3;
    NFS_Port = {nfs_port};
    MNT_Port = {mnt_port};
    Bind_Addr = {host};
    Enable_NLM = false;
    Enable_RQUOTA = false;
    Enable_UDP = false;
}}
NFSV4 {{ Graceless = true; }}
NFS_KRB5 {{ Active_krb5 = false; }}
MDCACHE {{ Dir_Chunk = 0; }}
EXPORT {{
    Export_Id = 1;
    Path = {export};
    Pseudo = {export};
    Access_Type = RW;
    Squash = No_Root_Squash;
    Attr_Expiration_Time = 0;
    Protocols = 3;
    Transports = TCP;
    SecType = sys;
    FSAL {{ Name = VFS; }}
}}
"""


def _pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie (daemonized Ganesha is not our child)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in status.splitlines():
        if line.startswith("State:"):
            return "Z" not in line.split()[1]
    return True


def _mount_for_ganesha(export: Path) -> bool:
    """Ganesha's VFS FSAL finds an export's file system among the mounts (/etc/mtab). In a
    chroot whose root is no mount point (a minimal root such as tools/fresh-debian-check's)
    none covers the export, and Ganesha exports nothing: there, bind-mount the export on
    itself (root only) so that one does. Returns True if it did (undone by ``stop``)."""
    mounts = [
        line.split()[1].replace("\\040", " ")
        for line in Path("/proc/self/mounts").read_text().splitlines()
    ]
    path = str(export)
    if any(m == "/" or path == m or path.startswith(m + "/") for m in mounts):
        return False
    if os.geteuid() != 0:
        raise PeerError(f"no mount covers {export} (a chroot?): Ganesha cannot export it")
    run(["mount", "--bind", path, path], timeout=30)
    if not _BOUND:
        atexit.register(lambda: [_unmount(p) for p in list(_BOUND)])  # a test that died
    _BOUND.add(export)
    return True


_BOUND: set[Path] = set()
"""Exports bind-mounted by ``_mount_for_ganesha`` and not yet unmounted."""


def _unmount(export: Path) -> None:
    _BOUND.discard(export)
    run(["umount", "--lazy", str(export)], timeout=30, check=False)


REGISTER_TRIES = 6  # Ganesha starts before giving up on registering with rpcbind (30 s of waits)


class GaneshaServer:
    """NFS-Ganesha (VFS FSAL, NFSv3 only) exporting one directory on loopback."""

    def __init__(
        self,
        export: Path,
        workdir: Path,
        *,
        host: str = LOOPBACK,
        nfs_port: int | None = None,
        mnt_port: int | None = None,
        ready_timeout: float = 20.0,
        stop_timeout: float = 20.0,
    ) -> None:
        self.export = Path(export).resolve()
        self.workdir = Path(workdir)
        self.host = host
        if nfs_port is None or mnt_port is None:
            nfs_port, mnt_port = free_ports(2, host)
        self.nfs_port = nfs_port
        self.mnt_port = mnt_port
        self.port = nfs_port  # for symmetry with FerryServer
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self.conf = self.workdir / "ganesha.conf"
        self.log = self.workdir / "ganesha.log"
        self.pidfile = self.workdir / "ganesha.pid"
        self.pid: int | None = None
        self.started_rpcbind = False
        self.bound = False  # the export bind-mounted on itself (see _mount_for_ganesha)

    @property
    def url(self) -> str:
        return self.file_url("")

    def file_url(self, rel: str) -> str:
        return libnfs_url(self.host, str(self.export), rel, self.nfs_port, self.mnt_port)

    @property
    def ports(self) -> tuple[int, ...]:
        return (self.nfs_port, self.mnt_port)

    def log_tail(self) -> str:
        return _tail(self.log)

    def start(self) -> GaneshaServer:
        exe = need_tool("ganesha.nfsd", "nfs-ganesha")
        vfs = [
            p for p in ("/usr/lib/x86_64-linux-gnu/ganesha", "/usr/lib/ganesha") if Path(p).is_dir()
        ]
        if vfs and not any(Path(d, "libfsalvfs.so").exists() for d in vfs):
            raise ToolMissing(
                tool_missing_message("libfsalvfs.so (Ganesha VFS FSAL)", "nfs-ganesha-vfs")
            )
        self.started_rpcbind = ensure_rpcbind()
        self.export.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            GANESHA_CONF.format(
                nfs_port=self.nfs_port, mnt_port=self.mnt_port, host=self.host, export=self.export
            )
        )
        self.bound = self.bound or _mount_for_ganesha(self.export)  # restarts: made already
        for attempt in range(1, REGISTER_TRIES + 1):
            try:
                return self._launch(exe)
            except PeerError:
                # Ganesha replaces the rpcbind entries of any other instance, and stops
                # if it cannot; over TCP (no rpcbind socket, as in a chroot) it may not
                # replace those another Ganesha made through the socket: wait for that one.
                if "Cannot register" not in _tail(self.log) or attempt == REGISTER_TRIES:
                    self.stop()
                    raise
                time.sleep(2.0 * attempt)
        raise AssertionError("unreachable")

    def _launch(self, exe: str) -> GaneshaServer:
        for p in (self.log, self.pidfile):
            p.unlink(missing_ok=True)
        self.pid = None
        # Ganesha daemonizes: the launcher exits at once, the daemon writes PIDFILE.
        run(
            [exe, "-f", self.conf, "-L", self.log, "-p", self.pidfile, "-N", "NIV_EVENT"],
            timeout=30,
        )
        deadline = time.monotonic() + self.ready_timeout
        while True:
            text = _tail(self.log, 1 << 20)
            if self.pid is None and self.pidfile.exists():
                with contextlib.suppress(ValueError, OSError):
                    self.pid = int(self.pidfile.read_text().strip())
            if "Could not create export" in text:  # it would serve no export, refuse MNT
                self._stop_daemon()
                msg = f"ganesha.nfsd could not export {self.export}; log:\n{text[-4000:]}"
                raise PeerError(msg)
            if "NFS SERVER INITIALIZED" in text and self.pid is not None:
                break
            if self.pid is not None and not _pid_alive(self.pid):
                raise PeerError(f"ganesha.nfsd exited during start-up; log:\n{text[-4000:]}")
            if time.monotonic() >= deadline:
                self._stop_daemon()
                raise PeerError(
                    f"ganesha.nfsd not initialized within {self.ready_timeout}s "
                    f"(rpcbind running? 'Cannot register' in log?); log:\n{text[-4000:]}"
                )
            time.sleep(0.05)
        if not wait_until(lambda: port_accepts(self.host, self.nfs_port), 10):
            self._stop_daemon()
            raise PeerError(f"ganesha initialized but port {self.nfs_port} refuses connections")
        return self

    def stop(self) -> None:
        try:
            self._stop_daemon()
        finally:
            if self.bound:
                self.bound = False
                _unmount(self.export)

    def _stop_daemon(self) -> None:
        pid, self.pid = self.pid, None
        if pid is None:
            with contextlib.suppress(ValueError, OSError):
                pid = int(self.pidfile.read_text().strip())
        if pid is None or not _pid_alive(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_until(lambda: not _pid_alive(pid), self.stop_timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _pid_alive(pid), 10)
            raise PeerError(f"ganesha.nfsd (pid {pid}) ignored SIGTERM for {self.stop_timeout}s")

    def __enter__(self) -> GaneshaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- libnfs


@dataclass(frozen=True)
class LsEntry:
    mode: str
    nlink: int
    uid: int
    gid: int
    size: int
    name: str

    @property
    def is_dir(self) -> bool:
        return self.mode.startswith("d")

    @property
    def is_file(self) -> bool:
        return self.mode.startswith("-")


def parse_nfs_ls(text: str) -> list[LsEntry]:
    """Parse `nfs-ls` output lines: '-rw-r--r--  1     0     0            6 a.txt'."""
    entries = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) != 6 or len(parts[0]) != 10:
            continue
        mode, nlink, uid, gid, size, name = parts
        try:
            entries.append(LsEntry(mode, int(nlink), int(uid), int(gid), int(size), name))
        except ValueError:
            continue
    return entries


def nfs_ls(url: str, *args: str, timeout: float = 120.0) -> list[LsEntry]:
    exe = need_tool("nfs-ls", "libnfs-utils")
    cp = run([exe, *args, url], timeout=timeout)
    return parse_nfs_ls(cp.stdout.decode(errors="replace"))


def nfs_cp(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], timeout: float = 600.0
) -> None:
    exe = need_tool("nfs-cp", "libnfs-utils")
    run([exe, os.fspath(src), os.fspath(dst)], timeout=timeout)


def nfs_cat_sha256(url: str, timeout: float = 600.0) -> tuple[str, int]:
    """Stream `nfs-cat URL` and return (sha256, byte count) without buffering it all."""
    exe = need_tool("nfs-cat", "libnfs-utils")
    h = hashlib.sha256()
    n = 0
    with subprocess.Popen(
        [exe, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    ) as p:
        assert p.stdout is not None and p.stderr is not None
        watchdog = threading.Timer(timeout, p.kill)  # bounds a hung nfs-cat
        watchdog.start()
        try:
            while chunk := p.stdout.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
            err = p.stderr.read()
            rc = p.wait()
        finally:
            watchdog.cancel()
    if rc == -signal.SIGKILL:
        raise PeerError(f"nfs-cat timed out after {timeout}s: {url}")
    if rc != 0:
        raise PeerError(f"nfs-cat failed (exit {rc}): {url}\n{err.decode(errors='replace')}")
    return h.hexdigest(), n


def iter_lines(path: Path) -> Iterator[str]:
    with open(path, errors="replace") as f:
        yield from f

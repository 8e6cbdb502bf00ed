"""A server that goes away under a mount: --soft gives EIO, --hard blocks and carries on
once the server is back on its port, and the mount can always be unmounted.

Every access that may block runs in a child process with a time limit (a process waiting
in a FUSE request cannot be killed: an in-process hang would hang pytest itself).
"""

from __future__ import annotations

import contextlib
import errno
import random
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fusetest import SERVERS, check_stopped, mount_or_fail, serving
from mounthelp import Mount

from helpers import peers
from helpers.outage import frozen, kill, restart

Server = peers.FerryServer | peers.GaneshaServer
LIMIT = 60.0  # seconds any one child may take: far beyond every timeout configured here
DOWN = 1.5  # seconds a blocked child is watched to see that it stays blocked

READ = """
import sys
try:
    data = open(sys.argv[1], "rb").read()
except OSError as exc:
    print("errno", exc.errno)
else:
    print("ok", data.decode())
"""
WRITE = """
import os, random, sys
data = random.Random(5).randbytes(4 << 20)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.write(fd, data[: 3 << 20])
print("wrote", flush=True)
sys.stdin.readline()
os.write(fd, data[3 << 20 :])
os.close(fd)
print("closed", flush=True)
"""


CHILDREN: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    """Children a failed test left blocked end when their mount is stopped: reap them."""
    yield
    while CHILDREN:
        p = CHILDREN.pop()
        p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.communicate(timeout=LIMIT)


def child(script: str, path: Path) -> subprocess.Popen[str]:
    p = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    CHILDREN.append(p)
    return p


def outcome(p: subprocess.Popen[str], m: Mount | None = None) -> str:
    """What the child printed, once it ended (within LIMIT seconds); on a hang, the end of
    the mount's log says what the client was doing."""
    try:
        out, err = p.communicate(timeout=LIMIT)
    except subprocess.TimeoutExpired:
        log = m.log.read_text(errors="replace")[-6000:] if m is not None else ""
        server = m.server if m is not None else None
        served = server.stderr_text()[-6000:] if isinstance(server, peers.FerryServer) else ""
        pytest.fail(
            f"still blocked after {LIMIT} s\n--- mount log ---\n{log}\n--- server ---\n{served}",
            pytrace=False,
        )
    assert p.returncode == 0, err
    return out.strip()


def next_line(p: subprocess.Popen[str]) -> str:
    """The child's next line of output, waiting at most LIMIT seconds for it."""
    assert p.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(p.stdout, selectors.EVENT_READ)
        if not sel.select(LIMIT):
            pytest.fail(f"no output within {LIMIT} s", pytrace=False)
    return p.stdout.readline()


def read_through(path: Path) -> str:
    return outcome(child(READ, path))


def still_blocked(*procs: subprocess.Popen[str]) -> bool:
    time.sleep(DOWN)
    return all(p.poll() is None for p in procs)


# -- outages ----------------------------------------------------------------------------------


def unmount(m: Mount) -> None:
    """``fusermount3 -u``, and the mount process ends cleanly."""
    res = subprocess.run(["fusermount3", "-u", str(m.path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    check_stopped(m, m.proc.wait(LIMIT))


# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SERVERS)
def test_soft_mount_gives_eio_and_recovers(kind: str, tmp_path: Path) -> None:
    with serving(kind, tmp_path) as server:
        (server.export / "f").write_text("data")
        soft = ("--soft", "--timeout", "0.5", "--retrans", "1")
        m = mount_or_fail(server, tmp_path / "mnt", *soft)
        try:
            assert read_through(m.path / "f") == "ok data"
            with frozen(server):  # each call times out: 0.5 s, resent, 1 s more
                assert read_through(m.path / "g") == f"errno {errno.EIO}"
            kill(server)  # reconnecting fails at once
            assert read_through(m.path / "h") == f"errno {errno.EIO}"
            restart(server)
            assert read_through(m.path / "f") == "ok data"
            kill(server)
            unmount(m)  # with the server gone
        finally:
            m.stop()


@pytest.mark.parametrize("kind", SERVERS)
def test_hard_mount_gives_up_after_retry_for(kind: str, tmp_path: Path) -> None:
    """``--retry-for``: a hard mount waits that long for a server that went away, then
    EIO; the next call tries the server again."""
    with serving(kind, tmp_path) as server:
        (server.export / "f").write_text("data")
        m = mount_or_fail(server, tmp_path / "mnt", "--hard", "--retry-for", "1")
        try:
            assert read_through(m.path / "f") == "ok data"
            kill(server)
            start = time.monotonic()
            assert read_through(m.path / "g") == f"errno {errno.EIO}"
            assert 1.0 <= time.monotonic() - start < LIMIT
            restart(server)
            assert read_through(m.path / "f") == "ok data"
            kill(server)
            unmount(m)  # with the server gone
        finally:
            m.stop()


@pytest.mark.slow
@pytest.mark.parametrize("kind", SERVERS)
def test_hard_mount_blocks_until_the_server_is_back(kind: str, tmp_path: Path) -> None:
    with serving(kind, tmp_path) as server:
        (server.export / "f").write_text("data")
        m = mount_or_fail(server, tmp_path / "mnt", "--hard", "--timeout", "1")
        try:
            writer = child(WRITE, m.path / "w")
            assert writer.stdin is not None
            assert next_line(writer) == "wrote\n"  # 3 MiB written behind, not committed
            kill(server)
            writer.stdin.write("go\n")  # 1 MiB more, then close: COMMIT
            writer.stdin.flush()
            reader = child(READ, m.path / "f")  # LOOKUP
            assert still_blocked(writer, reader), "a hard mount gave up"
            restart(server)
            assert outcome(reader, m) == "ok data"
            assert outcome(writer, m) == "closed"
            expected = random.Random(5).randbytes(4 << 20)
            assert (server.export / "w").read_bytes() == expected
            assert (m.path / "w").read_bytes() == expected
            kill(server)
            unmount(m)  # with the server gone
        finally:
            m.stop()


@pytest.mark.slow
@pytest.mark.parametrize("way_out", ["lazy-unmount", "sigterm"])
def test_a_process_stuck_on_a_dead_server_is_freed(way_out: str, tmp_path: Path) -> None:
    """A process waiting in a hard mount of a dead server cannot even be killed (FUSE waits
    for the daemon's answer), and ``fusermount3 -u`` fails while it waits (the mount is
    busy). A lazy unmount, or stopping ``ferry mount``, gets EIO to it STOP_GRACE seconds
    later, and everything ends."""
    with serving("ferry", tmp_path) as server:
        (server.export / "f").write_text("data")
        m = mount_or_fail(server, tmp_path / "mnt", "--hard")
        try:
            kill(server)
            reader = child(READ, m.path / "f")
            assert still_blocked(reader), "a hard mount gave up"
            if way_out == "sigterm":
                m.proc.send_signal(signal.SIGTERM)
            else:
                res = subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)
                assert res.returncode == 0, res.stderr
            assert outcome(reader) == f"errno {errno.EIO}"
            check_stopped(m, m.proc.wait(LIMIT))
        finally:
            m.stop()

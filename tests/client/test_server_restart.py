"""A server killed (SIGKILL) and started again in the middle of a 256 MiB copy: the client
rides over the outage, as an NFS client does, and the copy completes byte-exact.

Each face that copies, the CLI (``ferry get``/``put``, a subprocess) and the blocking API
(``ferry.connect`` with ``open``), against Ferry (restarted on the same port and state
dir, so the handles stay valid) and NFS-Ganesha (restarted on the same ports). The server
stays down for DOWN seconds, longer than the client used to try before giving up (about
2.4 s), and well within the default limit (``client.retry.DEFAULT_RETRY_FOR``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest

import ferry
from helpers import peers
from helpers.outage import SERVERS, Server, kill, restart, serving

SIZE = 256 << 20
KILL_AT = 24 << 20  # bytes copied before the server is killed
DOWN = 4.0  # seconds the server stays dead
LIMIT = 120.0  # seconds any copy may take, outage included
SRC = str(Path(__file__).resolve().parents[2] / "src")

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # about 10 s each


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 256 MiB file of random bytes (made once for the module) and its sha256."""
    path = tmp_path_factory.mktemp("restart-src") / "big.bin"
    return path, peers.write_random_file(path, SIZE, seed=17)


def _place(source: Path, where: Path) -> None:
    where.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, where)
    except OSError:
        where.write_bytes(source.read_bytes())


def _bytes_in(path: Path) -> int:
    """Bytes in ``path``, or in the regular files under it if it is a directory."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def _outage(server: Server, copied: Callable[[], int], copy: _Copy) -> None:
    """Once KILL_AT bytes are copied, kill the server, wait DOWN seconds, restart it."""
    deadline = time.monotonic() + LIMIT
    while copied() < KILL_AT:
        assert copy.running(), f"the copy ended before the server was killed: {copy.said()}"
        assert time.monotonic() < deadline, f"copied only {copied()} bytes in {LIMIT} s"
        time.sleep(0.005)
    assert copy.running(), f"the copy ended before the server was killed: {copy.said()}"
    kill(server)
    time.sleep(DOWN)
    assert copy.running(), f"the copy gave up while the server was down: {copy.said()}"
    restart(server)


class _Copy(Protocol):
    def running(self) -> bool: ...
    def said(self) -> str: ...


class _Cli:
    """``ferry ARGS...`` as a subprocess."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": SRC}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ferry", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip

    def running(self) -> bool:
        return self.proc.poll() is None

    def said(self) -> str:
        if self.running():
            return "(still running)"
        return self.proc.communicate()[1].decode(errors="replace").strip()

    def finish(self) -> None:
        """The copy ends well, and told the user of the outage, as NFS clients do."""
        try:
            _, err = self.proc.communicate(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"the copy did not end within {LIMIT} s after the restart: {err!r}")
        said = err.decode(errors="replace")
        assert self.proc.returncode == 0, said
        assert "not responding" in said and "still trying for up to 300 s" in said, said
        assert "answers again" in said and "Traceback" not in said, said


@pytest.mark.parametrize("kind", SERVERS)
def test_cli_get_rides_over_a_server_restart(
    kind: str, source: tuple[Path, str], tmp_path: Path
) -> None:
    src, sha = source
    with serving(kind, tmp_path) as server:
        _place(src, server.export / "big.bin")
        (tmp_path / "local").mkdir()
        dst = tmp_path / "local" / "got.bin"  # written as a hidden temporary beside it
        cli = _Cli("get", "--no-progress", server.file_url("big.bin"), str(dst))
        _outage(server, lambda: _bytes_in(dst.parent), cli)
        cli.finish()
        assert peers.sha256_file(dst) == sha


@pytest.mark.parametrize("kind", SERVERS)
def test_cli_put_rides_over_a_server_restart(
    kind: str, source: tuple[Path, str], tmp_path: Path
) -> None:
    src, sha = source
    with serving(kind, tmp_path) as server:
        server.export.mkdir(parents=True, exist_ok=True)
        cli = _Cli("put", "--no-progress", str(src), server.file_url("put.bin"))
        _outage(server, lambda: _bytes_in(server.export), cli)
        cli.finish()
        assert peers.sha256_file(server.export / "put.bin") == sha


class _Copier(threading.Thread):
    """Runs one copy through the blocking API, counting bytes; keeps what it raised."""

    def __init__(self, copy: Callable[[_Copier], None]) -> None:
        super().__init__(daemon=True)
        self.copy, self.done, self.error = copy, 0, None
        self.result = ""

    def running(self) -> bool:
        return self.is_alive()

    def said(self) -> str:
        return "(still running)" if self.is_alive() else repr(self.error)

    def run(self) -> None:
        try:
            self.copy(self)
        except BaseException as exc:  # noqa: BLE001  # reported by the test
            self.error = exc

    def finish(self) -> None:
        self.join(LIMIT)
        assert not self.is_alive(), f"the copy did not end within {LIMIT} s after the restart"
        if self.error is not None:
            raise AssertionError(f"the copy failed: {self.error!r}") from self.error


@pytest.mark.parametrize("kind", SERVERS)
def test_api_read_rides_over_a_server_restart(
    kind: str, source: tuple[Path, str], tmp_path: Path
) -> None:
    src, sha = source
    with serving(kind, tmp_path) as server:
        _place(src, server.export / "big.bin")

        def read(me: _Copier) -> None:
            h = hashlib.sha256()
            with ferry.connect(server.file_url("")) as c, c.open("big.bin", "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
                    me.done += len(chunk)
            me.result = h.hexdigest()

        copier = _Copier(read)
        copier.start()
        _outage(server, lambda: copier.done, copier)
        copier.finish()
        assert copier.done == SIZE and copier.result == sha


@pytest.mark.parametrize("kind", SERVERS)
def test_api_write_rides_over_a_server_restart(
    kind: str, source: tuple[Path, str], tmp_path: Path
) -> None:
    src, sha = source
    with serving(kind, tmp_path) as server:
        server.export.mkdir(parents=True, exist_ok=True)

        def write(me: _Copier) -> None:
            with (
                open(src, "rb") as local,
                ferry.connect(server.file_url("")) as c,
                c.open("put.bin", "wb") as f,
            ):
                while chunk := local.read(1 << 20):
                    f.write(chunk)
                    me.done += len(chunk)

        copier = _Copier(write)
        copier.start()
        _outage(server, lambda: _bytes_in(server.export), copier)
        copier.finish()
        assert peers.sha256_file(server.export / "put.bin") == sha

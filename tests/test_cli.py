"""The ``ferry serve`` command line as a user sees it: start-up errors are one line and
exit code 2 (never a traceback); a good start prints how to mount and stops cleanly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from rawclient import RawClient, mount_status

SRC = Path(__file__).resolve().parents[1] / "src"


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(
        [str(SRC)] + ([e["PYTHONPATH"]] if e.get("PYTHONPATH") else [])
    )
    return e


def ferry(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args],
        capture_output=True,
        text=True,
        env=env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ferry: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "ferry: serving" not in result.stdout
    return lines[0]


@pytest.fixture
def export(tmp_path: Path) -> Path:
    d = tmp_path / "export"
    d.mkdir()
    (d / "hello.txt").write_text("hi\n")
    return d


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


# -- start-up errors ----------------------------------------------------------------------


def test_missing_path(tmp_path: Path) -> None:
    r = ferry("serve", str(tmp_path / "missing"), "--port", "0", "--state-dir", str(tmp_path / "s"))
    assert_one_line_error(r, "does not exist", str(tmp_path / "missing"))


def test_file_instead_of_directory(export: Path, tmp_path: Path) -> None:
    r = ferry("serve", str(export / "hello.txt"), "--port", "0", "--state-dir", str(tmp_path / "s"))
    assert_one_line_error(r, "not a directory", "hello.txt")


def test_no_path_and_no_config() -> None:
    assert_one_line_error(ferry("serve"), "give a directory")


def test_taken_port(export: Path, tmp_path: Path, taken_port: int) -> None:
    r = ferry("serve", str(export), "--port", str(taken_port), "--state-dir", str(tmp_path / "s"))
    assert_one_line_error(r, "already in use", str(taken_port))


def test_taken_portmapper_port(export: Path, tmp_path: Path, taken_port: int) -> None:
    r = ferry(
        "serve",
        str(export),
        "--port",
        "0",
        "--portmapper",
        "--portmapper-port",
        str(taken_port),
        "--state-dir",
        str(tmp_path / "s"),
    )
    assert_one_line_error(r, "portmapper", str(taken_port))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "70000"], "port 70000"),
        (["--port", "0", "--portmapper", "--portmapper-port", "70000"], "--portmapper-port 70000"),
        (["--port", "0", "--bind", "999.1.1.1"], "999.1.1.1"),
    ],
)
def test_bad_options(export: Path, tmp_path: Path, args: list[str], needle: str) -> None:
    r = ferry("serve", str(export), *args, "--state-dir", str(tmp_path / "s"))
    assert_one_line_error(r, needle)


def test_an_out_of_range_port_is_blamed_on_the_command_line(export: Path, tmp_path: Path) -> None:
    """Not on a "config" the user never wrote."""
    r = ferry("serve", str(export), "--port", "70000", "--state-dir", str(tmp_path / "s"))
    line = assert_one_line_error(r, "--port 70000", "0-65535")
    assert "config" not in line


def test_a_command_line_conflict_is_blamed_on_the_command_line(
    export: Path, tmp_path: Path
) -> None:
    r = ferry("serve", str(export), "--model", "serial", "--workers", "2")
    line = assert_one_line_error(r, "command line", "workers")
    assert "config" not in line


def test_taken_metrics_port(export: Path, tmp_path: Path, taken_port: int) -> None:
    """The same one line as a taken NFS port."""
    r = ferry(
        "serve", str(export), "--port", "0", "--state-dir", str(tmp_path / "s"),
        "--metrics", f"127.0.0.1:{taken_port}",
    )  # fmt: skip
    line = assert_one_line_error(r, f"metrics port {taken_port} on 127.0.0.1 is already in use")
    assert "Errno" not in line


def test_version() -> None:
    r = ferry("--version")
    assert r.returncode == 0, r.stderr
    with open(SRC.parent / "pyproject.toml", "rb") as f:
        version = tomllib.load(f)["project"]["version"]
    assert r.stdout.strip() == f"ferry {version}"


def test_bad_config(export: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "ferry.toml"
    cfg.write_text(f'[[export]]\npath = "{export}"\nsquash = true\n')
    assert_one_line_error(ferry("serve", "--config", str(cfg)), "squash", "ferry.toml")
    cfg.write_text("[[export]\n")
    assert_one_line_error(ferry("serve", "--config", str(cfg)), "invalid TOML")
    assert_one_line_error(ferry("serve", "--config", str(tmp_path / "none.toml")), "not found")
    cfg.write_text(
        f'[[export]]\npath = "{tmp_path / "gone"}"\n[server]\nport = 0\n'
        f'state_dir = "{tmp_path / "s"}"\n'
    )
    assert_one_line_error(ferry("serve", "--config", str(cfg)), "does not exist")


def test_unusable_state_dir(export: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = ferry("serve", str(export), "--port", "0", "--state-dir", str(blocker / "state"))
    assert_one_line_error(r, "state directory")


def test_unknown_backend(export: Path, tmp_path: Path) -> None:
    r = ferry(
        "serve",
        str(export),
        "--port",
        "0",
        "--backend",
        "nosuchmodule:Backend",
        "--state-dir",
        str(tmp_path / "s"),
    )
    assert_one_line_error(r, "nosuchmodule")


# -- a good start -------------------------------------------------------------------------


class Served:
    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.out = tmp_path / "stdout"
        self.err = tmp_path / "stderr"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ferry", "serve", *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=env(),
                start_new_session=True,
            )

    def wait_for_output(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(pattern, self.out.read_text(), re.MULTILINE)
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(
            f"no {pattern!r} in output; rc={self.proc.poll()}\n"
            f"stdout: {self.out.read_text()}\nstderr: {self.err.read_text()}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"ferry did not stop on signal {sig} within {timeout}s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_mount_lines_and_stops_on_signal(
    export: Path, tmp_path: Path, sig: int
) -> None:
    served = Served(tmp_path, str(export), "--port", "0", "--state-dir", str(tmp_path / "s"))
    try:
        m = served.wait_for_output(r"^ferry: serving (\S+) on 127\.0\.0\.1:(\d+) .*read-write")
        path, port = m.group(1), int(m.group(2))
        assert path == str(export.resolve())
        assert port != 0
        text = served.out.read_text()
        assert (
            f"sudo mount -t nfs -o vers=3,proto=tcp,port={port},mountport={port},nolock "
            f"127.0.0.1:{path} /mnt"
        ) in text
        assert (
            f"sudo mount_nfs -o vers=3,tcp,port={port},mountport={port},nolocks,resvport "
            f"127.0.0.1:{path} /Volumes/ferry"
        ) in text
        assert f"nfs://127.0.0.1{path}?version=3&nfsport={port}&mountport={port}" in text
        assert f"ferry ls 'nfs://127.0.0.1:{port}{path}'" in text
        assert f"ferry mount 'nfs://127.0.0.1:{port}{path}' /mnt/ferry" in text
        # The printed port is the real one.
        c = RawClient(port, timeout=10)
        try:
            status, fh = mount_status(c, path)
            assert status == 0 and fh
        finally:
            c.close()
    finally:
        code = served.stop(sig)
    assert code == 0
    assert "Traceback" not in served.err.read_text()


def test_serve_read_only_is_announced(export: Path, tmp_path: Path) -> None:
    served = Served(
        tmp_path, str(export), "--port", "0", "--read-only", "--state-dir", str(tmp_path / "s")
    )
    try:
        served.wait_for_output(r"^ferry: serving .* read-only\)$")
    finally:
        assert served.stop() == 0


def test_bench_finds_the_scripts_of_the_checkout() -> None:
    """``ferry bench`` runs benchmarks/ beside src/: the path survives the CLI's own folder."""
    from ferry.cli.bench import BENCH_DIR, SCRIPTS

    assert SRC.parent / "benchmarks" == BENCH_DIR
    assert all((BENCH_DIR / script).is_file() for script, _ in SCRIPTS.values())

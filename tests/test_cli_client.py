"""The client commands of ``ferry`` (ls, cat, cp, stat, mkdir, rm, mv), run as real
subprocesses against a Ferry server, and ls/cat/cp against NFS-Ganesha."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import peers

SRC = str(Path(__file__).resolve().parents[1] / "src")


def ferry(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args], input=stdin, capture_output=True,
        env=env, timeout=120, check=False,
    )  # fmt: skip


def ok(*args: str) -> str:
    res = ferry(*args)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr == b""
    return res.stdout.decode()


def error(status: int, *args: str) -> str:
    res = ferry(*args)
    assert res.returncode == status, (res.stdout, res.stderr)
    lines = res.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: error: "), lines
    return lines[0]


@pytest.fixture
def tree(ferry_server: peers.FerryServer) -> Path:
    root = ferry_server.export
    (root / "d/e").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "d/b.bin").write_bytes(os.urandom(3000))
    (root / "d/e/c").write_bytes(b"")
    return root


def test_ls(ferry_server: peers.FerryServer, tree: Path) -> None:
    assert ok("ls", ferry_server.url).split() == ["a.txt", "d"]
    long = ok("ls", "-l", ferry_server.url).splitlines()
    assert long[0].startswith("-rw") and long[0].split()[4] == "6" and long[1].startswith("d")
    recursive = ok("ls", "-R", ferry_server.file_url("d"))
    assert recursive.splitlines() == [
        f"{tree}/d:", "b.bin", "e", "", f"{tree}/d/e:", "c",
    ]  # fmt: skip
    assert ok("ls", ferry_server.file_url("a.txt")).strip() == f"{tree}/a.txt"


def test_cat_and_stat(ferry_server: peers.FerryServer, tree: Path) -> None:
    res = ferry("cat", ferry_server.file_url("a.txt"), ferry_server.file_url("d/b.bin"))
    assert res.returncode == 0 and res.stdout == b"alpha\n" + (tree / "d/b.bin").read_bytes()
    out = ok("stat", ferry_server.file_url("d/b.bin"))
    assert "Size: 3000" in out and "Type: file" in out
    assert f"Inode: {os.stat(tree / 'd/b.bin').st_ino}" in out


def test_cp_both_ways_recursive(
    ferry_server: peers.FerryServer, tree: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    sha = peers.write_random_file(big, 5 * (1 << 20) + 1)
    ok("cp", "--no-progress", str(big), ferry_server.file_url("up.bin"))
    assert peers.sha256_file(tree / "up.bin") == sha
    ok("cp", ferry_server.file_url("up.bin"), str(tmp_path / "down.bin"))
    assert peers.sha256_file(tmp_path / "down.bin") == sha
    ok("cp", "-r", ferry_server.file_url("d"), str(tmp_path / "dl"))
    assert (tmp_path / "dl/b.bin").read_bytes() == (tree / "d/b.bin").read_bytes()
    assert (tmp_path / "dl/e/c").exists()
    ok("cp", "-r", str(tmp_path / "dl"), ferry_server.url)  # into an existing directory
    assert (tree / "dl/e/c").exists()
    ok("cp", ferry_server.file_url("a.txt"), ferry_server.file_url("d/e"))  # server side
    assert (tree / "d/e/a.txt").read_bytes() == b"alpha\n"


def test_cp_progress_shows_bytes_and_rate(
    ferry_server: peers.FerryServer, tree: Path, tmp_path: Path
) -> None:
    peers.write_random_file(tree / "big.bin", 48 << 20)  # a few CHUNKs: a rate to show
    res = ferry("cp", "--progress", ferry_server.file_url("big.bin"), str(tmp_path / "x"))
    assert res.returncode == 0
    err = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", res.stderr.decode())
    assert "big.bin" in err and "50.3/50.3 MB" in err and re.search(r"[\d.]+ [kMG]?B/s", err)


def test_mkdir_rm_mv(ferry_server: peers.FerryServer, tree: Path) -> None:
    url = ferry_server.file_url
    ok("mkdir", "-p", url("p/q/r"))
    assert (tree / "p/q/r").is_dir()
    ok("mkdir", "-p", url("p/q/r"))  # -p: no error if it exists
    assert "File exists" in error(1, "mkdir", url("p"))
    assert "No such file" in error(1, "mkdir", url("x/y"))
    ok("mv", url("a.txt"), url("p/q/renamed"))
    assert (tree / "p/q/renamed").read_bytes() == b"alpha\n"
    assert "Is a directory" in error(1, "rm", url("p"))
    ok("rm", url("p/q/renamed"))
    ok("rm", "-r", url("p"))
    assert not (tree / "p").exists()


def test_errors_are_one_line(ferry_server: peers.FerryServer, tree: Path) -> None:
    line = error(1, "cat", ferry_server.file_url("missing"))
    assert "missing" in line and "No such file or directory" in line
    assert "bad host or port" in error(2, "ls", "nfs://127.0.0.1:x/y")
    port = peers.free_port()
    assert "refused" in error(1, "ls", f"nfs://127.0.0.1:{port}/export").lower()
    res = ferry("ls")  # argparse: usage, status 2
    assert res.returncode == 2 and b"Traceback" not in res.stderr


@pytest.mark.interop
def test_ls_cat_cp_against_ganesha(ganesha_server: peers.GaneshaServer, tmp_path: Path) -> None:
    g = ganesha_server
    (g.export / "dir").mkdir()
    (g.export / "dir/hello.txt").write_bytes(b"hi ganesha\n")
    assert ok("ls", g.file_url("dir")).split() == ["hello.txt"]
    assert ok("cat", g.file_url("dir/hello.txt")) == "hi ganesha\n"
    big = tmp_path / "big.bin"
    sha = peers.write_random_file(big, 3 * (1 << 20) + 5)
    ok("cp", str(big), g.file_url("dir/big.bin"))
    ok("cp", "-r", g.file_url("dir"), str(tmp_path / "back"))
    assert peers.sha256_file(tmp_path / "back/big.bin") == sha
    assert peers.sha256_file(g.export / "dir/big.bin") == sha

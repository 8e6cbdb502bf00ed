"""Run ``ferry`` client commands as real subprocesses and check what they print (shared by
the CLI test files)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import peers
from helpers.ferry_fixture import running_ferry, running_ganesha

ENV = {**os.environ, "PYTHONPATH": str(peers.SRC_DIR)}
ARGV = [sys.executable, "-m", "ferry"]
SERVERS = ["ferry", pytest.param("ganesha", marks=pytest.mark.interop)]

Server = peers.FerryServer | peers.GaneshaServer


def ferry(
    *args: str, stdin: bytes = b"", cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*ARGV, *args], input=stdin, capture_output=True, env=ENV, timeout=timeout,
        check=False, cwd=cwd,
    )  # fmt: skip


def start(*args: str, **kwargs: Any) -> subprocess.Popen[bytes]:
    """``ferry ARGS`` started in the background (stdout and stderr piped)."""
    return subprocess.Popen(
        [*ARGV, *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=ENV, **kwargs,
    )  # fmt: skip


def ok(*args: str, cwd: Path | None = None) -> str:
    res = ferry(*args, cwd=cwd)
    assert res.returncode == 0, res.stderr.decode()
    assert res.stderr == b""
    return res.stdout.decode()


def error(status: int, *args: str, lines: int = 1) -> str:
    """Run a failing command: its status, and ``lines`` one-line coreutils-style messages."""
    res = ferry(*args)
    assert res.returncode == status, (res.stdout, res.stderr)
    got = res.stderr.decode().splitlines()
    assert len(got) == lines and all(ln.startswith("ferry: ") for ln in got), got
    assert b"Traceback" not in res.stderr
    return "\n".join(got)


@contextlib.contextmanager
def serving(kind: str, base: Path) -> Iterator[Server]:
    """A Ferry server or NFS-Ganesha exporting a fresh directory under ``base``."""
    if kind == "ferry":
        with running_ferry(base) as f:
            yield f
    else:
        with running_ganesha(base / "ganesha-export", base / "ganesha") as g:
            yield g

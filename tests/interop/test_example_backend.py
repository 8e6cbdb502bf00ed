"""The documented user-written backend (examples/zipfs.py) served by the real CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import peers

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.interop


def test_zip_backend_served_with_backend_option(tmp_path: Path) -> None:
    nfs_ls = peers.find_tool("nfs-ls")
    nfs_cat = peers.find_tool("nfs-cat")
    if nfs_ls is None or nfs_cat is None:
        pytest.fail(peers.tool_missing_message("nfs-ls", "libnfs-utils"), pytrace=False)
    payload = os.urandom(300_000)
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("top.txt", b"top\n")
        z.writestr("deep/er/blob.bin", payload)
    port = peers.free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "examples"), str(ROOT / "src")]))
    cmd = [
        sys.executable,
        "-m",
        "ferry",
        "serve",
        str(archive),
        "--backend",
        "zipfs:ZipBackend",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--state-dir",
        str(tmp_path / "state"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"on 127.0.0.1:{port}" in line, line
        url = f"nfs://127.0.0.1{archive}%s?version=3&nfsport={port}&mountport={port}"
        listing = subprocess.run(
            [nfs_ls, "-R", url % ""], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        assert "top.txt" in listing and "deep/er/blob.bin" in listing
        data = subprocess.run(
            [nfs_cat, url % "/deep/er/blob.bin"], capture_output=True, timeout=30, check=True
        ).stdout
        assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "Traceback" not in err

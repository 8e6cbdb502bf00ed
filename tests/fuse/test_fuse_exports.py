"""``ferry mount`` of a URL that names no export, or nothing in one, against a Ferry server
and NFS-Ganesha: an error (exit 1, one line naming the exports there are), never a mount of
some other directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mounthelp import Mount, mounted

from helpers import peers


def mount_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """``ferry mount`` in its default (background) mode: it returns once mounted, or fails."""
    return subprocess.run(
        [sys.executable, "-m", "ferry", "mount", *map(str, args)], capture_output=True,
        text=True, timeout=60, stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(peers.SRC_DIR)),
    )  # fmt: skip


def refused(url: str, where: Path) -> str:
    where.mkdir()
    res = mount_cli(url, where)
    try:
        assert res.returncode == 1, (res.stdout, res.stderr)
        assert not mounted(where)
    finally:
        if mounted(where):
            subprocess.run(["fusermount3", "-u", "-z", str(where)], check=False)
    assert res.stderr.startswith("ferry: error: cannot mount: "), res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr
    return res.stderr


@pytest.mark.parametrize("path", ["/wrong", "/"])
def test_mount_of_a_path_that_names_no_export_fails(
    nfs_mount: Mount, tmp_path: Path, path: str
) -> None:
    message = refused(peers.url_at(nfs_mount.server, path), tmp_path / "mnt")
    assert f"No such export (the server exports: {nfs_mount.server.export})" in message


def test_mount_of_a_missing_directory_in_the_export_fails(nfs_mount: Mount, tmp_path: Path) -> None:
    url = peers.url_at(nfs_mount.server, f"{nfs_mount.server.export}/missing")
    assert "No such file or directory" in refused(url, tmp_path / "mnt")


def test_mount_of_a_file_fails(nfs_mount: Mount, tmp_path: Path) -> None:
    (nfs_mount.server.export / "plain").write_text("not a directory")
    url = peers.url_at(nfs_mount.server, f"{nfs_mount.server.export}/plain")
    assert "Not a directory" in refused(url, tmp_path / "mnt")


def test_mount_of_a_directory_in_the_export(nfs_mount: Mount, tmp_path: Path) -> None:
    (nfs_mount.server.export / "inner").mkdir()
    (nfs_mount.server.export / "inner" / "f").write_text("inside")
    where = tmp_path / "mnt"
    where.mkdir()
    res = mount_cli(peers.url_at(nfs_mount.server, f"{nfs_mount.server.export}/inner"), where)
    try:
        assert res.returncode == 0, res.stderr
        assert sorted(os.listdir(where)) == ["f"]
    finally:
        subprocess.run(["fusermount3", "-u", str(where)], check=False)
        assert peers.wait_until(lambda: not mounted(where), 10)

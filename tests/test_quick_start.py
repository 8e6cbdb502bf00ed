"""The README's quick start, and what the server says about itself at start-up.

`make serve` run by root makes ``./share`` belong to 65534:65534, the user client root is
squashed to (root_squash stays the default), so root's own ``ferry put`` to the URL in the
banner works; a permission error caused by squashing says so; the banner tells, per export,
what backs it, who may mount it and who client users act as, and offers only commands that
can work.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.cli.main import instructions
from ferry.server.app import App, build_app
from ferry.server.config import ExportConfig, ServerConfig

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
_SERVING = re.compile(r"^ferry: serving (\S+) on 127\.0\.0\.1:(\d+) ", re.MULTILINE)


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("needs root: the quick start as root is what is checked")


@contextlib.contextmanager
def make_serve(directory: Path, log: Path) -> Iterator[tuple[str, int]]:
    """``make serve DIR=directory PORT=0`` with this interpreter's ``ferry`` (the serve stamp
    is taken as up to date: nothing is installed); yields (export path, port) once ready."""
    argv = ["make", "-s", "-C", str(REPO), "-o", ".venv/.serve-stamp", "serve",
            f"DIR={directory}", "PORT=0", f"BIN={BIN}"]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (m := _SERVING.search(log.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield m.group(1), int(m.group(2))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def ferry_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ferry", *args], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)  # fmt: skip


def test_make_serve_as_root_lets_root_write_with_the_printed_url(tmp_path: Path) -> None:
    needs_root()
    share = tmp_path / "share"
    local = tmp_path / "local.txt"
    local.write_text("hello\n")
    with make_serve(share, tmp_path / "serve.log") as (path, port):
        assert path == str(share)
        st = share.stat()
        assert (st.st_uid, st.st_gid) == (65534, 65534)
        banner = (tmp_path / "serve.log").read_text()
        assert "client root acts as 65534:65534 (root_squash)" in banner
        url = re.search(r"ferry ls '(nfs://\S+)'", banner)
        assert url is not None, banner
        put = ferry_cli("put", str(local), url.group(1) + "/")
        assert put.returncode == 0, put.stderr
        cat = ferry_cli("cat", url.group(1) + "/local.txt")
        assert cat.stdout == "hello\n", cat.stderr
    assert (share / "local.txt").stat().st_uid == 65534


def test_make_serve_leaves_an_existing_directory_alone(tmp_path: Path) -> None:
    needs_root()
    share = tmp_path / "mine"
    share.mkdir()
    with make_serve(share, tmp_path / "serve.log"):
        st = share.stat()
        assert (st.st_uid, st.st_gid) == (0, 0)
        banner = (tmp_path / "serve.log").read_text()
        assert f"who may not write to {share}" in banner
        assert f"chown 65534:65534 {share}" in banner


def test_a_permission_error_from_squashing_says_so(tmp_path: Path) -> None:
    """Root's ``ferry put`` into a root-owned 0755 export of a default (root_squash) server."""
    needs_root()
    share = tmp_path / "rootowned"
    share.mkdir(mode=0o755)
    local = tmp_path / "local.txt"
    local.write_text("x")
    with make_serve(share, tmp_path / "serve.log") as (path, port):
        put = ferry_cli("put", str(local), f"nfs://127.0.0.1:{port}{path}/")
    assert put.returncode == 1
    assert "Permission denied" in put.stderr
    assert "root_squash" in put.stderr, put.stderr


# -- the banner ---------------------------------------------------------------------------


@contextlib.contextmanager
def app_for(tmp_path: Path, **export: object) -> Iterator[App]:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    config = ServerConfig(
        exports=[ExportConfig(path=str(share), **export)],  # type: ignore[arg-type]
        state_dir=tmp_path / "state",
    )
    app = build_app(config)
    try:
        yield app
    finally:
        app.close()


def banner(tmp_path: Path, **export: object) -> str:
    with app_for(tmp_path, **export) as app:
        return instructions(app, "127.0.0.1", 2049)


def test_banner_says_what_backs_the_export_and_who_users_act_as(tmp_path: Path) -> None:
    text = banner(tmp_path)
    share = tmp_path / "share"
    mode = f"{share.stat().st_mode & 0o7777:04o}"
    assert f"backing: directory {share} (owner {os.getuid()}:{os.getgid()}, mode {mode})" in text
    assert "clients: any address may mount it" in text
    assert "client root acts as 65534:65534 (root_squash), other users as themselves" in text
    assert "read-write" in text.splitlines()[0]


def test_banner_names_each_squash_setting(tmp_path: Path) -> None:
    assert "client root acts as root (no root_squash)" in banner(tmp_path, root_squash=False)
    text = banner(tmp_path, all_squash=True, anonuid=1234, anongid=5678)
    assert "every client user acts as 1234:5678 (all_squash)" in text
    assert "read-only" in banner(tmp_path, read_only=True).splitlines()[0]


def test_banner_offers_no_commands_to_a_host_that_may_not_mount(tmp_path: Path) -> None:
    text = banner(tmp_path, clients=("10.0.0.0/8",))
    assert "clients: only 10.0.0.0/8 may mount it" in text
    assert "127.0.0.1 may not mount this export" in text
    for command in ("mount -t nfs", "mount_nfs", "nfs-ls", "ferry ls", "ferry mount"):
        assert command not in text
    assert "sudo mount -t nfs" in banner(tmp_path, clients=("127.0.0.0/8",))


def test_banner_says_how_to_get_the_mount_when_pyfuse3_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    find_spec = importlib.util.find_spec

    def without_pyfuse3(name: str, *args: object) -> object:
        return None if name == "pyfuse3" else find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", without_pyfuse3)
    text = banner(tmp_path)
    assert "ferry mount '" not in text
    assert "pip install 'ferry-nfs[fuse]'" in text
    assert "libfuse3-dev" in text


def test_banner_notes_when_squashed_root_may_not_write(tmp_path: Path) -> None:
    needs_root()
    (tmp_path / "share").mkdir(mode=0o755)
    note = f"client root acts as 65534:65534 here, who may not write to {tmp_path / 'share'}"
    assert note in banner(tmp_path)
    os.chown(tmp_path / "share", 65534, 65534)
    assert "note:" not in banner(tmp_path)
    assert "note:" not in banner(tmp_path, root_squash=False)

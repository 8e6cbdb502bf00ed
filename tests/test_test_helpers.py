"""The test machinery itself: readiness parsing, traceback and SIGKILL detection, tool checks.

Uses fake "servers" (small shell scripts standing in for `python -m ferry serve`), so it
needs no third-party tools.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import peers
from helpers.tools import require_tool


def _fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/bash\n" + body)
    os.chmod(script, 0o755)
    return str(script)


def _server(
    tmp_path: Path, python: str, ready_timeout: float = 20.0, stop_timeout: float = 10.0
) -> peers.FerryServer:
    return peers.FerryServer(
        tmp_path / "export",
        tmp_path / "state",
        tmp_path / "logs",
        python=python,
        ready_timeout=ready_timeout,
        stop_timeout=stop_timeout,
    )


def test_ready_line_variants() -> None:
    m = peers.READY_RE.match("ferry: serving /a on b/x on 127.0.0.1:2049 (NFSv3, read-write)")
    assert m and (m["path"], m["host"], m["port"]) == ("/a on b/x", "127.0.0.1", "2049")
    m = peers.READY_RE.match("ferry: serving /x on [::1]:5")
    assert m and (m["host"], m["port"]) == ("[::1]", "5")
    assert peers.READY_RE.match("ferry: starting /x") is None


def test_traceback_on_stderr_is_detected(tmp_path: Path) -> None:
    port = peers.free_port()
    py = _fake_python(
        tmp_path,
        f"echo 'ferry: serving /x on 127.0.0.1:{port}'\n"
        "echo 'Traceback (most recent call last):' >&2\n"
        "trap 'exit 0' TERM\nwhile true; do sleep 0.05; done\n",
    )
    srv = _server(tmp_path, py).start()
    assert srv.port == port
    assert srv.url.endswith(f"/?version=3&nfsport={port}&mountport={port}")
    srv.stop()
    assert srv.tracebacks()
    assert not srv.problems


def test_ignoring_sigterm_is_reported(tmp_path: Path) -> None:
    py = _fake_python(
        tmp_path,
        "echo 'ferry: serving /x on 127.0.0.1:1234'\n"
        "trap '' TERM\nwhile true; do sleep 0.05; done\n",
    )
    srv = _server(tmp_path, py, stop_timeout=1.0).start()
    srv.stop()
    assert any("SIGKILL" in p for p in srv.problems), srv.problems


def test_early_exit_and_silence_fail_fast(tmp_path: Path) -> None:
    py = _fake_python(tmp_path, "echo boom >&2; exit 3\n")
    with pytest.raises(peers.PeerError, match="exited \\(code 3\\)"):
        _server(tmp_path, py).start()
    py = _fake_python(tmp_path, "sleep 30\n")
    with pytest.raises(peers.PeerError, match="no 'ferry: serving"):
        _server(tmp_path, py, ready_timeout=0.5).start()


def test_require_tool_fails_not_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(peers, "find_tool", lambda name: None)
    with pytest.raises(pytest.fail.Exception, match="install Debian package libnfs-utils"):
        require_tool("nfs-ls", "libnfs-utils")


def test_libnfs_url_and_ls_parsing() -> None:
    assert (
        peers.libnfs_url("127.0.0.1", "/srv/x/", "/a b", 5, 6)
        == "nfs://127.0.0.1/srv/x/a b?version=3&nfsport=5&mountport=6"
    )
    entries = peers.parse_nfs_ls(
        "-rw-r--r--  1     0     0            6 a.txt\n"
        "drwxr-xr-x  2     0     0         4096 with space\n"
        "\n247109246976 of 270553174016 bytes free.\n"
    )
    assert [(e.name, e.size, e.is_dir) for e in entries] == [
        ("a.txt", 6, False),
        ("with space", 4096, True),
    ]

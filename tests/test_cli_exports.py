"""Which export a URL names, through the ``ferry`` command line, against a Ferry server and
NFS-Ganesha: a misspelled export is an error listing the exports (nothing is written
anywhere), and ``nfs://host:port/`` lists the directories leading to the exports, as the
Python API's error for it does."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import peers
from helpers.ferry_fixture import running_ferry, running_ganesha

SRC = str(Path(__file__).resolve().parents[1] / "src")
Peer = peers.FerryServer | peers.GaneshaServer


def ferry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": SRC}, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip


@pytest.fixture(params=["ferry", pytest.param("ganesha", marks=pytest.mark.interop)])
def peer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Peer]:
    if request.param == "ferry":
        with running_ferry(tmp_path) as server:
            yield server
    else:
        with running_ganesha(tmp_path / "ganesha-export", tmp_path / "ganesha") as g:
            yield g


def one_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 1, (res.stdout, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ferry: "), lines
    return lines[0]


def test_ls_of_a_misspelled_export(peer: Peer) -> None:
    url = peers.url_at(peer, "/wrong")
    line = one_error(ferry("ls", url))
    assert line == (
        f"ferry: cannot access '{url}': No such export (the server exports: {peer.export})"
    )


def test_put_into_a_misspelled_export_writes_nothing(peer: Peer, tmp_path: Path) -> None:
    local = tmp_path / "local.txt"
    local.write_text("hello")
    before = sorted(peer.export.rglob("*"))
    for where in ("/wrong/", "/wrong/local.txt", "/"):
        line = one_error(ferry("put", str(local), peers.url_at(peer, where)))
        assert f"the server exports: {peer.export}" in line, line
    assert sorted(peer.export.rglob("*")) == before


def test_ls_of_a_missing_directory_inside_the_export(peer: Peer) -> None:
    url = peers.url_at(peer, f"{peer.export}/missing")
    assert one_error(ferry("ls", url)) == (
        f"ferry: cannot access '{url}': No such file or directory"
    )


def test_ls_of_the_server_root_shows_the_way_to_the_exports(peer: Peer) -> None:
    res = ferry("ls", peers.url_at(peer, "/"))
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [peer.export.parts[1]]
    parent = ferry("ls", peers.url_at(peer, str(peer.export.parent)))
    assert parent.returncode == 0, parent.stderr
    assert parent.stdout.split() == [peer.export.name]

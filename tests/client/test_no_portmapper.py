"""A URL without a port asks the portmapper (port 111) for the NFS and MOUNT ports. When
nothing answers there, every face says so in one line and shows the two forms that need
no portmapper (``:PORT`` and ``?nfsport=&mountport=``), with no chained traceback.

This machine may run an rpcbind on 111 for NFS-Ganesha, so the tests point the client's
portmapper port at a free one (nothing listens) or at a Ferry server's own portmapper.
"""

from __future__ import annotations

import traceback
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from rawclient import RunningServer, local_config, serve_in_thread

import ferry
import fsspec
from ferry.cli import main as cli
from ferry.client import nfs
from helpers import peers

URL = "nfs://127.0.0.1/srv/data"


@pytest.fixture
def no_portmapper(monkeypatch: pytest.MonkeyPatch) -> int:
    port = peers.free_port()
    monkeypatch.setattr(nfs, "PMAP_PORT", port)
    return port


def _check(message: str, port: int) -> None:
    assert "\n" not in message, message
    assert f"portmapper on 127.0.0.1:{port} refuses connections" in message, message
    assert "nfs://127.0.0.1:PORT/srv/data" in message, message
    assert "nfs://127.0.0.1/srv/data?nfsport=PORT&mountport=PORT" in message, message


def test_api(no_portmapper: int) -> None:
    with pytest.raises(ConnectionError) as info:
        ferry.connect(URL)
    _check(str(info.value), no_portmapper)
    shown = "".join(traceback.format_exception(info.value))
    assert "During handling" not in shown and "direct cause" not in shown


def test_fsspec_and_urllib(no_portmapper: int) -> None:
    fs = fsspec.filesystem("nfs", host="127.0.0.1", skip_instance_cache=True)
    with pytest.raises(ConnectionError) as info:
        fs.ls("/srv/data")
    assert "portmapper on 127.0.0.1:" in str(info.value) and "\n" not in str(info.value)
    ferry.install_urlopen()
    with pytest.raises(urllib.error.URLError) as opened:
        urllib.request.urlopen(f"{URL}/f.csv")
    assert "?nfsport=PORT&mountport=PORT" in str(opened.value)


@pytest.mark.parametrize("command", [["ls"], ["cat"], ["get"], ["stat"], ["df"]])
def test_cli(no_portmapper: int, command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([*command, URL]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ferry: ") and "Traceback" not in err
    _check(err.strip(), no_portmapper)


def test_mount(no_portmapper: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["mount", "--foreground", URL, str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ferry: error: cannot mount: ") and err.count("\n") == 1
    _check(err.strip(), no_portmapper)


def test_empty_port_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="empty port"):
        ferry.connect("nfs://127.0.0.1:/srv/data")
    assert cli.main(["ls", "nfs://127.0.0.1:/srv/data"]) == 2
    assert "empty port" in capsys.readouterr().err


@pytest.fixture
def with_portmapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningServer]:
    """A Ferry server, which answers portmap on its own port too: the client's portmapper."""
    root = tmp_path / "export"
    root.mkdir()
    with serve_in_thread(local_config(root, tmp_path / "state", root_squash=False)) as srv:
        monkeypatch.setattr(nfs, "PMAP_PORT", srv.port)
        yield srv


def test_a_url_without_a_port_uses_the_portmapper(with_portmapper: RunningServer) -> None:
    root = with_portmapper.root
    assert root is not None
    (root / "f").write_bytes(b"found")
    with ferry.connect(f"nfs://127.0.0.1{root}") as c:
        assert c.read_file("f") == b"found"

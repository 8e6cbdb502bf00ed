"""A Ferry server and a ``ferry mount`` of it on loopback, both as subprocesses.

One server and one mount per module (start-up costs ~1 s each); tests work in their own
sub-directories. Teardown unmounts with SIGTERM and fails if anything stays mounted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import peers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mounthelp import Mount, mounted, start_mount  # noqa: E402


@pytest.fixture(scope="module")
def ferry_mount(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    peers.need_tool("fusermount3", "fuse3")
    base = tmp_path_factory.mktemp("fuse")
    server = peers.FerryServer(
        export=base / "export", state_dir=base / "state", log_dir=base / "logs",
        extra_args=peers.FERRY_PEER_ARGS,
    )  # fmt: skip
    server.start()
    try:
        m = start_mount(server, base / "mnt")
        try:
            yield m
        finally:
            code = m.stop()
            text = m.log.read_text(errors="replace")
            assert not mounted(m.path), "still mounted after SIGTERM"
            assert code == 0, text
            assert peers.TRACEBACK_MARKER not in text, text
    finally:
        server.stop()
        assert not server.tracebacks(), server.tracebacks()

"""``serve_in_thread``, the in-process server of the protocol tests, cleans up after itself
even when it cannot start: no thread, socket or descriptor outlives a failed start-up."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from rawclient import local_config, serve_in_thread

from ferry.nfs3.const import NFS_PROGRAM
from ferry.testing import open_fds


def test_a_failed_start_leaks_no_thread_socket_or_descriptor(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    config = local_config(tmp_path / "export", tmp_path / "state")
    with serve_in_thread(config) as srv:  # first use: whatever a process keeps for good
        c = srv.client()
        assert c.call(NFS_PROGRAM, 3, 0).stat == 0
        c.close()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        threads, fds = set(threading.enumerate()), open_fds()
        with pytest.raises(OSError), serve_in_thread(config, port=taken.getsockname()[1]):
            pytest.fail("served on a port in use")
        assert set(threading.enumerate()) == threads
        assert open_fds() == fds

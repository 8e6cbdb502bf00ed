"""An EXCLUSIVE CREATE's verifier is on stable storage before the reply.

RFC 1813 section 3.3.8: the server keeps the verifier with the file (Ferry, like knfsd,
in atime/mtime) so that a retransmitted CREATE, possibly after a server crash, finds it
and succeeds. The times are set after the create's own syncs, so they must be synced
too: else a crash can lose them and the client's retransmission gets EXIST for the file
it made.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from nfs3wire import CreateMode, Nfs3
from rawclient import local_config, serve_in_thread

from ferry.nfs3.service import _verifier_times

VERF = bytes.fromhex("0123456789abcdef")


def test_exclusive_create_syncs_the_verifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    export = tmp_path / "export"
    export.mkdir()
    synced: list[tuple[int, int, int]] = []  # (inode, atime_ns, mtime_ns) at each fsync
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        st = os.fstat(fd)
        synced.append((st.st_ino, st.st_atime_ns, st.st_mtime_ns))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    with serve_in_thread(local_config(export, tmp_path / "state", root_squash=False)) as srv:
        raw = srv.client()
        try:
            nfs = Nfs3(raw, raw.mount(str(export)))
            nfs.must(nfs.create(nfs.root, b"x", CreateMode.EXCLUSIVE, verf=VERF))
        finally:
            raw.close()
    ino = (export / "x").stat().st_ino
    assert (ino, *_verifier_times(VERF)) in synced, synced

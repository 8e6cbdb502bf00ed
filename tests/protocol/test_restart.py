"""Restarting the server on the same state directory: handles survive (even for files
renamed while it was down), and the write verifier changes so clients resend unstable data."""

from __future__ import annotations

import os
from pathlib import Path

from rawclient import (
    RawClient,
    local_config,
    mount_status,
    nfs_commit,
    nfs_create,
    nfs_getattr,
    nfs_lookup,
    nfs_read,
    nfs_write,
    serve_in_thread,
)

from ferry.nfs3.const import Mountstat3, Nfsstat3

UNSTABLE, FILE_SYNC = 0, 2


def lookup_ok(c: RawClient, dirfh: bytes, name: str) -> bytes:
    status, fh, _ = nfs_lookup(c, dirfh, name)
    assert status == Nfsstat3.OK, f"LOOKUP {name} -> {status.name}"
    assert fh is not None
    return fh


def test_handles_survive_restart_and_renames_while_down(tmp_path: Path) -> None:
    export, state = tmp_path / "export", tmp_path / "state"
    (export / "dir" / "nested").mkdir(parents=True)
    (export / "dir" / "nested" / "deep.txt").write_bytes(b"deep")
    (export / "plain.txt").write_bytes(b"plain")
    (export / "moving.txt").write_bytes(b"I will move")
    (export / "doomed.txt").write_bytes(b"I will go")
    (export / "elsewhere").mkdir()
    config = local_config(export, state, root_squash=False)

    with serve_in_thread(config) as srv:
        c = srv.client()
        try:
            root = c.mount(str(export))
            d = lookup_ok(c, root, "dir")
            deep = lookup_ok(c, lookup_ok(c, d, "nested"), "deep.txt")
            plain = lookup_ok(c, root, "plain.txt")
            moving = lookup_ok(c, root, "moving.txt")
            doomed = lookup_ok(c, root, "doomed.txt")
            status, created, _ = nfs_create(c, d, "created.txt")
            assert status == Nfsstat3.OK and created is not None
            status, verf1 = nfs_write(c, created, b"written before", stable=UNSTABLE)
            assert status == Nfsstat3.OK and verf1 is not None and len(verf1) == 8
            assert nfs_write(c, plain, b"PLAIN", stable=FILE_SYNC)[1] == verf1  # one per boot
            assert nfs_commit(c, created) == (Nfsstat3.OK, verf1)
            moving_attr = nfs_getattr(c, moving)[1]
        finally:
            c.close()
    key_before = (state / "handle.key").read_bytes()

    # While the server is down: rename a file into another directory, rename a directory
    # holding a file we have a handle for, and delete a file.
    os.rename(export / "moving.txt", export / "elsewhere" / "moved.txt")
    os.rename(export / "dir", export / "dir-renamed")
    os.unlink(export / "doomed.txt")

    with serve_in_thread(config) as srv:
        c = srv.client()
        try:
            assert c.mount(str(export)) == root  # same root handle after restart
            assert nfs_read(c, plain) == (Nfsstat3.OK, b"PLAIN")
            assert nfs_read(c, moving) == (Nfsstat3.OK, b"I will move")
            status, attr = nfs_getattr(c, moving)
            assert status == Nfsstat3.OK and attr is not None and moving_attr is not None
            assert attr.fileid == moving_attr.fileid
            assert nfs_read(c, deep) == (Nfsstat3.OK, b"deep")
            assert nfs_read(c, created) == (Nfsstat3.OK, b"written before")
            assert lookup_ok(c, d, "created.txt") == created  # the renamed dir's handle
            assert lookup_ok(c, lookup_ok(c, root, "dir-renamed"), "created.txt") == created
            assert lookup_ok(c, lookup_ok(c, root, "elsewhere"), "moved.txt") == moving
            assert nfs_getattr(c, doomed)[0] == Nfsstat3.STALE
            assert nfs_read(c, doomed)[0] == Nfsstat3.STALE
            assert mount_status(c, f"{export}/dir")[0] == Mountstat3.NOENT
            # Writes through old handles land in the renamed files.
            assert nfs_write(c, moving, b"i", stable=FILE_SYNC)[0] == Nfsstat3.OK
            status, verf2 = nfs_write(c, created, b"W", stable=UNSTABLE)
            assert status == Nfsstat3.OK and verf2 is not None
            assert nfs_commit(c, created) == (Nfsstat3.OK, verf2)
        finally:
            c.close()
    assert verf2 != verf1, "write verifier must change across a restart"
    assert (state / "handle.key").read_bytes() == key_before
    assert (export / "elsewhere" / "moved.txt").read_bytes() == b"i will move"
    assert (export / "dir-renamed" / "created.txt").read_bytes() == b"Written before"


def test_write_verifier_changes_on_every_restart(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "f").write_bytes(b"")
    config = local_config(export, tmp_path / "state", root_squash=False)
    verifiers = []
    fh = None
    for _ in range(3):
        with serve_in_thread(config) as srv:
            c = srv.client()
            try:
                root = c.mount(str(export))
                fh = fh or lookup_ok(c, root, "f")
                status, verf = nfs_write(c, fh, b"x", stable=UNSTABLE)
                assert status == Nfsstat3.OK and verf is not None
                assert nfs_commit(c, fh) == (Nfsstat3.OK, verf)
                # Stable while the server runs.
                assert nfs_write(c, fh, b"y", offset=1, stable=UNSTABLE)[1] == verf
                verifiers.append(verf)
            finally:
                c.close()
    assert len(set(verifiers)) == 3


def test_handles_from_another_state_dir_are_refused(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    (export / "f").write_bytes(b"data")
    with serve_in_thread(local_config(export, tmp_path / "state-a")) as srv:
        c = srv.client()
        try:
            fh = lookup_ok(c, c.mount(str(export)), "f")
        finally:
            c.close()
    # A different state dir means a different handle key: old handles fail verification.
    with serve_in_thread(local_config(export, tmp_path / "state-b")) as srv:
        c = srv.client()
        try:
            assert nfs_getattr(c, fh)[0] == Nfsstat3.BADHANDLE
            assert lookup_ok(c, c.mount(str(export)), "f") != fh
        finally:
            c.close()

"""State shared by the worker processes of one server (prefork, process, async --workers):
a handle from one worker works on every other, the write verifier is the same everywhere
(and changes on restart), an exclusive CREATE retried on another worker is idempotent,
DUMP on one worker lists a MNT made on another, and prefork replaces a worker that dies.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import start_model, stop_checked
from modelserver import MULTI_PROCESS, ModelServer, serving_pid
from rawclient import RawClient, nfs_getattr, nfs_lookup, nfs_read, nfs_write

from ferry.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, Nfsstat3
from ferry.xdr import Packer

EXCLUSIVE = 2


@pytest.fixture(params=MULTI_PROCESS)
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def multi(variant: str, tmp_path: Path) -> Iterator[ModelServer]:
    srv = start_model(tmp_path, variant)
    try:
        yield srv
    finally:
        stop_checked(srv)


class Worker:
    """A connection, the root handle it mounted, and the pid of the process serving it."""

    def __init__(self, server: ModelServer) -> None:
        self.client = RawClient(server.port)
        self.root = self.client.mount(str(server.export))
        self.pid = serving_pid(server, self.client.sock)


def distinct_workers(server: ModelServer, want: int = 2, tries: int = 24) -> list[Worker]:
    """Connections held open until ``want`` different processes serve them."""
    opened: list[Worker] = []
    chosen: dict[int, Worker] = {}
    for _ in range(tries):
        w = Worker(server)
        opened.append(w)
        if w.pid is not None and w.pid != server.pid:
            chosen.setdefault(w.pid, w)
        if len(chosen) >= want:
            break
    for w in opened:
        if w not in chosen.values():
            w.client.close()
    assert len(chosen) >= want, f"only workers {list(chosen)} answered {tries} connections"
    return list(chosen.values())


def close_all(workers: list[Worker]) -> None:
    for w in workers:
        w.client.close()


def test_handles_work_on_every_worker(multi: ModelServer) -> None:
    a, b = distinct_workers(multi)
    try:
        status, fh, _ = nfs_lookup(a.client, a.root, "hello.txt")
        assert status == Nfsstat3.OK and fh is not None
        assert a.root == b.root
        assert nfs_read(b.client, fh) == (Nfsstat3.OK, b"hello")
        assert nfs_getattr(b.client, fh)[0] == Nfsstat3.OK
    finally:
        close_all([a, b])


def test_write_verifier_is_shared_and_changes_on_restart(
    multi: ModelServer, variant: str, tmp_path: Path
) -> None:
    ws = distinct_workers(multi)
    try:
        verfs = set()
        for w in ws:
            status, fh, _ = nfs_lookup(w.client, w.root, "hello.txt")
            assert status == Nfsstat3.OK and fh is not None
            status, verf = nfs_write(w.client, fh, b"hello", stable=0)
            assert status == Nfsstat3.OK
            verfs.add(verf)
        assert len(verfs) == 1
    finally:
        close_all(ws)
    stop_checked(multi)
    again = start_model(tmp_path, variant, "again")
    try:
        w = Worker(again)
        status, fh, _ = nfs_lookup(w.client, w.root, "hello.txt")
        assert fh is not None
        status, verf = nfs_write(w.client, fh, b"hello", stable=0)
        w.client.close()
        assert status == Nfsstat3.OK and verf not in verfs
    finally:
        stop_checked(again)


def test_exclusive_create_retried_on_another_worker(multi: ModelServer) -> None:
    a, b = distinct_workers(multi)
    try:
        first = _create_exclusive(a, b"excl.txt", b"verf0001")
        assert first[0] == Nfsstat3.OK
        assert _create_exclusive(b, b"excl.txt", b"verf0001") == first  # a retransmission
        assert _create_exclusive(b, b"excl.txt", b"verf0002")[0] == Nfsstat3.EXIST
    finally:
        close_all([a, b])


def test_dump_lists_mounts_made_on_other_workers(multi: ModelServer) -> None:
    a, b = distinct_workers(multi)
    try:
        for w in (a, b):
            u = w.client.call(MOUNT_PROGRAM, 3, 2).ok()  # DUMP
            entries = []
            while u.unpack_bool():
                entries.append(
                    (bytes(u.unpack_opaque()).decode(), bytes(u.unpack_opaque()).decode())
                )
            assert ("127.0.0.1", str(multi.export)) in entries
        a.client.call(MOUNT_PROGRAM, 3, 4).ok()  # UMNTALL for this host, on worker a
        u = b.client.call(MOUNT_PROGRAM, 3, 2).ok()
        assert not u.unpack_bool()  # gone on worker b too
    finally:
        close_all([a, b])


def test_prefork_restarts_a_dead_worker(tmp_path: Path) -> None:
    srv = start_model(tmp_path, "prefork")
    try:
        before = srv.workers()
        assert len(before) == 3
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = srv.workers()
            if len(now) == 3 and before[0] not in now:
                break
            time.sleep(0.1)
        assert len(srv.workers()) == 3 and before[0] not in srv.workers()
        ws = distinct_workers(srv, want=3)
        close_all(ws)
    finally:
        stop_checked(srv)
    assert "restarting it" in srv.stderr()


def _create_exclusive(w: Worker, name: bytes, verf: bytes) -> tuple[Nfsstat3, bytes | None]:
    p = Packer()
    p.pack_opaque(w.root)
    p.pack_opaque(name)
    p.pack_uint(EXCLUSIVE)
    p.pack_fopaque(8, verf)
    u = w.client.call(NFS_PROGRAM, 3, 8, p.get_buffer()).ok()
    status = Nfsstat3(u.unpack_uint())
    if status != Nfsstat3.OK:
        return status, None
    return status, (bytes(u.unpack_opaque(64)) if u.unpack_bool() else None)

"""State shared by the worker processes of one server (prefork, process, async --workers):
a handle from one worker works on every other, the write verifier is the same everywhere
(and changes on restart), an exclusive CREATE retried on another worker is idempotent,
a REMOVE, RENAME or exclusive CREATE resent with the same XID on a new connection served
by another worker gets the original reply (the shared duplicate request cache), DUMP on
one worker lists a MNT made on another, and prefork replaces a worker that dies.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import start_model, stop_checked
from modelserver import MULTI_PROCESS, ModelServer, serving_pid
from rawclient import RawClient, nfs_getattr, nfs_lookup, nfs_read, nfs_write, parse_reply

from ferry.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, NfsProc, Nfsstat3
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.message import NULL_AUTH, CallHeader
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


def distinct_workers(server: ModelServer, want: int = 2, tries: int = 64) -> list[Worker]:
    """Connections held open until ``want`` different processes serve them.

    Async workers share the listening socket and the first awake takes each connection,
    so while the machine is busy one worker may take many in a row: a pause after each
    lets the others run (bounded: ``tries`` connections, 10 s)."""
    opened: list[Worker] = []
    chosen: dict[int, Worker] = {}
    deadline = time.monotonic() + 10
    try:
        for _ in range(tries):
            w = Worker(server)
            opened.append(w)
            if w.pid is not None and w.pid != server.pid:
                chosen.setdefault(w.pid, w)
            if len(chosen) >= want or time.monotonic() > deadline:
                break
            time.sleep(0.01)
    finally:
        for w in opened:
            if w not in chosen.values() or len(chosen) < want:
                w.client.close()
    assert len(chosen) >= want, f"only workers {list(chosen)} answered {len(opened)} connections"
    return list(chosen.values())


def other_worker(server: ModelServer, not_pid: int | None, tries: int = 24) -> Worker:
    """A new connection served by another process than ``not_pid``."""
    opened: list[Worker] = []
    try:
        for _ in range(tries):
            w = Worker(server)
            if w.pid is not None and w.pid not in (not_pid, server.pid):
                return w
            opened.append(w)  # held open, so the next one goes elsewhere
    finally:
        close_all(opened)
    raise AssertionError(f"{tries} connections were all served by {not_pid}")


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


def _call(xid: int, proc: int, args: bytes) -> bytes:
    p = Packer()
    CallHeader(xid, 2, NFS_PROGRAM, 3, proc, encode_auth_sys(0, 0), NULL_AUTH).pack(p)
    return p.get_buffer() + args


def _names(*pairs: tuple[bytes, str]) -> bytes:
    p = Packer()
    for fh, name in pairs:
        p.pack_opaque(fh)
        p.pack_string(name.encode())
    return p.get_buffer()


RETRIED: dict[str, tuple[int, Callable[[bytes, bytes], bytes], Nfsstat3]] = {
    # kind: procedure, its arguments (root, verifier), what a new run of it answers
    "remove": (NfsProc.REMOVE, lambda root, v: _names((root, "victim")), Nfsstat3.NOENT),
    "rename": (
        NfsProc.RENAME,
        lambda root, v: _names((root, "victim"), (root, "moved")),
        Nfsstat3.NOENT,
    ),
    "exclusive-create": (NfsProc.CREATE, lambda root, v: _create(root, v), Nfsstat3.EXIST),
}


def _create(root: bytes, verf: bytes) -> bytes:
    p = Packer()
    p.pack_opaque(root)
    p.pack_string(b"excl")
    p.pack_uint(EXCLUSIVE)
    p.pack_fopaque(8, verf)
    return p.get_buffer()


@pytest.mark.parametrize("kind", RETRIED)
def test_a_call_resent_to_another_worker_gets_the_original_reply(
    multi: ModelServer, kind: str
) -> None:
    """Answered on one worker, resent (same XID, same bytes) on a new connection that
    another process serves: the very same reply, where running it again would fail."""
    proc, args, rerun = RETRIED[kind]
    (multi.export / "victim").write_bytes(b"x")
    a = Worker(multi)
    call = _call(0x7A000001, proc, args(a.root, b"verf0001"))
    a.client.send_record(call)
    original = a.client.recv_record()
    a.client.close()
    assert parse_reply(original).ok().unpack_uint() == Nfsstat3.OK
    b = other_worker(multi, a.pid)
    try:
        b.client.send_record(call)
        assert b.client.recv_record() == original
        fresh = _call(0x7A000002, proc, args(b.root, b"verf0002"))  # a new call: run
        b.client.send_record(fresh)
        assert parse_reply(b.client.recv_record()).ok().unpack_uint() == rerun
    finally:
        b.client.close()


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

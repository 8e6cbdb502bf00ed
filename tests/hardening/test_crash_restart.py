"""Crash-restart durability: SIGKILL the server during heavy writes, restart it on the same
port and state dir, and check that nothing acknowledged as stable was lost.

Workers (threads, each with its own raw RPC connection) append UNSTABLE writes and COMMIT
them, append FILE_SYNC writes, CREATE and REMOVE files, and replace a file by writing a
temporary one and RENAMEing it over. Each keeps a journal of what the server acknowledged.
After every kill, with the server dead, the test reads the export directly and checks:

* every byte of a FILE_SYNC write or covered by a successful COMMIT is on disk, correct;
* every acknowledged CREATE exists, every acknowledged REMOVE is gone, every renamed-over
  file holds a whole version at least as new as the last acknowledged RENAME and its
  temporary name is gone (rename is atomic, nothing half-done is visible);
* every file in the export reads to its end, and nothing is there the workers did not make;
* the SQLite file id map passes ``PRAGMA integrity_check`` and was not set aside as corrupt.

After the restart: handles from before the crash work (GETATTR and READ), the write
verifier changed (a COMMIT of the unstable writes answers with a new one), so the workers
resend those writes and COMMIT again, as a client must.

SIGKILL does not lose the page cache, so on-disk checks alone would pass even without
any fsync. The server therefore runs under strace, and every stable acknowledgement must be
preceded by an fsync/fdatasync of the file (or directory) made while the call was served
(see ``hardening_util.unsynced`` and docs/hardening.md for what that does and does not
prove).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hardening_util import (
    LONG,
    StableAck,
    Syscall,
    env_number,
    parse_strace,
    record_figures,
    strace_prefix,
    unsynced,
)
from rawclient import (
    RawClient,
    nfs_getattr,
    nfs_lookup,
    nfs_mkdir,
    nfs_read,
    pack_sattr,
    parse_reply,
    skip_wcc,
    unpack_post_op_attr,
)

from ferry.nfs3.const import NFS_PROGRAM, Nfsstat3
from ferry.xdr import Packer, Unpacker
from helpers import peers

CYCLES = int(env_number("FERRY_CRASH_CYCLES", 5, 100))
WORKERS = 3
RUN_SECONDS = (
    (0.8, 1.6) if LONG else (0.3, 0.8)
)  # how long the workers write before each kill (uniform)
MAX_FILE = 2 << 20  # a data file is full past this size
MAX_FILES = 4  # data files per worker; past it the oldest is removed
UNSTABLE, FILE_SYNC = 0, 2
WRITE, CREATE, REMOVE, RENAME, COMMIT = 7, 8, 12, 14, 21
TIME_LIMIT = 3600 if LONG else 150

pytestmark = pytest.mark.timeout(TIME_LIMIT)


class Killed(Exception):
    """The connection died under a worker: the server was killed."""


# -- the journal ----------------------------------------------------------------------------


@dataclass
class DataFile:
    name: str
    fh: bytes
    content: bytearray = field(default_factory=bytearray)  # everything ever sent
    durable: list[tuple[int, int]] = field(default_factory=list)  # (offset, length) acked
    unstable: list[tuple[int, int, bytes]] = field(default_factory=list)  # (off, len, verf)

    @property
    def durable_end(self) -> int:
        return max((o + n for o, n in self.durable), default=0)


def version_bytes(worker: int, version: int) -> bytes:
    """The whole content of version ``version`` of a worker's renamed-over file."""
    rng = random.Random(f"{worker}-{version}")
    body = rng.randbytes(rng.randrange(1, 3000))
    return b"v%08d:" % version + body


@dataclass
class Worker:
    index: int
    dir_fh: bytes
    dir_path: Path
    rng: random.Random
    files: dict[str, DataFile] = field(default_factory=dict)
    next_file: int = 0
    maybe_created: set[str] = field(default_factory=set)  # CREATE sent, no reply
    maybe_removed: set[str] = field(default_factory=set)  # REMOVE sent, no reply
    removed: set[str] = field(default_factory=set)
    renamed_acked: int = -1  # newest version acknowledged under the final name
    renamed_tried: int = -1  # newest version whose RENAME was sent
    tmp_pending: str | None = None  # r.tmpV of a replace not acknowledged yet
    next_version: int = 0
    acks: list[StableAck] = field(default_factory=list)  # this generation's, for strace
    verifiers: set[bytes] = field(default_factory=set)  # this generation's
    ops: int = 0
    bytes_stable: int = 0
    resent: int = 0
    error: BaseException | None = None

    # -- calls

    def call(self, c: RawClient, proc: int, args: bytes) -> tuple[Nfsstat3, Unpacker, float]:
        """One NFS call; returns (status, body, when it was sent)."""
        record = c.call_bytes(NFS_PROGRAM, 3, proc, args)
        sent = time.time()
        try:
            c.send_record(record)
            reply = parse_reply(c.recv_record())
        except OSError as exc:  # ConnectionError, a reset, or the timeout
            raise Killed from exc
        body = reply.ok()
        self.ops += 1
        return Nfsstat3(body.unpack_uint()), body, sent

    def write(self, c: RawClient, f: DataFile, offset: int, data: bytes, stable: int) -> bytes:
        p = Packer()
        p.pack_opaque(f.fh)
        p.pack_uhyper(offset)
        p.pack_uint(len(data))
        p.pack_uint(stable)
        p.pack_opaque(data)
        status, u, sent = self.call(c, WRITE, p.get_buffer())
        assert status == Nfsstat3.OK, f"WRITE {f.name}@{offset} -> {status.name}"
        skip_wcc(u)
        count, committed, verf = u.unpack_uint(), u.unpack_uint(), bytes(u.unpack_fopaque(8))
        assert count == len(data), f"short write {count} of {len(data)}"
        assert committed >= stable, f"asked {stable}, committed {committed}"
        self.verifiers.add(verf)
        if committed == FILE_SYNC:
            f.durable.append((offset, len(data)))
            self.bytes_stable += len(data)
            path = str(self.dir_path / f.name)
            self.acks.append(StableAck("file_sync", path, sent, time.time(), offset))
        else:
            f.unstable.append((offset, len(data), verf))
        return verf

    def commit(self, c: RawClient, f: DataFile) -> None:
        """COMMIT; if the verifier is not the one the writes got, resend them (once)."""
        for attempt in range(2):
            p = Packer()
            p.pack_opaque(f.fh)
            p.pack_uhyper(0)
            p.pack_uint(0)
            status, u, sent = self.call(c, COMMIT, p.get_buffer())
            assert status == Nfsstat3.OK, f"COMMIT {f.name} -> {status.name}"
            skip_wcc(u)
            verf = bytes(u.unpack_fopaque(8))
            self.verifiers.add(verf)
            stale = [(o, n) for o, n, v in f.unstable if v != verf]
            if not stale:
                self.acks.append(
                    StableAck("commit", str(self.dir_path / f.name), sent, time.time())
                )
                for o, n, _ in f.unstable:
                    f.durable.append((o, n))
                    self.bytes_stable += n
                f.unstable.clear()
                return
            assert attempt == 0, "verifier changed twice without a restart"
            f.unstable.clear()  # the server may have lost them: send them again
            for o, n in stale:
                self.write(c, f, o, bytes(f.content[o : o + n]), UNSTABLE)
                self.resent += n

    def create(self, c: RawClient, name: str) -> bytes:
        p = Packer()
        p.pack_opaque(self.dir_fh)
        p.pack_opaque(name.encode())
        p.pack_uint(0)  # UNCHECKED: a retry after a crash finds the file and keeps it
        pack_sattr(p, mode=0o644)
        status, u, sent = self.call(c, CREATE, p.get_buffer())
        assert status == Nfsstat3.OK, f"CREATE {name} -> {status.name}"
        assert u.unpack_bool(), "CREATE returned no handle"
        fh = bytes(u.unpack_opaque(64))
        unpack_post_op_attr(u)
        self.acks.append(StableAck("dir", str(self.dir_path), sent, time.time()))
        return fh

    def dir_op(self, c: RawClient, proc: int, args: bytes, what: str) -> None:
        status, _, sent = self.call(c, proc, args)
        assert status == Nfsstat3.OK, f"{what} -> {status.name}"
        self.acks.append(StableAck("dir", str(self.dir_path), sent, time.time()))

    # -- the workload

    def recover(self, c: RawClient) -> None:
        """After a restart: finish what was in flight, and COMMIT the unstable writes (which
        get a new verifier, so they are resent)."""
        for name in sorted(self.maybe_created):
            self.files[name] = DataFile(name, self.create(c, name))
        self.maybe_created.clear()
        if self.tmp_pending is not None:  # an interrupted replace: drop its temporary file
            self.remove(c, self.tmp_pending)
            self.tmp_pending = None
        for name in sorted(self.maybe_removed):
            self.remove(c, name)
        for f in self.files.values():
            if f.unstable:
                self.commit(c, f)

    def remove(self, c: RawClient, name: str) -> None:
        self.maybe_removed.add(name)
        self.files.pop(name, None)
        p = Packer()
        p.pack_opaque(self.dir_fh)
        p.pack_opaque(name.encode())
        status, _, sent = self.call(c, REMOVE, p.get_buffer())
        assert status in (Nfsstat3.OK, Nfsstat3.NOENT), f"REMOVE {name} -> {status.name}"
        if status == Nfsstat3.OK:  # NOENT (a retry, or a rename got there first) changes nothing
            self.acks.append(StableAck("dir", str(self.dir_path), sent, time.time()))
        self.maybe_removed.discard(name)
        self.removed.add(name)

    def new_file(self, c: RawClient) -> None:
        name = f"f{self.next_file}"
        self.next_file += 1
        self.maybe_created.add(name)
        fh = self.create(c, name)
        self.maybe_created.discard(name)
        self.files[name] = DataFile(name, fh)

    def append(self, c: RawClient, stable: int) -> None:
        open_files = [f for f in self.files.values() if len(f.content) < MAX_FILE]
        if not open_files:
            if len(self.files) >= MAX_FILES:
                self.remove(c, min(self.files, key=lambda n: int(n[1:])))
            self.new_file(c)
            return
        f = self.rng.choice(open_files)
        for _ in range(self.rng.randrange(1, 5) if stable == UNSTABLE else 1):
            data = self.rng.randbytes(self.rng.randrange(1, 64 * 1024))
            offset = len(f.content)
            f.content += data  # before sending: a write in flight may land
            self.write(c, f, offset, data, stable)

    def replace(self, c: RawClient) -> None:
        """Write version v to r.tmpV (FILE_SYNC) and RENAME it over r.final."""
        v = self.next_version
        self.next_version += 1
        tmp = self.tmp_pending = f"r.tmp{v}"
        tmp_file = DataFile(tmp, self.create(c, tmp))
        data = version_bytes(self.index, v)
        tmp_file.content += data
        self.write(c, tmp_file, 0, data, FILE_SYNC)
        p = Packer()
        for name in (tmp, "r.final"):
            p.pack_opaque(self.dir_fh)
            p.pack_opaque(name.encode())
        self.renamed_tried = v
        self.dir_op(c, RENAME, p.get_buffer(), f"RENAME {tmp}")
        self.renamed_acked = v
        self.tmp_pending = None

    def run(self, port: int, stop: threading.Event) -> None:
        try:
            c = RawClient(port, timeout=20)
        except OSError as exc:
            self.error = exc
            return
        try:
            self.recover(c)
            while not stop.is_set():
                r = self.rng.random()
                if r < 0.45:
                    self.append(c, UNSTABLE)
                elif r < 0.65:
                    f = self.rng.choice(list(self.files.values())) if self.files else None
                    if f is not None:
                        self.commit(c, f)
                elif r < 0.85:
                    self.append(c, FILE_SYNC)
                else:
                    self.replace(c)
        except Killed:
            pass
        except BaseException as exc:
            self.error = exc
        finally:
            c.close()


# -- checks with the server dead ------------------------------------------------------------

NAME_RE = re.compile(r"^(f\d+|r\.tmp\d+|r\.final)$")


def check_disk(export: Path, workers: list[Worker]) -> int:
    """The export as the journal says it must be; returns the bytes compared."""
    verified = 0
    for w in workers:
        for f in w.files.values():
            path = w.dir_path / f.name
            assert path.exists(), f"{path}: acknowledged CREATE lost"
            disk = path.read_bytes()
            assert len(disk) >= f.durable_end, f"{path}: {len(disk)} bytes < {f.durable_end}"
            for o, n in f.durable:
                assert disk[o : o + n] == f.content[o : o + n], f"{path}: [{o}, +{n}) differs"
                verified += n
        for name in w.removed - w.maybe_created - set(w.files):
            assert not (w.dir_path / name).exists(), f"{w.dir_path / name}: REMOVE undone"
        final = w.dir_path / "r.final"
        if w.renamed_acked >= 0:
            data = final.read_bytes()
            m = re.match(rb"^v(\d{8}):", data)
            assert m, f"{final}: not a whole version: {data[:20]!r}"
            v = int(m.group(1))
            assert w.renamed_acked <= v <= w.renamed_tried, f"{final}: version {v}"
            assert data == version_bytes(w.index, v), f"{final}: version {v} torn"
            verified += len(data)
            for left in w.dir_path.glob("r.tmp*"):
                tv = int(left.name[5:])
                assert tv > w.renamed_acked, f"{left}: renamed (acknowledged) yet still there"
    for dirpath, dirnames, filenames in os.walk(export):
        here = Path(dirpath)
        if here == export:
            assert sorted(dirnames) == [f"w{i}" for i in range(len(workers))], dirnames
            assert filenames == [], filenames
        for name in filenames:
            assert NAME_RE.match(name), f"{here / name}: unexpected file"
            with open(here / name, "rb") as fobj:
                while fobj.read(1 << 20):  # every file reads to its end
                    pass
    return verified


def check_state_dir(state: Path, scratch: Path) -> None:
    """The SQLite map as SIGKILL left it passes integrity_check (checked on a copy, so the
    server's own recovery is what runs on the original), and was never set aside as bad."""
    bad = sorted(p.name for p in state.rglob("*.bad"))
    assert not bad, f"the server found its state corrupt and set it aside: {bad}"
    dbs = sorted(state.rglob("*.sqlite3"))
    assert dbs, f"no SQLite database in {state}"
    for db in dbs:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        for suffix in ("", "-wal", "-shm", "-journal"):
            src = Path(f"{db}{suffix}")
            if src.exists():
                shutil.copy(src, scratch / f"copy.sqlite3{suffix}")
        conn = sqlite3.connect(scratch / "copy.sqlite3")
        try:
            result = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        assert result == [("ok",)], f"{db}: {result}"


def check_old_handles(port: int, export: Path, root: bytes, workers: list[Worker]) -> int:
    """GETATTR and READ through handles obtained before the crash; returns files checked."""
    c = RawClient(port, timeout=20)
    checked = 0
    try:
        assert c.mount(str(export)) == root, "the root handle changed across the restart"
        for w in workers:
            status, attr = nfs_getattr(c, w.dir_fh)
            assert status == Nfsstat3.OK and attr is not None, f"w{w.index}: {status.name}"
            for f in w.files.values():
                status, attr = nfs_getattr(c, f.fh)
                assert status == Nfsstat3.OK and attr is not None, f"{f.name}: {status.name}"
                assert attr.size >= f.durable_end
                if f.durable:
                    o, n = f.durable[-1]
                    n = min(n, 4096)
                    status, data = nfs_read(c, f.fh, o, n)
                    assert (status, data) == (Nfsstat3.OK, bytes(f.content[o : o + n]))
                checked += 1
    finally:
        c.close()
    return checked


# -- the server -----------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Processes of process group ``pgid`` (from /proc), the group leader left out."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != pgid:
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
                    out.append(int(entry.name))
    return out


class TracedFerry(peers.FerryServer):
    """Ferry under strace, with a ``kill`` that SIGKILLs the server."""

    def __init__(self, strace: str, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.strace = strace

    def trace_path(self, generation: int) -> Path:
        return self.log_dir / f"strace.{generation}"

    def argv(self) -> list[str]:
        return [*strace_prefix(self.strace, self.trace_path(self.generation)), *super().argv()]

    def kill(self) -> None:
        """SIGKILL the server (strace's child), not strace: strace must live to flush its log
        (a SIGKILLed strace loses its buffered last lines); then the rest of the group."""
        proc, self.proc = self.proc, None
        assert proc is not None and proc.poll() is None, "the server died before the kill"
        # The server and its workers (prefork, process models) share strace's process
        # group; kill until none is left (a worker may fork while we look).
        assert group_members(proc.pid), "strace has no child"
        for _ in range(100):
            members = group_members(proc.pid)
            if not members:
                break
            for pid in members:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)
        proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10  # its children die with the group; wait for them
        while peers.port_accepts(self.host, self.port, 0.2) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_unsynced_acknowledgement_is_detected(tmp_path: Path) -> None:
    """The strace check itself: an acknowledgement with no fsync in its window fails it."""
    trace = tmp_path / "trace"
    trace.write_text(
        '10 100.000100 pwrite64(5</e/f>, ""..., 10, 4096) = 10 <0.000010>\n'
        "11 100.000200 fsync(5</e/f> <unfinished ...>\n"
        '10 100.000300 pwrite64(5</e/f>, ""..., 10, 8192) = 10 <0.000010>\n'
        "11 100.000900 <... fsync resumed>) = 0 <0.000700>\n"
        "12 100.002000 fsync(6</e/g>) = 0 <0.000100>\n"
    )
    calls = parse_strace(trace)
    assert calls["/e/f"][1] == Syscall("fsync", "/e/f", -1, 100.0002, 100.0009, True)
    good = [
        StableAck("file_sync", "/e/f", 100.0, 100.001, 4096),
        StableAck("commit", "/e/g", 100.0015, 100.003),
    ]
    assert unsynced(good, calls) == []
    bad = [
        StableAck("file_sync", "/e/f", 100.0, 100.0005, 4096),  # reply before the fsync ended
        StableAck("file_sync", "/e/f", 100.00025, 100.001, 8192),  # fsync began before pwrite
        StableAck("commit", "/e/g", 100.0025, 100.003),  # fsync was before the call
        StableAck("dir", "/e", 100.0, 100.003),  # no fsync of that path at all
    ]
    assert len(unsynced(bad, calls)) == 4


MODELS = {  # model -> its arguments; the default model gets all the cycles, the others fewer
    "async": (),
    "thread": ("--model", "thread"),
    "prefork": ("--model", "prefork", "--workers", "2"),
    "process": ("--model", "process"),
}


@pytest.mark.parametrize("model", MODELS)
def test_crash_restart_durability(tmp_path: Path, model: str) -> None:
    strace = peers.find_tool("strace")
    assert strace, peers.tool_missing_message("strace", "strace")
    export, state = tmp_path / "export", tmp_path / "state"
    export.mkdir()
    cycles = CYCLES if model == "async" or LONG else 2
    server = TracedFerry(
        strace, export, state, tmp_path / "logs",
        extra_args=(*peers.FERRY_PEER_ARGS, *MODELS[model]), ready_timeout=30,
    )  # fmt: skip
    server.start()
    rng = random.Random(int(os.environ.get("FERRY_CRASH_SEED", "8")))
    c = RawClient(server.port)
    try:
        root = c.mount(str(server.export))
        workers = []
        for i in range(WORKERS):
            status, dfh = nfs_mkdir(c, root, f"w{i}")
            assert status == Nfsstat3.OK and dfh is not None
            assert nfs_lookup(c, root, f"w{i}")[1] == dfh
            seed = rng.randrange(1 << 30)
            workers.append(Worker(i, dfh, server.export / f"w{i}", random.Random(seed)))
    finally:
        c.close()

    all_verifiers: list[set[bytes]] = []
    totals = {"kill_cycles": 0, "bytes_verified": 0, "stable_acks_traced": 0, "ops": 0,
              "handles_checked": 0, "bytes_resent_after_new_verifier": 0}  # fmt: skip
    started = time.monotonic()
    try:
        for cycle in range(cycles):
            stop = threading.Event()
            threads = [threading.Thread(target=w.run, args=(server.port, stop), daemon=True)
                       for w in workers]  # fmt: skip
            for t in threads:
                t.start()
            time.sleep(rng.uniform(*RUN_SECONDS))
            generation = server.generation
            server.kill()  # mid-flight: the workers are still writing
            stop.set()
            for t in threads:
                t.join(30)
                assert not t.is_alive(), "a worker is stuck"
            for w in workers:
                assert w.error is None, f"cycle {cycle}, worker {w.index}: {w.error!r}"
            # With the server dead: the disk, the state dir, and the trace.
            totals["bytes_verified"] += check_disk(server.export, workers)
            check_state_dir(state, tmp_path / "sqlite-copy")
            calls = parse_strace(server.trace_path(generation))
            acks = [a for w in workers for a in w.acks]
            problems = unsynced(acks, calls)
            assert not problems, f"cycle {cycle}: " + "\n".join(problems[:10])
            totals["stable_acks_traced"] += len(acks)
            verifiers = set().union(*(w.verifiers for w in workers))
            assert len(verifiers) <= 1, f"one server run, several verifiers: {verifiers}"
            all_verifiers.append(verifiers)
            for w in workers:
                w.acks.clear()
                w.verifiers = set()
            server.trace_path(generation).unlink()  # keep the disk use bounded
            server.start()  # same port, same state dir
            totals["handles_checked"] += check_old_handles(
                server.port, server.export, root, workers
            )
            totals["kill_cycles"] += 1
            assert time.monotonic() - started < TIME_LIMIT - 60, "out of time"
        # A last run with nothing killed: resends, and the new verifier.
        stop = threading.Event()
        stop.set()
        for w in workers:
            w.run(server.port, stop)
            assert w.error is None, repr(w.error)
        all_verifiers.append(set().union(*(w.verifiers for w in workers)))
    finally:
        server.stop()
    seen = [v for vs in all_verifiers for v in vs]
    assert len(seen) == len(set(seen)), "a write verifier was reused across restarts"
    assert sum(len(vs) for vs in all_verifiers[1:]) > 0
    totals["ops"] = sum(w.ops for w in workers)
    totals["bytes_resent_after_new_verifier"] = sum(w.resent for w in workers)
    totals["bytes_acknowledged_stable"] = sum(w.bytes_stable for w in workers)
    totals["seconds"] = round(time.monotonic() - started, 1)
    tb = server.tracebacks()
    assert not tb, tb[-4000:]
    record_figures(f"crash_restart_{model}", totals)
    assert totals["kill_cycles"] == cycles


def test_create_retry_finding_the_file_syncs_the_directory(tmp_path: Path) -> None:
    strace = peers.find_tool("strace")
    assert strace, peers.tool_missing_message("strace", "strace")
    export = tmp_path / "export"
    (export / "d").mkdir(parents=True)
    server = TracedFerry(
        strace, export, tmp_path / "state", tmp_path / "logs", extra_args=peers.FERRY_PEER_ARGS
    )
    server.start()
    try:
        c = RawClient(server.port)
        try:
            dfh = nfs_lookup(c, c.mount(str(server.export)), "d")[1]
            assert dfh is not None
            # What a server killed after open(O_CREAT) and before fsync(dir) leaves behind:
            (server.export / "d" / "new").write_bytes(b"")
            w = Worker(0, dfh, server.export / "d", random.Random(0))
            w.create(c, "new")  # the client's retransmission: UNCHECKED, answered OK
        finally:
            c.close()
        generation = server.generation
    finally:
        server.kill()
    assert unsynced(w.acks, parse_strace(server.trace_path(generation))) == []

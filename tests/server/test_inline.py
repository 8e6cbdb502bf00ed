"""Calls the async server answers on its event loop (``ferry.server.inline``) and the
tripwire that sends them back to the call threads while one is slow (``ferry.tripwire``).

The routing table and the tripwire are unit-tested; then a real server in this process,
whose backend records which thread ran each GETATTR: metadata calls run on the loop, a
GETATTR that blocks stalls the loop once and then goes to the threads with every metadata
call until the backend is quick again, and the other connection's calls are not held up
meanwhile. Only generous time bounds (a stall is a second, the bound half of it).
"""

from __future__ import annotations

import errno
import os
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rawclient import (
    RawClient,
    local_config,
    nfs_commit,
    nfs_getattr,
    nfs_lookup,
    nfs_read,
    nfs_write,
    parse_reply,
    serve_in_thread,
)
from servers import export_config

from ferry import segment
from ferry.backends import LocalBackend, MemoryBackend
from ferry.backends.base import Attr, FileId, SetAttr
from ferry.backends.wrappers import ReadOnly
from ferry.cli.main import _parser, server_config
from ferry.errors import WouldBlock
from ferry.nfs3.const import (
    MOUNT_PROGRAM,
    NFS_PROGRAM,
    MountProc,
    NfsProc,
    Nfsstat3,
    StableHow,
)
from ferry.nfs3.service import NOWAIT_WRITE_MAX
from ferry.nfs3.types import WriteArgs
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.dispatch import Dispatcher
from ferry.rpc.message import NULL_AUTH, CallHeader
from ferry.rpc.portmap import PMAP_PROGRAM, PmapProc
from ferry.rpc.record import frame_bytes
from ferry.segment import FileSegment
from ferry.server.aio import AsyncServer, Limits
from ferry.server.app import App, build_app
from ferry.server.config import from_dict
from ferry.server.inline import (
    INLINE,
    METADATA,
    NO_BACKEND,
    READS,
    THREAD,
    TRY,
    WATCHED,
    WRITES,
    InlinePolicy,
)
from ferry.tripwire import Tripwire
from ferry.xdr import Packer


class Remote(MemoryBackend):
    """A backend whose metadata calls and reads may wait on a network."""

    prompt_metadata = False
    nowait_reads = False
    prompt_writes = False


def record(prog: int, vers: int, proc: int) -> bytes:
    """The start of a call record: xid, CALL, rpcvers 2, prog, vers, proc (and no more)."""
    return struct.pack(">IIIIII", 7, 0, 2, prog, vers, proc)


NFS = {p: record(NFS_PROGRAM, 3, p) for p in NfsProc}


def test_prompt_backends_get_metadata_inline_and_data_on_threads() -> None:
    policy = InlinePolicy.for_backends(True, [MemoryBackend(), ReadOnly(MemoryBackend())])
    inline = {p for p in NfsProc if policy.route(NFS[p]) == INLINE}
    assert inline == {NfsProc.NULL, *(proc for _, _, proc in METADATA)}
    for proc in (NfsProc.COMMIT, NfsProc.READDIRPLUS, NfsProc.CREATE):
        assert policy.route(NFS[proc]) == THREAD
    assert policy.route(NFS[NfsProc.READ]) == TRY  # on the loop unless it would wait
    unstable = write_record(StableHow.UNSTABLE, 4096)
    assert policy.route(unstable) == TRY  # on the loop unless stable or big
    assert policy.route(record(MOUNT_PROGRAM, 3, MountProc.EXPORT)) == INLINE
    assert policy.route(record(MOUNT_PROGRAM, 3, MountProc.MNT)) == THREAD  # resolves a path
    assert policy.route(record(PMAP_PROGRAM, 2, PmapProc.GETPORT)) == INLINE
    assert policy.route(record(NFS_PROGRAM, 2, NfsProc.GETATTR)) == THREAD  # not v3: refused
    assert policy.route(b"\0\0\0\7") == INLINE  # too short: dropped at once, no backend
    policy.close()


def test_an_async_server_without_a_policy_inlines_only_calls_without_a_backend() -> None:
    server = AsyncServer(Dispatcher([]))
    assert server.inline.route(NFS[NfsProc.NULL]) == INLINE
    assert server.inline.route(NFS[NfsProc.GETATTR]) == THREAD
    server.inline.close()
    server.workers.shutdown()


def test_one_remote_backend_keeps_metadata_on_threads_and_off_means_off() -> None:
    mixed = InlinePolicy.for_backends(True, [MemoryBackend(), ReadOnly(Remote())])
    assert mixed.route(NFS[NfsProc.GETATTR]) == THREAD
    assert mixed.route(NFS[NfsProc.READ]) == THREAD
    assert mixed.route(write_record(StableHow.UNSTABLE, 4096)) == THREAD
    assert mixed.route(NFS[NfsProc.NULL]) == INLINE  # touches no backend
    off = InlinePolicy.for_backends(False, [MemoryBackend()])
    assert {off.route(NFS[p]) for p in NfsProc} == {THREAD}


def test_a_tripped_policy_watches_metadata_on_threads_until_quiet() -> None:
    policy = InlinePolicy(NO_BACKEND, METADATA, READS | WRITES, trip=0.02, quiet=0.3)
    token = policy.wire.begin()
    time.sleep(0.05)
    policy.wire.end(token)  # a slow call: tripped
    assert policy.wire.trips == 1
    assert policy.route(NFS[NfsProc.GETATTR]) == WATCHED
    assert policy.route(NFS[NfsProc.NULL]) == INLINE
    assert policy.route(NFS[NfsProc.READ]) == THREAD  # reads too: no tries on the loop
    assert policy.route(write_record(StableHow.UNSTABLE, 4096)) == THREAD  # and writes
    time.sleep(0.4)
    assert policy.route(NFS[NfsProc.GETATTR]) == INLINE
    policy.close()


@pytest.mark.parametrize("how", ["begin/end", "lane"])
def test_the_tripwire_trips_on_a_call_that_has_not_returned(how: str) -> None:
    wire = Tripwire(0.05, 60.0, "t-wire")
    assert wire.clear()
    token = wire.begin() if how == "begin/end" else 0
    began = wire.enter() if how == "lane" else 0.0
    deadline = time.monotonic() + 5.0
    while wire.clear() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not wire.clear()  # the watcher saw it running past trip
    if how == "lane":
        wire.lap(began)
        wire.leave()
    else:
        wire.end(token)
    assert wire.trips == 1
    wire.close()


def test_the_lane_trips_on_a_slow_call_between_quick_ones() -> None:
    wire = Tripwire(0.02, 60.0, "t-lane")
    began = wire.lap(wire.enter())  # a quick call
    assert wire.clear()
    time.sleep(0.05)  # a slow one
    wire.lap(began)
    wire.leave()
    assert wire.trips == 1 and not wire.clear() and wire.busy_since == 0.0
    wire.close()


def test_the_lane_trips_on_a_slow_last_call_timed_by_leave() -> None:
    """The loop times its last call of a read with ``leave(began)`` instead of a lap."""
    wire = Tripwire(0.02, 60.0, "t-leave")
    wire.leave(wire.enter())  # one quick call
    assert wire.clear() and wire.trips == 0
    began = wire.enter()
    time.sleep(0.05)  # one slow call
    wire.leave(began)
    assert wire.trips == 1 and not wire.clear() and wire.busy_since == 0.0
    wire.close()


def test_a_call_watched_with_a_longer_limit_trips_only_past_it() -> None:
    """Calls sent to threads while tripped are watched with a limit of their own: a wait
    for the GIL or a thread is no sign of a stuck disk."""
    wire = Tripwire(0.01, 60.0, "t-limit")
    token = wire.begin(limit=5.0)
    time.sleep(0.05)
    wire.end(token)
    assert wire.trips == 0 and wire.clear()
    token = wire.begin(limit=0.02)
    time.sleep(0.05)
    wire.end(token)
    assert wire.trips == 1 and not wire.clear()
    wire.close()


def test_config_and_command_line_turn_it_off(tmp_path: Path) -> None:
    cfg = from_dict({"server": {"inline_calls": False}, "export": [{"path": str(tmp_path)}]})
    assert not cfg.inline_calls
    args = _parser().parse_args(["serve", str(tmp_path), "--no-inline"])
    assert not server_config(args).inline_calls
    args = _parser().parse_args(["serve", str(tmp_path)])
    assert server_config(args).inline_calls
    app = build_app(cfg)
    try:
        assert app.inline_policy().route(NFS[NfsProc.GETATTR]) == THREAD
    finally:
        app.close()


class Watched:
    """Wraps a backend's ``getattr``: records (when, file id, thread) of every call, and
    makes the calls on ``slow_fid`` take ``delay`` seconds while ``slow`` is set."""

    def __init__(self, backend: MemoryBackend, delay: float) -> None:
        self.inner = backend.getattr
        self.delay = delay
        self.slow = threading.Event()
        self.slow_fid = -1
        self.calls: list[tuple[float, FileId, str]] = []
        backend.getattr = self.getattr  # type: ignore[method-assign]

    def getattr(self, fid: FileId) -> Attr:
        self.calls.append((time.monotonic(), fid, threading.current_thread().name))
        if fid == self.slow_fid and self.slow.is_set():
            time.sleep(self.delay)
        return self.inner(fid)

    def threads(self, fid: FileId, since: float = 0.0, until: float = 1e18) -> set[str]:
        return {name for t, f, name in self.calls if f == fid and since <= t <= until}


def getattr_ok(c: RawClient, fh: bytes) -> None:
    assert nfs_getattr(c, fh)[0] == Nfsstat3.OK


@pytest.mark.timeout(60)
def test_a_blocking_getattr_stalls_the_loop_once_then_goes_to_the_threads(
    tmp_path: Path,
) -> None:
    delay, quiet = 1.0, 0.5
    policies: list[InlinePolicy] = []

    def policy(app: App) -> InlinePolicy:
        policies.append(InlinePolicy(NO_BACKEND, METADATA, trip=0.05, quiet=quiet, stuck=0.2))
        return policies[0]

    with serve_in_thread(export_config("memory", tmp_path), inline=policy) as srv:
        backend = srv.app.exports[0].backend
        assert isinstance(backend, MemoryBackend)
        watched = Watched(backend, delay)
        root_fid = backend.root()
        watched.slow_fid = backend.create(root_fid, b"cold", SetAttr(), False)
        a, b = srv.client(), srv.client()
        root = a.mount("/mem")
        cold = nfs_lookup(a, root, "cold")[1]
        assert cold is not None
        getattr_ok(b, root)
        assert watched.threads(root_fid) == {"ferry-loop"}  # inline while quick

        watched.slow.set()
        a_done: list[float] = []

        def slow_client() -> None:
            for _ in range(3):
                getattr_ok(a, cold)
                a_done.append(time.monotonic())

        slow = threading.Thread(target=slow_client)
        start = time.monotonic()
        slow.start()
        waits: list[tuple[float, float]] = []  # (sent, took) of b's calls
        while slow.is_alive() and time.monotonic() - start < 20:
            sent = time.monotonic()
            b.call(NFS_PROGRAM, 3, NfsProc.NULL).ok()
            getattr_ok(b, root)
            waits.append((sent, time.monotonic() - sent))
            time.sleep(0.01)
        slow.join(20)
        assert len(a_done) == 3
        threads = [n for t, f, n in watched.calls if f == watched.slow_fid and t >= start]
        assert threads[0] == "ferry-loop"  # the first one stalled the loop...
        assert all(n.startswith("ferry-call") for n in threads[1:4])  # ... the next did not
        after = [took for sent, took in waits if a_done[0] < sent < a_done[-1] - 0.05]
        assert after, "the other client made no call while the slow ones ran on threads"
        assert max(after) < delay / 2, f"another client waited {max(after):.2f}s"
        tripped = watched.threads(root_fid, a_done[0], a_done[-1] - 0.05)
        assert tripped and "ferry-loop" not in tripped  # metadata went to the threads
        assert policies[0].wire.trips >= 1

        watched.slow.clear()  # quick again: after the quiet period, inline again
        time.sleep(quiet + 0.3)
        resumed = time.monotonic()
        getattr_ok(b, root)
        getattr_ok(a, cold)
        assert watched.threads(root_fid, resumed) == {"ferry-loop"}
        assert watched.threads(watched.slow_fid, resumed) == {"ferry-loop"}
        a.close()
        b.close()


@pytest.mark.parametrize("inline", ["off", "on"])
@pytest.mark.parametrize("max_in_flight", [1, 4])
def test_calls_past_max_in_flight_sent_at_once_are_all_answered(
    tmp_path: Path, inline: str, max_in_flight: int
) -> None:
    """A client that pipelines more calls than ``max_in_flight`` gets every reply: the
    calls left in the buffer are taken as replies free room, whether the room is freed by
    call threads (inline off) or by the loop's own deferred write (inline on)."""
    policy = (lambda app: InlinePolicy()) if inline == "off" else App.inline_policy
    limits = Limits(max_in_flight=max_in_flight)
    with serve_in_thread(export_config("memory", tmp_path), limits, inline=policy) as srv:
        c = srv.client()
        root = c.mount("/mem")
        args = struct.pack(">I", len(root)) + root + bytes(-len(root) % 4)
        calls = [c.call_bytes(NFS_PROGRAM, 3, p, args) for p in [NfsProc.GETATTR] * 60]
        calls += [c.call_bytes(NFS_PROGRAM, 3, NfsProc.NULL) for _ in range(40)]
        c.sock.sendall(b"".join(frame_bytes(call) for call in calls))
        xids = {parse_reply(c.recv_record()).xid for _ in calls}
        assert xids == {struct.unpack_from(">I", call)[0] for call in calls}
        c.close()


# -- small READs on the loop (``preadv(RWF_NOWAIT)``), on a call thread when they would wait --


def _local(tmp_path: Path) -> tuple[LocalBackend, FileId]:
    root = tmp_path / "export"
    root.mkdir()
    (root / "f").write_bytes(b"x" * 5000)
    backend = LocalBackend(str(root), state_dir=tmp_path / "state")
    return backend, backend.lookup(backend.root(), b"f")


def test_read_nowait_answers_from_the_page_cache(tmp_path: Path) -> None:
    backend, fid = _local(tmp_path)
    assert LocalBackend.nowait_reads
    data, eof = backend.read_nowait(fid, 0, 4096)
    assert (bytes(data), eof) == (b"x" * 4096, False)
    data, eof = backend.read_nowait(fid, 4096, 4096)
    assert (bytes(data), eof) == (b"x" * 904, True)
    data, eof = backend.read_nowait(fid, 9000, 4096)
    assert (bytes(data), eof) == (b"", True)
    backend.close()


@pytest.mark.parametrize("kernel_says", ["EAGAIN", "EOPNOTSUPP", "short"])
def test_read_nowait_would_block_when_the_kernel_would_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kernel_says: str
) -> None:
    backend, fid = _local(tmp_path)

    def preadv(fd: int, buffers: list[bytearray], offset: int, flags: int = 0) -> int:
        assert flags == os.RWF_NOWAIT
        if kernel_says == "short":
            buffers[0][:100] = b"x" * 100
            return 100  # the first page cached, the rest not
        raise OSError(getattr(errno, kernel_says), kernel_says)

    monkeypatch.setattr(os, "preadv", preadv)
    with pytest.raises(WouldBlock):
        backend.read_nowait(fid, 0, 4096)
    monkeypatch.undo()
    backend.close()


def test_read_segment_nowait_leaves_cached_data_in_the_file(tmp_path: Path) -> None:
    root = tmp_path / "export"
    root.mkdir()
    data = os.urandom(100_000)
    (root / "f").write_bytes(data)
    backend = LocalBackend(str(root), state_dir=tmp_path / "state")
    fid = backend.lookup(backend.root(), b"f")
    with open(root / "f", "rb") as f:
        f.read()  # all cached
    seg, eof = backend.read_segment_nowait(fid, 1000, 65536)
    assert isinstance(seg, FileSegment) and (seg.offset, seg.count, eof) == (1000, 65536, False)
    assert bytes(seg.read()) == data[1000:66536]
    seg, eof = backend.read_segment_nowait(fid, 50_000, 65536)  # cut at the end of file
    assert isinstance(seg, FileSegment) and (seg.count, eof) == (50_000, True)
    assert bytes(seg.read()) == data[50_000:]
    tail, eof = backend.read_segment_nowait(fid, 90_000, 65536)  # short: copied
    assert (bytes(tail), eof) == (data[90_000:], True)  # type: ignore[arg-type]
    tail, eof = backend.read_segment_nowait(fid, 200_000, 65536)
    assert (bytes(tail), eof) == (b"", True)  # type: ignore[arg-type]
    backend.close()


def test_read_segment_nowait_would_block_unless_all_pages_are_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "export"
    root.mkdir()
    (root / "f").write_bytes(os.urandom(100_000))
    backend = LocalBackend(str(root), state_dir=tmp_path / "state")
    fid = backend.lookup(backend.root(), b"f")
    fd = os.open(root / "f", os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
        os.pread(fd, 4096, 0)  # the first page (and maybe readahead) cached again
    finally:
        os.close(fd)
    with pytest.raises(WouldBlock):
        backend.read_segment_nowait(fid, 90_000 - 65536, 65536)
    monkeypatch.setattr(segment.page_cache, "_syscall", None)  # a kernel that cannot tell
    with pytest.raises(WouldBlock):
        backend.read_segment_nowait(fid, 0, 65536)
    backend.close()


class ReadsSeen:
    """Records which thread ran each ``read_nowait``, ``read_segment_nowait`` and
    ``read_segment`` of a backend; the nowait ones say WouldBlock while ``cold`` is set."""

    def __init__(self, backend: LocalBackend) -> None:
        self.nowait, self.segment = backend.read_nowait, backend.read_segment
        self.segment_nowait = backend.read_segment_nowait
        self.cold = False
        self.calls: list[tuple[str, str]] = []
        backend.read_nowait = self.read_nowait  # type: ignore[method-assign]
        backend.read_segment = self.read_segment  # type: ignore[method-assign]
        backend.read_segment_nowait = self.read_segment_nowait  # type: ignore[method-assign]

    def read_nowait(self, fid: FileId, offset: int, count: int) -> tuple[memoryview, bool]:
        self.calls.append(("nowait", threading.current_thread().name))
        if self.cold:
            raise WouldBlock
        return self.nowait(fid, offset, count)

    def read_segment_nowait(self, fid: FileId, offset: int, count: int) -> tuple[object, bool]:
        self.calls.append(("segment_nowait", threading.current_thread().name))
        if self.cold:
            raise WouldBlock
        return self.segment_nowait(fid, offset, count)  # type: ignore[return-value]

    def read_segment(self, fid: FileId, offset: int, count: int) -> tuple[object, bool]:
        self.calls.append(("segment", threading.current_thread().name))
        return self.segment(fid, offset, count)  # type: ignore[return-value]

    def take(self) -> list[tuple[str, str]]:
        calls, self.calls = self.calls, []
        return [(how, "loop" if name == "ferry-loop" else "thread") for how, name in calls]


@pytest.mark.timeout(60)
def test_reads_run_on_the_loop_and_on_a_thread_when_they_would_wait(
    tmp_path: Path,
) -> None:
    root = tmp_path / "export"
    root.mkdir()
    data = os.urandom(200_000)
    (root / "f").write_bytes(data)
    with serve_in_thread(local_config(root, tmp_path / "state")) as srv:
        backend = srv.app.exports[0].backend
        assert isinstance(backend, LocalBackend)
        seen = ReadsSeen(backend)
        c = srv.client()
        fh = nfs_lookup(c, c.mount(str(root)), "f")[1]
        assert fh is not None
        assert nfs_read(c, fh, 4096, 4096) == (Nfsstat3.OK, data[4096:8192])
        assert seen.take() == [("nowait", "loop")]
        seen.cold = True  # not in the page cache: tried on the loop, then read on a thread
        assert nfs_read(c, fh, 8192, 4096) == (Nfsstat3.OK, data[8192:12288])
        assert seen.take() == [("nowait", "loop"), ("segment", "thread")]
        assert nfs_read(c, fh, 0, 65536) == (Nfsstat3.OK, data[:65536])  # a big one too
        assert seen.take() == [("segment_nowait", "loop"), ("segment", "thread")]
        seen.cold = False  # a big READ of cached data: sent with sendfile from the loop
        assert nfs_read(c, fh, 0, 65536) == (Nfsstat3.OK, data[:65536])
        assert seen.take() == [("segment_nowait", "loop")]
        assert nfs_read(c, fh, 150_000, 65536) == (Nfsstat3.OK, data[150_000:])  # the end
        assert seen.take() == [("segment_nowait", "loop")]
        assert nfs_read(c, fh, 199_000, 4096) == (Nfsstat3.OK, data[199_000:])
        assert seen.take() == [("nowait", "loop")]
        c.close()


# -- small UNSTABLE WRITEs on the loop; stable and big ones on a call thread ------------------


class WritesSeen:
    """Records (stable, thread) of every ``write`` and ``commit`` of a backend, and whether
    the file was synced by the time each returned."""

    def __init__(self, backend: LocalBackend) -> None:
        self.write, self.commit = backend.write, backend.commit
        self.calls: list[tuple[str, str]] = []
        backend.write = self.seen_write  # type: ignore[method-assign]
        backend.commit = self.seen_commit  # type: ignore[method-assign]

    def seen_write(
        self, fid: FileId, offset: int, data: memoryview, stable: StableHow
    ) -> StableHow:
        self.calls.append((stable.name, threading.current_thread().name))
        return self.write(fid, offset, data, stable)

    def seen_commit(self, fid: FileId, offset: int, count: int) -> None:
        self.calls.append(("COMMIT", threading.current_thread().name))
        self.commit(fid, offset, count)

    def take(self) -> list[tuple[str, str]]:
        calls, self.calls = self.calls, []
        return [(how, "loop" if name == "ferry-loop" else "thread") for how, name in calls]


@pytest.mark.timeout(60)
def test_small_unstable_writes_run_on_the_loop_and_stable_or_big_ones_on_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "export"
    root.mkdir()
    (root / "f").write_bytes(b"")
    ino = (root / "f").stat().st_ino
    synced: list[str] = []  # the syncs of f

    def syncs(real: Callable[[int], None]) -> Callable[[int], None]:
        def sync(fd: int) -> None:
            if os.fstat(fd).st_ino == ino:
                synced.append(real.__name__)
            real(fd)

        return sync

    monkeypatch.setattr(os, "fsync", syncs(os.fsync))
    monkeypatch.setattr(os, "fdatasync", syncs(os.fdatasync))
    with serve_in_thread(local_config(root, tmp_path / "state", root_squash=False)) as srv:
        backend = srv.app.exports[0].backend
        assert isinstance(backend, LocalBackend) and LocalBackend.prompt_writes
        seen = WritesSeen(backend)
        c = srv.client()
        fh = nfs_lookup(c, c.mount(str(root)), "f")[1]
        assert fh is not None
        status, verf = nfs_write(c, fh, b"a" * 4096, 0, StableHow.UNSTABLE)
        assert status == Nfsstat3.OK and seen.take() == [("UNSTABLE", "loop")] and not synced
        for stable in (StableHow.DATA_SYNC, StableHow.FILE_SYNC):  # they sync: not on the loop
            assert nfs_write(c, fh, b"b" * 100, 4096, stable) == (Nfsstat3.OK, verf)
            assert seen.take() == [(stable.name, "thread")]
        assert synced == ["fdatasync", "fsync"]
        big = os.urandom(65536)  # past NOWAIT_WRITE_MAX: copied on a thread
        assert nfs_write(c, fh, big, 8192, StableHow.UNSTABLE) == (Nfsstat3.OK, verf)
        assert seen.take() == [("UNSTABLE", "thread")]
        assert nfs_commit(c, fh) == (Nfsstat3.OK, verf)  # the same verifier throughout
        assert seen.take() == [("COMMIT", "thread")]
        c.close()
    assert (root / "f").read_bytes() == b"a" * 4096 + b"b" * 100 + bytes(4096 - 100) + big


def write_record(
    stable: StableHow, count: int, gids: tuple[int, ...] = (), fh: bytes = bytes(range(28))
) -> bytes:
    """A whole WRITE call record (AUTH_SYS with ``gids``: a credential of any length)."""
    p = Packer()
    cred = encode_auth_sys(0, 0, gids)
    CallHeader(9, 2, NFS_PROGRAM, 3, NfsProc.WRITE, cred, NULL_AUTH).pack(p)
    WriteArgs(fh, 8192, count, stable, memoryview(bytes(count))).pack(p)
    return b"".join(bytes(b) for b in p.buffers())


@pytest.mark.parametrize("gids", [(), (1, 2, 3), tuple(range(16))])
def test_only_small_unstable_writes_are_tried_on_the_loop(gids: tuple[int, ...]) -> None:
    """The route reads a WRITE's count and stable_how: a stable one (it syncs) or a big
    one goes to a thread without being decoded on the loop first."""
    policy = InlinePolicy(NO_BACKEND, METADATA, READS | WRITES)
    assert policy.route(write_record(StableHow.UNSTABLE, 4096, gids)) == TRY
    assert policy.route(write_record(StableHow.UNSTABLE, NOWAIT_WRITE_MAX, gids)) == TRY
    assert policy.route(write_record(StableHow.UNSTABLE, NOWAIT_WRITE_MAX + 4, gids)) == THREAD
    assert policy.route(write_record(StableHow.DATA_SYNC, 4096, gids)) == THREAD
    assert policy.route(write_record(StableHow.FILE_SYNC, 4096, gids)) == THREAD
    whole = write_record(StableHow.UNSTABLE, 4096, gids)
    assert policy.route(whole[: len(whole) - 4096 - 16]) == THREAD  # cut in its arguments
    policy.close()


def test_a_stable_write_that_reaches_the_loop_would_block_before_it_writes(
    tmp_path: Path,
) -> None:
    """The service's own guard, behind the route's: on the loop's transport a FILE_SYNC
    WRITE raises WouldBlock and leaves the file as it was; the DRC forgets the call, so
    the call thread that runs it next answers it (not dropped as still in progress)."""
    root = tmp_path / "export"
    root.mkdir()
    (root / "f").write_bytes(b"x" * 5000)
    app = build_app(local_config(root, tmp_path / "state", root_squash=False))
    try:
        export = app.exports[0]
        fid = export.backend.lookup(export.backend.root(), b"f")
        fh = app.nfs.handle_for(export, export.backend.getattr(fid))
        record = write_record(StableHow.FILE_SYNC, 4096, fh=fh)
        d, peer = app.dispatcher(0), ("127.0.0.1", 800)
        with pytest.raises(WouldBlock):
            d.try_handle(record, peer)
        assert (root / "f").read_bytes() == b"x" * 5000
        reply = parse_reply(b"".join(bytes(b) for b in d.handle(record, peer) or []))
        assert (reply.xid, reply.stat, reply.body.unpack_uint()) == (9, 0, Nfsstat3.OK)
        assert (root / "f").read_bytes() == b"x" * 5000 + bytes(8192 - 5000 + 4096)
    finally:
        app.close()

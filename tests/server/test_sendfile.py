"""The zero-copy READ path: every TCP model sends a READ's data straight from its file
(``FileSegment`` + sendfile; the async model from its loop, ``ferry.server.aiosend``). Data
and eof are exact at every size and range through each model; a file that shrinks under a
send closes the connection rather than send a corrupt record; pipelined replies stay whole
and in order when the socket fills mid-file; transports that cannot sendfile (UDP) and
kept replies (the DRC) get the same bytes in memory; a segment's descriptor outlives its
cache entry."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path

import pytest
from harness import start_model, stop_checked
from rawclient import RawClient, local_config, nfs_lookup, parse_reply, serve_in_thread

from ferry import loops, segment
from ferry.backends.local import SENDFILE_MIN, LocalBackend
from ferry.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, MountProc, NfsProc, Nfsstat3
from ferry.nfs3.results import unpack_read_res
from ferry.nfs3.types import ReadRes
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.dispatch import (
    TCP,
    TCP_SENDFILE,
    UDP,
    CallContext,
    Dispatcher,
    Outcome,
    Program,
    Transport,
)
from ferry.rpc.drc import DuplicateRequestCache
from ferry.rpc.message import NULL_AUTH, AcceptStat, CallHeader
from ferry.rpc.record import frame, frame_bytes
from ferry.segment import FileSegment, Part, SegmentShrank, materialize
from ferry.server.aiosend import settle, write_reply
from ferry.server.app import build_app
from ferry.server.blocking import serve_connection
from ferry.server.connection import Limits
from ferry.xdr import Packer, Unpacker

MiB = 1 << 20
Served = tuple[Dispatcher, Callable[[int], bytes]]
SIZES = (0, 1, 4095, SENDFILE_MIN + 1, 65537, MiB, MiB + 1)


def content(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def ranges(size: int) -> list[tuple[int, int]]:
    """(offset, count): whole file, from the middle, across EOF, at EOF, past EOF."""
    return [(0, MiB), (size // 2 + 1, MiB), (max(size - 3, 0), 100), (size, 10), (size + 5, 1)]


def make_export(root: Path) -> Path:
    root.mkdir()
    for size in SIZES:
        (root / f"f{size}").write_bytes(content(size))
    return root


def read_call(c: RawClient, fh: bytes, offset: int, count: int) -> bytes:
    p = Packer()
    p.pack_opaque(fh)
    p.pack_uhyper(offset)
    p.pack_uint(count)
    return c.call_bytes(NFS_PROGRAM, 3, NfsProc.READ, p.get_buffer())


def check_reads(port: int, export: Path) -> None:
    """Every size and range reads back exactly, with the right eof and count."""
    with contextlib.closing(RawClient(port)) as c:
        root = c.mount(str(export))
        for size in SIZES:
            fh = nfs_lookup(c, root, f"f{size}")[1]
            assert fh is not None
            data = content(size)
            for offset, count in ranges(size):
                c.send_record(read_call(c, fh, offset, count))
                u = parse_reply(c.recv_record()).ok()
                assert u.unpack_uint() == Nfsstat3.OK, (size, offset, count)
                res = unpack_read_res(u)
                want = data[offset : offset + count]
                assert bytes(res.data) == want, (size, offset, count)
                assert res.count == len(want)
                assert res.eof == (offset + len(want) >= size), (size, offset, count)
                assert res.file_attributes is not None and res.file_attributes.size == size


def read_args(p: Packer, fh: bytes, offset: int, count: int) -> None:
    p.pack_opaque(fh)
    p.pack_uhyper(offset)
    p.pack_uint(count)


# -- through each blocking model (separate processes) ---------------------------------------


@pytest.mark.parametrize("variant", ["serial", "thread", "process", "prefork"])
def test_reads_are_exact_through_each_blocking_model(tmp_path: Path, variant: str) -> None:
    export = make_export(tmp_path / "export")
    server = start_model(tmp_path, variant)
    try:
        check_reads(server.port, export)
    finally:
        stop_checked(server)


def test_reads_are_exact_through_the_async_model(tmp_path: Path) -> None:
    export = make_export(tmp_path / "export")
    server = start_model(tmp_path, "async")
    try:
        check_reads(server.port, export)
    finally:
        stop_checked(server)


# -- in process: the blocking loop on a loopback port ---------------------------------------


@contextlib.contextmanager
def blocking_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """The export of ``make_export`` served by ``serve_connection`` in threads."""
    export = make_export(tmp_path / "export")
    app = build_app(local_config(export, tmp_path / "state"))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    dispatcher, stopping = app.dispatcher(port), threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                sock, peer = listener.accept()
                sock.settimeout(None)
                args = (sock, dispatcher, Limits(send_timeout=5), peer)
                threading.Thread(target=serve_connection, args=args, daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield port, export
    finally:
        stopping.set()
        thread.join(5)
        listener.close()
        app.close()


def test_reads_are_exact_in_process(tmp_path: Path) -> None:
    with blocking_server(tmp_path) as (port, export):
        check_reads(port, export)


def test_reads_are_copied_where_sendfile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> int:
        raise OSError(errno.EINVAL, "no sendfile here")

    monkeypatch.setattr(os, "sendfile", refuse)
    with blocking_server(tmp_path) as (port, export):
        check_reads(port, export)


def test_file_shrinking_under_a_send_closes_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Truncated after its size was taken for the reply: the reply's record mark promised the
    old length, so the client must see a cut connection, never a complete (corrupt) record."""
    expect_cut_when_shrinking(blocking_server(tmp_path), monkeypatch, caplog)


def expect_cut_when_shrinking(
    server: contextlib.AbstractContextManager[tuple[int, Path]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 1 MiB READ whose file is cut to half once its segment is taken: the client gets a
    record mark for the whole, then fewer bytes and a closed connection; the server logs it."""
    for name in ("read_segment", "read_segment_nowait"):  # on a call thread, on the loop
        monkeypatch.setattr(LocalBackend, name, _shrinking(getattr(LocalBackend, name)))
    caplog.set_level(logging.INFO, logger="ferry.server")
    with server as (port, export), contextlib.closing(RawClient(port)) as c:
        root = c.mount(str(export))
        fh = nfs_lookup(c, root, f"f{MiB}")[1]
        assert fh is not None
        c.send_record(read_call(c, fh, 0, MiB))
        (mark,) = struct.unpack(">I", c._recv_exact(4))
        got = 0
        with contextlib.suppress(ConnectionError):
            while chunk := c.sock.recv(1 << 16):
                got += len(chunk)
        assert mark & 0x80000000 and got < (mark & 0x7FFFFFFF)
    assert "file shrank by" in caplog.text


def _shrinking(read: Callable[..., tuple[object, bool]]) -> Callable[..., tuple[object, bool]]:
    def shrinking(self: LocalBackend, fid: int, offset: int, count: int) -> tuple[object, bool]:
        data, eof = read(self, fid, offset, count)
        if isinstance(data, FileSegment):
            os.ftruncate(data.fd, offset + data.count // 2)
        return data, eof

    return shrinking


# -- in process: the async server on a loopback port --------------------------------------

LOOPS = {"uvloop": loops.new_event_loop, "asyncio": asyncio.new_event_loop}


@contextlib.contextmanager
def async_server(tmp_path: Path, loop_kind: str) -> Iterator[tuple[int, Path]]:
    """The export of ``make_export`` served by ``AsyncServer`` on a loop in a thread."""
    export = make_export(tmp_path / "export")
    config = local_config(export, tmp_path / "state")
    with serve_in_thread(config, new_loop=LOOPS[loop_kind]) as running:
        yield running.port, export


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_async_reads_are_exact_in_process(tmp_path: Path, loop_kind: str) -> None:
    with async_server(tmp_path, loop_kind) as (port, export):
        check_reads(port, export)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_async_pipelined_reads_stay_whole_when_the_socket_fills(
    tmp_path: Path, loop_kind: str
) -> None:
    """1 MiB and 4 KiB READs in flight while the client does not read: the server's send
    buffer fills, sendfile stops mid-file and the rest of that reply (and the replies after
    it) wait in the transport. Every reply must arrive whole, once."""
    with async_server(tmp_path, loop_kind) as (port, export), closing(RawClient(port)) as c:
        root = c.mount(str(export))
        fh = nfs_lookup(c, root, f"f{MiB + 1}")[1]
        assert fh is not None
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        data, want, calls = content(MiB + 1), {}, []
        for i in range(12):
            offset, count = (i * 97_331) % MiB, MiB if i % 3 else 4096
            calls.append(read_call(c, fh, offset, count))
            want[struct.unpack(">I", calls[-1][:4])[0]] = data[offset : offset + count]
        c.sock.sendall(b"".join(frame_bytes(call) for call in calls))
        time.sleep(0.3)  # the server fills its send buffer meanwhile
        for _ in calls:
            reply = parse_reply(c.recv_record())
            u = reply.ok()
            assert u.unpack_uint() == Nfsstat3.OK
            assert bytes(unpack_read_res(u).data) == want.pop(reply.xid)
        assert not want


def test_async_reads_are_copied_where_sendfile_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> int:
        raise OSError(errno.EINVAL, "no sendfile here")

    monkeypatch.setattr(os, "sendfile", refuse)
    with async_server(tmp_path, "uvloop") as (port, export):
        check_reads(port, export)


def test_async_file_shrinking_under_a_send_closes_the_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    expect_cut_when_shrinking(async_server(tmp_path, "uvloop"), monkeypatch, caplog)


class FakeTransport:
    """What ``write_reply`` uses of a transport: what it was given, a buffer size, a socket."""

    def __init__(self, sock: socket.socket | None, buffered: int = 0) -> None:
        self.sock, self.buffered, self.written = sock, buffered, bytearray()

    def writelines(self, parts: Sequence[bytes]) -> None:
        for part in parts:
            self.written += part

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str) -> object:
        assert name == "socket"
        return self.sock


def segment_of(tmp_path: Path, data: bytes) -> FileSegment:
    path = tmp_path / "seg"
    path.write_bytes(data)
    return FileSegment(os.open(path, os.O_RDONLY), 1, len(data) - 1)


def test_write_reply_sends_what_the_socket_takes_and_queues_the_rest(tmp_path: Path) -> None:
    data = content(4 * MiB)
    a, b = socket.socketpair()
    with a, b:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        a.setblocking(False)
        transport, seg = FakeTransport(a), segment_of(tmp_path, data)
        write_reply(transport, [b"head", seg, b"\0"])  # type: ignore[arg-type]
        assert seg.fd == -1
        b.setblocking(False)
        sent = bytearray()
        with contextlib.suppress(BlockingIOError):
            while chunk := b.recv(1 << 20):
                sent += chunk
        assert 0 < len(sent) < len(data) - 1  # sendfile went as far as the socket took
        assert bytes(transport.written[:4]) == b"head"
        assert sent + transport.written[4:] == data[1:] + b"\0"


def test_write_reply_never_overtakes_bytes_the_transport_holds(tmp_path: Path) -> None:
    data = content(100_000)
    a, b = socket.socketpair()
    with a, b:
        transport, seg = FakeTransport(a, buffered=10), segment_of(tmp_path, data)
        write_reply(transport, [b"head", seg])  # type: ignore[arg-type]
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            b.recv(1)  # nothing went around the transport
        assert bytes(transport.written) == b"head" + data[1:] and seg.fd == -1


# -- the sans-IO side -----------------------------------------------------------------------

PEER = ("127.0.0.1", 700)


def call(d: Dispatcher, prog: int, proc: int, args: bytes, transport: Transport) -> list[Part]:
    p = Packer()
    CallHeader(7, 2, prog, 3, proc, encode_auth_sys(0, 0), NULL_AUTH).pack(p)
    reply = d.handle_parts(p.get_buffer() + args, PEER, transport)
    assert reply is not None
    return list(reply)


def body(parts: Sequence[Part]) -> Unpacker:
    """The results of a successful reply (segments read into memory)."""
    return parse_reply(b"".join(materialize(parts))).ok()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A dispatcher over the export and a function: size -> handle of that file."""
    export = make_export(tmp_path / "export")
    app = build_app(local_config(export, tmp_path / "state"))
    d = app.dispatcher(0)
    mnt = Packer()
    mnt.pack_string(str(export))
    u = body(call(d, MOUNT_PROGRAM, MountProc.MNT, mnt.get_buffer(), TCP))
    assert u.unpack_uint() == 0
    root = bytes(u.unpack_opaque(64))

    def handle(size: int) -> bytes:
        p = Packer()
        p.pack_opaque(root)
        p.pack_string(f"f{size}")
        u = body(call(d, NFS_PROGRAM, NfsProc.LOOKUP, p.get_buffer(), TCP))
        assert u.unpack_uint() == Nfsstat3.OK
        return bytes(u.unpack_opaque(64))

    try:
        yield d, handle
    finally:
        app.close()


def read(d: Dispatcher, fh: bytes, offset: int, count: int, transport: Transport) -> list[Part]:
    p = Packer()
    read_args(p, fh, offset, count)
    return call(d, NFS_PROGRAM, NfsProc.READ, p.get_buffer(), transport)


def read_res(parts: Sequence[Part]) -> ReadRes:
    u = body(parts)
    assert u.unpack_uint() == Nfsstat3.OK
    return unpack_read_res(u)


def segments(parts: Sequence[Part]) -> list[FileSegment]:
    return [p for p in parts if isinstance(p, FileSegment)]


class Seen:
    """A ``CallObserver`` that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[Outcome] = []

    def call_started(self) -> float:
        return 0.0

    def call_done(
        self, token: float, call: Outcome, received: int, reply: Sequence[Part] | None
    ) -> None:
        self.calls.append(call)

    def call_deferred(self, token: float) -> None:
        pass

    def drc_lookup(self, outcome: str) -> None:
        pass


def test_sendfile_reply_ends_with_the_data_in_its_file(served: Served) -> None:
    d, handle = served
    fh = handle(MiB + 1)
    d.observer = seen = Seen()
    parts = read(d, fh, 1, MiB, TCP_SENDFILE)
    (seg,) = segments(parts)
    assert parts[-1] is seg and seg.count == MiB  # 1 MiB: no padding
    framed = frame(parts)
    (mark,) = struct.unpack(">I", framed[0])
    assert mark == 0x80000000 | sum(map(len, parts))
    # the observer (metrics) is told the count, never reads the reply (nor the file)
    assert seen.calls == [Outcome(NFS_PROGRAM, NfsProc.READ, AcceptStat.SUCCESS, 0, MiB)]
    res = read_res(parts)
    assert bytes(res.data) == content(MiB + 1)[1:] and res.eof
    assert seg.fd == -1  # materialize closed it


def test_padding_follows_a_segment(served: Served) -> None:
    d, handle = served
    parts = read(d, handle(65537), 0, MiB, TCP_SENDFILE)
    assert parts[-2:] == [segments(parts)[0], b"\0\0\0"]
    res = read_res(parts)
    assert bytes(res.data) == content(65537) and res.eof


def test_small_reads_and_other_transports_are_copied(served: Served) -> None:
    d, handle = served
    assert not segments(read(d, handle(4095), 0, MiB, TCP_SENDFILE))
    for transport, count in ((TCP, MiB), (UDP, 32 * 1024)):
        parts = read(d, handle(MiB), 0, MiB, transport)
        assert not segments(parts)
        res = read_res(parts)
        assert bytes(res.data) == content(MiB)[:count] and res.eof == (count == MiB)


def test_handle_reads_segments_into_memory(served: Served) -> None:
    d, handle = served
    p = Packer()
    CallHeader(9, 2, NFS_PROGRAM, 3, NfsProc.READ, encode_auth_sys(0, 0), NULL_AUTH).pack(p)
    read_args(p, handle(MiB), 0, MiB)
    reply = d.handle(p.get_buffer(), PEER, TCP_SENDFILE)
    assert reply is not None and not segments(reply)
    assert bytes(read_res(reply).data) == content(MiB)


def test_frame_reads_a_segment_to_cut_fragments(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    seg = FileSegment(os.open(path, os.O_RDONLY), 2, 7)
    framed = frame([b"ab", seg, b"\0"], max_fragment=4)
    assert not segments(framed) and seg.fd == -1
    out, data = b"".join(framed), b""
    while out:
        (mark,) = struct.unpack(">I", out[:4])
        data, out = data + out[4 : 4 + (mark & 0x7FFFFFFF)], out[4 + (mark & 0x7FFFFFFF) :]
    assert data == b"ab2345678\0"


def test_the_drc_keeps_bytes_never_a_segment(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    made: list[FileSegment] = []

    def handler(u: Unpacker, ctx: CallContext, p: Packer) -> FileSegment:
        p.pack_uint(10)
        made.append(FileSegment(os.open(path, os.O_RDONLY), 0, 10))
        return made[-1]

    drc = DuplicateRequestCache({(0x20000001, 1, 1)})
    d = Dispatcher([Program(0x20000001, "t", {1: {1: handler}})], drc)
    p = Packer()
    CallHeader(5, 2, 0x20000001, 1, 1, encode_auth_sys(0, 0), NULL_AUTH).pack(p)
    first = d.handle_parts(p.get_buffer(), PEER, TCP_SENDFILE)
    again = d.handle_parts(p.get_buffer(), PEER, TCP_SENDFILE)
    assert first is not None and again is not None and not segments([*first, *again])
    assert made[0].fd == -1 and len(made) == 1  # read, closed, and run once
    assert b"".join(materialize(first)) == b"".join(materialize(again))
    assert b"".join(materialize(again)).endswith(b"\0\0\0\x0a" + b"x" * 10 + b"\0\0")


def test_a_segment_outlives_its_cached_descriptor(tmp_path: Path) -> None:
    make_export(tmp_path / "export")
    with LocalBackend(tmp_path / "export", tmp_path / "state", fd_cache_size=1) as b:
        fid = b.lookup(b.root(), f"f{MiB}".encode())
        seg, eof = b.read_segment(fid, 0, 2 * MiB)
        assert isinstance(seg, FileSegment) and eof and seg.count == MiB
        b.read(b.lookup(b.root(), f"f{MiB + 1}".encode()), 0, 10)  # evicts and closes f{MiB}
        assert seg.read() == content(MiB)
        shrinking, _ = b.read_segment(fid, 0, MiB)
        assert isinstance(shrinking, FileSegment)
        os.truncate(tmp_path / "export" / f"f{MiB}", 100)
        with pytest.raises(SegmentShrank):
            shrinking.read()
        assert shrinking.fd == -1


def test_settle_keeps_cached_segments_and_reads_the_others(tmp_path: Path) -> None:
    """The loop must never wait for the disk: a segment goes to it only if the page cache
    holds all its pages (Linux cachestat); the call thread reads the others into memory."""
    data = content(MiB)
    path = tmp_path / "f"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.pread(fd, MiB, 0)  # all cached now
        warm = FileSegment(os.dup(fd), 1, MiB - 1)
        (kept,) = settle([warm]) or []
        assert kept is warm, "cachestat (Linux 6.5+) is needed to send cached READs from the loop"
        warm.close()
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # clean pages: dropped
        cold = FileSegment(os.dup(fd), 1, MiB - 1)
        head, read = settle([b"head", cold]) or []
        assert head == b"head" and bytes(read) == data[1:] and cold.fd == -1  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert settle(None) is None
    assert settle([b"x"]) == [b"x"]


def test_settle_copies_where_the_cache_cannot_be_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment.page_cache, "_syscall", None)
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    seg = FileSegment(os.open(path, os.O_RDONLY), 2, 5)
    assert settle([seg]) == [bytearray(b"23456")] and seg.fd == -1


def test_write_reply_queues_everything_when_the_socket_is_full(tmp_path: Path) -> None:
    data = content(100_000)
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        filled = 0
        with contextlib.suppress(BlockingIOError):
            while True:
                filled += a.send(bytes(65536))
        transport, seg = FakeTransport(a), segment_of(tmp_path, data)
        write_reply(transport, [b"head", seg, b"\0\0"])  # type: ignore[arg-type]
        assert bytes(transport.written) == b"head" + data[1:] + b"\0\0" and seg.fd == -1
        b.setblocking(False)
        got = 0
        with contextlib.suppress(BlockingIOError):
            while chunk := b.recv(1 << 20):
                got += len(chunk)
        assert got == filled  # nothing of the reply went around the transport

"""The duplicate request cache and RPC over UDP.

Unit tests of both caches, ``ferry.rpc.drc`` in one process and
``ferry.server.shared_drc`` shared by worker processes (hit, in-progress drop, eviction,
age, checksum; what only the shared one does is in ``test_shared_drc.py``), of the
dispatcher's use of them, then real retransmissions: identical datagrams sent twice over
UDP to every server model, and a call resent with the same xid on a new TCP connection
after the first one was closed unanswered. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import start_model, stop_checked
from modelserver import VARIANTS
from rawclient import RawClient, Reply, local_config, parse_reply

from ferry.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, NfsProc, Nfsstat3
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.dispatch import TCP, UDP, CallContext, Dispatcher, Program
from ferry.rpc.drc import (
    CHECKSUM_HEAD,
    CHECKSUM_TAIL,
    DuplicateRequestCache,
    Lookup,
    ReplyCache,
    call_key,
    client_key,
)
from ferry.rpc.message import NULL_AUTH, CallHeader
from ferry.rpc.portmap import IPPROTO_UDP, PMAP_PROGRAM, Mapping
from ferry.server.aio import AsyncServer
from ferry.server.app import App, build_app
from ferry.server.shared_drc import SharedReplyCache
from ferry.server.udp import MAX_UDP_PAYLOAD, bind_udp, fit_datagram
from ferry.xdr import Packer, Unpacker

CRED = encode_auth_sys(0, 0)


def call_record(xid: int, prog: int, proc: int, args: bytes = b"", vers: int = 3) -> bytes:
    p = Packer()
    CallHeader(xid, 2, prog, vers, proc, CRED, NULL_AUTH).pack(p)
    return p.get_buffer() + args


# -- the cache alone -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


MakeCache = Callable[..., ReplyCache]


@pytest.fixture(params=["local", "shared"])
def make_cache(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeCache]:
    """Either cache, made with the same arguments (the shared one also gets a lock file)."""
    made: list[SharedReplyCache] = []

    def make(procedures: object = (), **kw: object) -> ReplyCache:
        if request.param == "local":
            return DuplicateRequestCache(procedures, **kw)  # type: ignore[arg-type]
        cache = SharedReplyCache(procedures, tmp_path / "drc.lock", **kw)  # type: ignore[arg-type]
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.close()


def header(xid: int, proc: int = 12) -> CallHeader:
    return CallHeader(xid, 2, NFS_PROGRAM, 3, proc, CRED, NULL_AUTH)


def key(xid: int, record: bytes = b"call", host: str = "10.0.0.1") -> tuple:  # type: ignore[type-arg]
    return call_key("udp", (host, 700), header(xid), record)


def test_drc_hit_after_finish(make_cache: MakeCache) -> None:
    drc = make_cache([(NFS_PROGRAM, 3, 12)])
    assert drc.wants(header(1)) and not drc.wants(header(1, proc=1))
    assert drc.begin(key(1)) == (Lookup.NEW, None)
    drc.finish(key(1), b"reply")
    assert drc.begin(key(1)) == (Lookup.HIT, b"reply")
    assert (drc.stats.misses, drc.stats.hits) == (1, 1)


def test_drc_drops_while_in_progress(make_cache: MakeCache) -> None:
    drc = make_cache([])
    assert drc.begin(key(1))[0] is Lookup.NEW
    assert drc.begin(key(1)) == (Lookup.IN_PROGRESS, None)
    assert drc.stats.in_progress == 1
    drc.abandon(key(1))
    assert drc.begin(key(1))[0] is Lookup.NEW  # forgotten: runs again


def test_drc_checksum_and_client_make_a_different_call(make_cache: MakeCache) -> None:
    drc = make_cache([])
    drc.begin(key(7, b"remove a"))
    drc.finish(key(7, b"remove a"), b"ok")
    assert drc.begin(key(7, b"remove b"))[0] is Lookup.NEW  # same xid, other bytes
    assert drc.begin(key(7, b"remove a", host="10.0.0.2"))[0] is Lookup.NEW
    assert drc.begin(key(7, b"remove a"))[0] is Lookup.HIT


def test_call_key_sums_head_tail_and_length() -> None:
    """The checksum covers the first CHECKSUM_HEAD and the last CHECKSUM_TAIL bytes of a
    call, and the key its length (knfsd sums the first 256 bytes of the arguments and the
    length): a call that reuses an XID with other bytes there, or with another length, is
    another call; a retransmission (the same bytes) is the same one. The middle of a large
    WRITE's data is not summed, so the key costs the same for 4 KiB and 1 MiB."""
    write = call_record(7, NFS_PROGRAM, 7, bytes(64 * 1024))
    same = key(7, write)
    assert key(7, bytes(write)) == same
    for at in (0, 100, CHECKSUM_HEAD - 1, len(write) - CHECKSUM_TAIL, len(write) - 1):
        other = bytearray(write)
        other[at] ^= 1
        assert key(7, bytes(other)) != same, at
    assert key(7, write + bytes(4)) != same
    assert key(7, write[:-4]) != same
    middle = bytearray(write)
    middle[len(write) // 2] ^= 1
    assert key(7, bytes(middle)) == same
    assert key(7, memoryview(write)) == same  # any buffer, as the adapters hand records


def test_client_key_udp_by_port_tcp_by_host() -> None:
    assert client_key(("10.0.0.1", 700), UDP.by_port) == ("10.0.0.1", 700)
    assert client_key(("10.0.0.1", 700), TCP.by_port) == client_key(("10.0.0.1", 900), False)
    assert client_key(None, False) == ("None",)


def test_drc_evicts_least_recently_used(make_cache: MakeCache) -> None:
    drc = make_cache([], max_entries=2)
    for xid in (1, 2):
        drc.begin(key(xid))
        drc.finish(key(xid), b"r")
    assert drc.begin(key(1))[0] is Lookup.HIT  # 1 is now the most recent
    drc.begin(key(3))
    drc.finish(key(3), b"r")
    assert len(drc) == 2 and drc.stats.evictions == 1
    assert drc.begin(key(1))[0] is Lookup.HIT
    assert drc.begin(key(2))[0] is Lookup.NEW


def test_drc_bounded_in_bytes() -> None:
    drc = DuplicateRequestCache([], max_bytes=250)
    for xid in range(10):
        drc.begin(key(xid))
        drc.finish(key(xid), bytes(100))
    assert drc.bytes <= 250 and len(drc) == 2
    assert drc.begin(key(9))[0] is Lookup.HIT


def test_drc_entries_expire(make_cache: MakeCache) -> None:
    clock = Clock()
    drc = make_cache([], max_age=10.0, clock=clock)
    drc.begin(key(1))
    drc.finish(key(1), b"r")
    clock.now += 11
    assert drc.begin(key(1))[0] is Lookup.NEW
    assert drc.stats.expired == 1


# -- the dispatcher with a cache -----------------------------------------------------------


@dataclass
class Counter:
    """A one-procedure program that counts its runs; proc 2 re-enters the dispatcher."""

    runs: int = 0
    dispatcher: Dispatcher | None = None
    nested: list[object] | None = None

    def program(self) -> Program:
        def count(u: Unpacker, ctx: CallContext, p: Packer) -> None:
            self.runs += 1
            p.pack_uint(self.runs)

        def crash(u: Unpacker, ctx: CallContext, p: Packer) -> None:
            self.runs += 1
            raise RuntimeError("boom")

        def reenter(u: Unpacker, ctx: CallContext, p: Packer) -> None:
            assert self.dispatcher is not None
            record = call_record(ctx.xid, 400000, 2, vers=1)
            self.nested = [self.dispatcher.handle(record, ctx.client, ctx.transport)]

        return Program(400000, "counter", {1: {1: count, 2: reenter, 3: crash}})


def counter_dispatcher(make_cache: MakeCache) -> tuple[Counter, Dispatcher]:
    counter = Counter()
    drc = make_cache([(400000, 1, 1), (400000, 1, 2), (400000, 1, 3)])
    counter.dispatcher = Dispatcher([counter.program()], drc)
    return counter, counter.dispatcher


def joined(buffers: list[object] | None) -> bytes:
    assert buffers is not None
    return b"".join(bytes(b) for b in buffers)  # type: ignore[call-overload]


def test_dispatcher_replays_instead_of_running_twice(make_cache: MakeCache) -> None:
    counter, d = counter_dispatcher(make_cache)
    record = call_record(5, 400000, 1, vers=1)
    first = joined(d.handle(record, ("h", 1), UDP))
    assert joined(d.handle(record, ("h", 1), UDP)) == first
    assert counter.runs == 1
    joined(d.handle(call_record(5, 400000, 1, b"\0\0\0\0", vers=1), ("h", 1), UDP))
    assert counter.runs == 2  # same xid, different call: run


def test_dispatcher_drops_retransmission_in_progress(make_cache: MakeCache) -> None:
    counter, d = counter_dispatcher(make_cache)
    d.handle(call_record(9, 400000, 2, vers=1), ("h", 1), UDP)
    assert counter.nested is not None
    assert counter.nested == [None]  # the copy that arrived while the original ran
    assert d.drc is not None and d.drc.stats.in_progress == 1


def test_dispatcher_does_not_replay_a_server_fault(make_cache: MakeCache) -> None:
    counter, d = counter_dispatcher(make_cache)
    record = call_record(3, 400000, 3, vers=1)
    d.handle(record, ("h", 1), UDP)
    d.handle(record, ("h", 1), UDP)
    assert counter.runs == 2


def test_oversized_reply_becomes_system_err() -> None:
    reply = fit_datagram(call_record(77, NFS_PROGRAM, 6), [bytes(MAX_UDP_PAYLOAD + 1)], None)
    parsed = parse_reply(reply)
    assert (parsed.xid, parsed.reply_stat, parsed.stat) == (77, 0, 5)  # SYSTEM_ERR


# -- a real server over UDP and TCP --------------------------------------------------------


class UdpClient:
    """Sends call datagrams from one socket (one client address) and reads replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5.0)
        self.sock.connect(("127.0.0.1", port))
        self.xid = 0x5000

    def close(self) -> None:
        self.sock.close()

    def record(self, prog: int, proc: int, args: bytes = b"", xid: int | None = None) -> bytes:
        if xid is None:
            self.xid += 1
            xid = self.xid
        vers = 2 if prog == PMAP_PROGRAM else 3
        return call_record(xid, prog, proc, args, vers)

    def send(self, record: bytes) -> Reply:
        """Send a call and return its reply, skipping replies to other xids."""
        self.sock.send(record)
        for _ in range(16):
            reply = parse_reply(self.sock.recv(65536))
            if reply.xid == int.from_bytes(record[:4], "big"):
                return reply
        raise AssertionError("no reply with the call's xid")

    def call(self, prog: int, proc: int, args: bytes = b"") -> Reply:
        return self.send(self.record(prog, proc, args))


@dataclass
class UdpServer:
    app: App
    port: int
    export: Path


@contextlib.contextmanager
def udp_server(tmp_path: Path) -> Iterator[UdpServer]:
    """Ferry's async server on loopback, TCP and UDP on one port, in a thread."""
    export = tmp_path / "export"
    export.mkdir()
    config = local_config(export, tmp_path / "state")
    config.udp = True
    config.exports[0].root_squash = False
    app = build_app(config)
    loop = asyncio.new_event_loop()
    server = AsyncServer(app.dispatcher(0))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> int:
        port = await server.listen("127.0.0.1", 0)
        server.dispatcher = app.dispatcher(port)
        await server.listen_udp(bind_udp("127.0.0.1", port, "NFS"))
        return port

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield UdpServer(app, port, export)
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        app.close()


def diropargs(fh: bytes, name: str) -> bytes:
    p = Packer()
    p.pack_opaque(fh)
    p.pack_string(name.encode())
    return p.get_buffer()


def mount_udp(c: UdpClient, path: Path) -> bytes:
    p = Packer()
    p.pack_string(str(path).encode())
    u = c.call(MOUNT_PROGRAM, 1, p.get_buffer()).ok()
    assert u.unpack_uint() == 0
    return bytes(u.unpack_opaque(64))


def status(reply: Reply) -> Nfsstat3:
    return Nfsstat3(reply.ok().unpack_uint())


def create_args(root: bytes, name: str, guarded: bool) -> bytes:
    p = Packer()
    p.pack_opaque(root)
    p.pack_string(name.encode())
    p.pack_uint(1 if guarded else 0)  # GUARDED / UNCHECKED
    for _ in range(4):
        p.pack_bool(False)  # mode, uid, gid, size: not set
    p.pack_uint(0)
    p.pack_uint(0)  # atime, mtime: DONT_CHANGE
    return p.get_buffer()


@pytest.fixture
def udp(tmp_path: Path) -> Iterator[UdpServer]:
    with udp_server(tmp_path) as srv:
        yield srv


@pytest.fixture
def client(udp: UdpServer) -> Iterator[UdpClient]:
    c = UdpClient(udp.port)
    try:
        yield c
    finally:
        c.close()


def test_udp_remove_retransmitted_gets_the_cached_reply(udp: UdpServer, client: UdpClient) -> None:
    root = mount_udp(client, udp.export)
    (udp.export / "doomed").write_bytes(b"x")
    call = client.record(NFS_PROGRAM, NfsProc.REMOVE, diropargs(root, "doomed"))
    assert status(client.send(call)) == Nfsstat3.OK
    assert not (udp.export / "doomed").exists()
    (udp.export / "doomed").write_bytes(b"again")  # a second run would remove this one
    assert status(client.send(call)) == Nfsstat3.OK  # not NOENT
    assert (udp.export / "doomed").read_bytes() == b"again"
    assert udp.app.drc is not None and udp.app.drc.stats.hits == 1


def test_udp_create_and_rename_retransmitted(udp: UdpServer, client: UdpClient) -> None:
    root = mount_udp(client, udp.export)
    create = client.record(NFS_PROGRAM, NfsProc.CREATE, create_args(root, "new", guarded=True))
    first = client.send(create)
    assert status(first) == Nfsstat3.OK
    again = client.send(create)
    assert status(again) == Nfsstat3.OK  # not EXIST
    p = Packer()
    p.pack_opaque(root)
    p.pack_string(b"new")
    p.pack_opaque(root)
    p.pack_string(b"renamed")
    rename = client.record(NFS_PROGRAM, NfsProc.RENAME, p.get_buffer())
    assert status(client.send(rename)) == Nfsstat3.OK
    assert status(client.send(rename)) == Nfsstat3.OK  # not NOENT
    assert sorted(x.name for x in udp.export.iterdir()) == ["renamed"]


def test_udp_other_call_with_same_xid_is_not_answered_from_cache(
    udp: UdpServer, client: UdpClient
) -> None:
    root = mount_udp(client, udp.export)
    (udp.export / "a").write_bytes(b"")
    xid = 0x7777
    remove_a = client.record(NFS_PROGRAM, NfsProc.REMOVE, diropargs(root, "a"), xid=xid)
    remove_b = client.record(NFS_PROGRAM, NfsProc.REMOVE, diropargs(root, "b"), xid=xid)
    assert status(client.send(remove_a)) == Nfsstat3.OK
    assert status(client.send(remove_b)) == Nfsstat3.NOENT  # run, not replayed


def test_udp_other_client_port_is_another_client(udp: UdpServer, client: UdpClient) -> None:
    root = mount_udp(client, udp.export)
    (udp.export / "a").write_bytes(b"")
    call = client.record(NFS_PROGRAM, NfsProc.REMOVE, diropargs(root, "a"))
    assert status(client.send(call)) == Nfsstat3.OK
    other = UdpClient(udp.port)
    try:
        assert status(other.send(call)) == Nfsstat3.NOENT  # same bytes, other sender
    finally:
        other.close()


def test_udp_sizes_keep_to_one_datagram(udp: UdpServer, client: UdpClient) -> None:
    root = mount_udp(client, udp.export)
    (udp.export / "big").write_bytes(bytes(300_000))
    fsinfo = Packer()
    fsinfo.pack_opaque(root)
    u = client.call(NFS_PROGRAM, NfsProc.FSINFO, fsinfo.get_buffer()).ok()
    assert u.unpack_uint() == 0
    if u.unpack_bool():
        u.unpack_fopaque(84)
    rtmax, rtpref, _, wtmax = (u.unpack_uint() for _ in range(4))
    assert rtmax == rtpref == wtmax == 32768
    u = client.call(NFS_PROGRAM, NfsProc.LOOKUP, diropargs(root, "big")).ok()
    assert u.unpack_uint() == 0
    fh = bytes(u.unpack_opaque(64))
    p = Packer()
    p.pack_opaque(fh)
    p.pack_uhyper(0)
    p.pack_uint(1 << 20)  # asks for 1 MiB; gets what fits
    u = client.call(NFS_PROGRAM, NfsProc.READ, p.get_buffer()).ok()
    assert u.unpack_uint() == 0
    if u.unpack_bool():
        u.unpack_fopaque(84)
    assert u.unpack_uint() == 32768


def test_udp_malformed_datagrams_are_dropped(udp: UdpServer, client: UdpClient) -> None:
    for junk in (b"", b"\x01", b"\0\0\0\x01\0\0\0\0\xff", bytes(range(256)) * 200):
        client.sock.send(junk)
    garbage = client.send(client.record(NFS_PROGRAM, NfsProc.REMOVE, b"\xff\xff"))
    assert (garbage.reply_stat, garbage.stat) == (0, 4)  # GARBAGE_ARGS
    assert client.call(NFS_PROGRAM, 0).ok() is not None  # still serving


def test_portmap_over_udp_lists_udp(udp: UdpServer, client: UdpClient) -> None:
    p = Packer()
    Mapping(NFS_PROGRAM, 3, IPPROTO_UDP, 0).pack(p)
    u = client.call(PMAP_PROGRAM, 3, p.get_buffer()).ok()
    assert u.unpack_uint() == udp.port


def test_tcp_reconnect_gets_the_cached_reply(udp: UdpServer) -> None:
    c = RawClient(udp.port)
    root = c.mount(str(udp.export))
    c.close()
    (udp.export / "doomed").write_bytes(b"x")
    call = call_record(0x9001, NFS_PROGRAM, NfsProc.REMOVE, diropargs(root, "doomed"))
    first = RawClient(udp.port)
    first.send_record(call)
    first.close()  # the reply is lost with the connection
    wait_for(lambda: not (udp.export / "doomed").exists())
    (udp.export / "doomed").write_bytes(b"again")
    assert status(resend(udp.port, call)) == Nfsstat3.OK  # not NOENT
    assert (udp.export / "doomed").read_bytes() == b"again"


def resend(port: int, call: bytes, tries: int = 5) -> Reply:
    """Resend on new connections until answered, as a client does: a copy that arrives
    while the original is still finishing is dropped, and the next one gets the reply."""
    for _ in range(tries):
        c = RawClient(port, timeout=0.5)
        try:
            c.send_record(call)
            return parse_reply(c.recv_record())
        except (TimeoutError, ConnectionError):
            continue
        finally:
            c.close()
    raise AssertionError(f"no reply in {tries} tries")


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- ferry serve --udp, every model ---------------------------------------------------------


@pytest.mark.parametrize("variant", VARIANTS)
def test_serve_udp_retransmissions(tmp_path: Path, variant: str) -> None:
    """Every model serves UDP beside TCP (serial too, while a TCP client holds its one
    connection), keeps replies within one datagram, and answers each client's
    retransmission from the cache, whichever process got it."""
    srv = start_model(tmp_path, variant, extra=("--udp",))
    held = RawClient(srv.port)
    try:
        held.mount(str(srv.export))
        for i in range(8):  # eight client addresses, spread over the workers
            c = UdpClient(srv.port)
            try:
                root = mount_udp(c, srv.export)
                (srv.export / f"f{i}").write_bytes(b"")
                call = c.record(NFS_PROGRAM, NfsProc.REMOVE, diropargs(root, f"f{i}"))
                first = c.send(call)
                assert status(first) == Nfsstat3.OK
                (srv.export / f"f{i}").write_bytes(b"again")
                assert status(c.send(call)) == Nfsstat3.OK
                assert (srv.export / f"f{i}").exists()
            finally:
                c.close()
        assert udp_rtmax(srv.port, root) == 32768
    finally:
        held.close()
        stop_checked(srv)


def udp_rtmax(port: int, root: bytes) -> int:
    """FSINFO over UDP: the largest READ the server offers there."""
    c = UdpClient(port)
    try:
        p = Packer()
        p.pack_opaque(root)
        u = c.call(NFS_PROGRAM, NfsProc.FSINFO, p.get_buffer()).ok()
    finally:
        c.close()
    assert u.unpack_uint() == 0
    if u.unpack_bool():
        u.unpack_fopaque(84)
    return u.unpack_uint()


@pytest.mark.parametrize("variant", ["serial", "thread", "async"])
def test_serve_tcp_reconnect_single_process(tmp_path: Path, variant: str) -> None:
    """Guaranteed where one process serves every connection; see docs/server-models.md."""
    srv = start_model(tmp_path, variant)
    try:
        c = RawClient(srv.port)
        root = c.mount(str(srv.export))
        c.close()
        (srv.export / "doomed").write_bytes(b"x")
        call = call_record(0x9001, NFS_PROGRAM, NfsProc.REMOVE, diropargs(root, "doomed"))
        first = RawClient(srv.port)
        first.send_record(call)
        wait_for(lambda: not (srv.export / "doomed").exists())
        first.close()
        (srv.export / "doomed").write_bytes(b"again")
        assert status(resend(srv.port, call)) == Nfsstat3.OK
        assert (srv.export / "doomed").exists()
    finally:
        stop_checked(srv)

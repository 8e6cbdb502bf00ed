"""RPC-level behaviour of the real server on loopback: every error reply, exactly, and the
stream handling around it (fragments, pipelining, limits, hostile or vanishing clients)."""

from __future__ import annotations

import fcntl
import os
import random
import socket
import struct
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rawclient import (
    RawClient,
    RunningServer,
    local_config,
    nfs_getattr,
    nfs_lookup,
    open_fd_count,
    parse_reply,
    serve_in_thread,
)

from ferry.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, Nfsstat3
from ferry.rpc.message import AuthFlavor, OpaqueAuth
from ferry.rpc.record import frame_bytes
from ferry.server.aio import Limits
from ferry.xdr import Packer, Unpacker

MSG_ACCEPTED, MSG_DENIED = 0, 1
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR = range(6)
RPC_MISMATCH, AUTH_ERROR = 0, 1
AUTH_BADCRED, AUTH_TOOWEAK = 1, 5
MAX_RECORD = 128 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningServer]:
    export = tmp_path / "export"
    export.mkdir()
    (export / "hello.txt").write_bytes(b"hello\n")
    with serve_in_thread(
        local_config(export, tmp_path / "state"), Limits(max_record=MAX_RECORD)
    ) as srv:
        yield srv


def assert_null_works(c: RawClient) -> None:
    """An NFS NULL call on ``c`` gets a SUCCESS reply with an empty body and our xid."""
    reply = c.call(NFS_PROGRAM, 3, 0)
    assert reply.xid == c.xid
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, SUCCESS)
    assert reply.body.remaining() == 0


def assert_closed_by_server(c: RawClient, timeout: float = 5.0) -> None:
    """The server closed (or reset) ``c``'s connection within ``timeout`` seconds."""
    c.sock.settimeout(timeout)
    try:
        data = c.sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return
    except TimeoutError:
        pytest.fail("server kept the connection open")
    assert data == b"", f"expected EOF, got {data!r}"


def root_fh(c: RawClient, server: RunningServer) -> bytes:
    return c.mount(str(server.root))


# -- header-level errors ------------------------------------------------------------------


def test_rpc_version_3_is_rpc_mismatch_and_connection_stays_usable(client: RawClient) -> None:
    reply = client.call(NFS_PROGRAM, 3, 0, rpcvers=3)
    assert reply.xid == client.xid
    assert (reply.reply_stat, reply.stat) == (MSG_DENIED, RPC_MISMATCH)
    assert (reply.body.unpack_uint(), reply.body.unpack_uint()) == (2, 2)
    assert reply.body.remaining() == 0
    assert_null_works(client)
    # And once more, with trailing bytes after the bad version (a v3 header is unknown).
    reply = client.call(MOUNT_PROGRAM, 3, 0, b"\x00" * 40, rpcvers=3)
    assert (reply.reply_stat, reply.stat) == (MSG_DENIED, RPC_MISMATCH)
    assert_null_works(client)


def test_unknown_program_is_prog_unavail(client: RawClient) -> None:
    reply = client.call(100099, 1, 0)
    assert reply.xid == client.xid
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, PROG_UNAVAIL)
    assert reply.body.remaining() == 0
    assert_null_works(client)


@pytest.mark.parametrize("vers", [2, 4])
def test_nfs_version_mismatch_reports_3_to_3(client: RawClient, vers: int) -> None:
    reply = client.call(NFS_PROGRAM, vers, 0)
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, PROG_MISMATCH)
    assert (reply.body.unpack_uint(), reply.body.unpack_uint()) == (3, 3)
    assert reply.body.remaining() == 0


def test_mount_version_mismatch_reports_3_to_3(client: RawClient) -> None:
    reply = client.call(MOUNT_PROGRAM, 1, 0)
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, PROG_MISMATCH)
    assert (reply.body.unpack_uint(), reply.body.unpack_uint()) == (3, 3)


@pytest.mark.parametrize(
    ("prog", "proc"), [(NFS_PROGRAM, 22), (NFS_PROGRAM, 0xFFFFFFFF), (MOUNT_PROGRAM, 6)]
)
def test_unknown_procedure_is_proc_unavail(client: RawClient, prog: int, proc: int) -> None:
    reply = client.call(prog, 3, proc)
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, PROC_UNAVAIL)
    assert reply.body.remaining() == 0
    assert_null_works(client)


# -- arguments ----------------------------------------------------------------------------


def test_getattr_with_half_a_handle_is_garbage_args(
    client: RawClient, server: RunningServer
) -> None:
    fh = root_fh(client, server)
    args = struct.pack(">I", len(fh)) + fh[: len(fh) // 2]
    reply = client.call(NFS_PROGRAM, 3, 1, args)
    assert reply.xid == client.xid
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, GARBAGE_ARGS)
    assert reply.body.remaining() == 0
    # The complete handle still works on the same connection.
    assert nfs_getattr(client, fh)[0] == Nfsstat3.OK


def test_write_whose_opaque_length_exceeds_the_data_is_garbage_args(
    client: RawClient, server: RunningServer
) -> None:
    root = root_fh(client, server)
    status, fh, _ = nfs_lookup(client, root, "hello.txt")
    assert status == Nfsstat3.OK and fh is not None
    p = Packer()
    p.pack_opaque(fh)
    p.pack_uhyper(0)
    p.pack_uint(100)  # count
    p.pack_uint(2)  # FILE_SYNC
    p.pack_uint(100)  # opaque length: 100 ...
    args = p.get_buffer() + b"x" * 12  # ... but only 12 bytes follow
    reply = client.call(NFS_PROGRAM, 3, 7, args)
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, GARBAGE_ARGS)
    assert (server.root / "hello.txt").read_bytes() == b"hello\n"  # nothing written
    assert_null_works(client)


def test_mount_path_longer_than_mntpathlen_is_garbage_args(client: RawClient) -> None:
    p = Packer()
    p.pack_string("/" + "a" * 2000)
    reply = client.call(MOUNT_PROGRAM, 3, 1, p.get_buffer())
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, GARBAGE_ARGS)


# -- credentials --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"",  # nothing at all
        b"\x00\x00\x00\x00",  # stamp only
        struct.pack(">II", 0, 300) + b"m" * 300,  # machine name over 255 bytes
        struct.pack(">II", 0, 1)
        + b"m\0\0\0"
        + struct.pack(">III", 0, 0, 17)
        + b"\0" * 68,  # 17 gids
    ],
)
def test_malformed_auth_sys_is_auth_badcred(client: RawClient, body: bytes) -> None:
    reply = client.call(NFS_PROGRAM, 3, 0, cred=OpaqueAuth(AuthFlavor.AUTH_SYS, body))
    assert reply.xid == client.xid
    assert (reply.reply_stat, reply.stat) == (MSG_DENIED, AUTH_ERROR)
    assert reply.body.unpack_uint() == AUTH_BADCRED
    assert reply.body.remaining() == 0
    assert_null_works(client)


def test_rpcsec_gss_is_auth_tooweak(client: RawClient) -> None:
    reply = client.call(NFS_PROGRAM, 3, 0, cred=OpaqueAuth(AuthFlavor.RPCSEC_GSS, b"\0" * 16))
    assert (reply.reply_stat, reply.stat) == (MSG_DENIED, AUTH_ERROR)
    assert reply.body.unpack_uint() == AUTH_TOOWEAK
    assert reply.body.remaining() == 0


def test_auth_none_is_accepted(client: RawClient) -> None:
    reply = client.call(NFS_PROGRAM, 3, 0, cred=OpaqueAuth(AuthFlavor.AUTH_NONE))
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, SUCCESS)


# -- the stream ---------------------------------------------------------------------------


def test_reply_message_sent_to_server_is_ignored(client: RawClient) -> None:
    p = Packer()
    for v in (0xDEAD, 1, MSG_ACCEPTED, 0, 0, SUCCESS):  # xid, REPLY, accepted, verf, SUCCESS
        p.pack_uint(v)
    client.send_record(p.get_buffer())
    # The first reply to arrive must be for the NULL call, not for the bogus REPLY.
    assert_null_works(client)


def test_multi_fragment_call_is_answered(client: RawClient, server: RunningServer) -> None:
    fh = root_fh(client, server)
    p = Packer()
    p.pack_opaque(fh)
    message = client.call_bytes(NFS_PROGRAM, 3, 1, p.get_buffer())
    size = -(-len(message) // 3)
    framed = frame_bytes(message, max_fragment=size)
    # Three fragments: only the last one carries the last-fragment bit.
    headers, pos = [], 0
    while pos < len(framed):
        (h,) = struct.unpack_from(">I", framed, pos)
        headers.append(h)
        pos += 4 + (h & 0x7FFFFFFF)
    assert len(headers) == 3
    assert [bool(h & 0x80000000) for h in headers] == [False, False, True]
    # Send each fragment separately, with pauses, so they arrive in different reads.
    pos = 0
    for h in headers:
        n = 4 + (h & 0x7FFFFFFF)
        client.sock.sendall(framed[pos : pos + n])
        pos += n
        time.sleep(0.02)
    reply = parse_reply(client.recv_record())
    assert reply.xid == client.xid
    u = reply.ok()
    assert u.unpack_uint() == Nfsstat3.OK
    assert u.unpack_uint() == 2  # a directory


def test_pipelined_calls_are_all_answered_with_matching_xids(
    client: RawClient, server: RunningServer
) -> None:
    fh = root_fh(client, server)
    fh_args = Packer()
    fh_args.pack_opaque(fh)
    sent: dict[int, int] = {}
    blob = b""
    for i in range(40):
        proc = (0, 1, 18)[i % 3]  # NULL, GETATTR, FSSTAT
        args = b"" if proc == 0 else fh_args.get_buffer()
        message = client.call_bytes(NFS_PROGRAM, 3, proc, args)
        sent[client.xid] = proc
        blob += frame_bytes(message)
    client.sock.sendall(blob)  # all at once, without waiting for any reply
    got: dict[int, int] = {}
    for _ in range(len(sent)):
        reply = parse_reply(client.recv_record())
        assert reply.xid in sent and reply.xid not in got
        u = reply.ok()
        got[reply.xid] = sent[reply.xid]
        if sent[reply.xid] == 0:
            assert u.remaining() == 0
        else:
            assert u.unpack_uint() == Nfsstat3.OK
    assert got == sent


def test_oversized_record_closes_only_that_connection(server: RunningServer) -> None:
    bystander, hostile = server.client(), server.client()
    try:
        assert_null_works(bystander)
        hostile.sock.sendall(struct.pack(">I", 0x80000000 | (MAX_RECORD + 1)) + b"\0" * 64)
        assert_closed_by_server(hostile)
        assert_null_works(bystander)
        fresh = server.client()
        try:
            assert_null_works(fresh)
        finally:
            fresh.close()
    finally:
        bystander.close()
        hostile.close()


def test_oversized_record_across_fragments_closes_the_connection(server: RunningServer) -> None:
    hostile = server.client()
    try:
        fragment = b"\0" * (MAX_RECORD // 2)
        header = struct.pack(">I", len(fragment))  # not the last fragment
        hostile.sock.sendall(header + fragment + header + fragment + header + fragment[:16])
        assert_closed_by_server(hostile)
    finally:
        hostile.close()
    c = server.client()
    try:
        assert_null_works(c)
    finally:
        c.close()


def test_record_at_the_limit_is_accepted(server: RunningServer) -> None:
    c = server.client()
    try:
        # A NULL call padded with ignored trailing bytes up to exactly max_record.
        message = c.call_bytes(NFS_PROGRAM, 3, 0)
        c.send_record(message + b"\0" * (MAX_RECORD - len(message)))
        reply = parse_reply(c.recv_record())
        assert reply.xid == c.xid
        assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, SUCCESS)
    finally:
        c.close()


def test_client_disconnecting_mid_record_leaves_server_serving(server: RunningServer) -> None:
    bystander = server.client()
    try:
        for cut in (2, 4, 30):  # inside the header, after it, inside the body
            quitter = server.client()
            message = frame_bytes(quitter.call_bytes(NFS_PROGRAM, 3, 0, b"\0" * 64))
            quitter.sock.sendall(message[:cut])
            quitter.close()
            assert_null_works(bystander)
        quitter = server.client()
        quitter.sock.sendall(struct.pack(">I", 0x80000000 | 1000) + b"\0" * 10)
        quitter.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        quitter.close()  # RST instead of FIN
        assert_null_works(bystander)
    finally:
        bystander.close()


def test_record_too_short_for_an_xid_is_dropped(client: RawClient) -> None:
    client.send_record(b"\x01\x02")
    client.send_record(b"")
    assert_null_works(client)


def test_garbage_call_header_is_garbage_args(client: RawClient) -> None:
    # A CALL with RPC version 2 whose header stops after the program number.
    client.send_record(struct.pack(">IIII", 0x4242, 0, 2, NFS_PROGRAM))
    reply = parse_reply(client.recv_record())
    assert reply.xid == 0x4242
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, GARBAGE_ARGS)
    # A message type that is neither CALL nor REPLY is ignored.
    client.send_record(struct.pack(">II", 0x4343, 7) + b"\xff" * 20)
    assert_null_works(client)


def test_garbage_bytes_on_the_stream(server: RunningServer) -> None:
    bystander = server.client()
    try:
        for junk in (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\x7f\xfe" + bytes(range(256)) * 4,
            b"\xff" * 1024,
        ):
            c = server.client()
            try:
                c.sock.sendall(junk)
                # Each of these starts with a fragment header over the limit.
                assert_closed_by_server(c)
            finally:
                c.close()
            assert_null_works(bystander)
    finally:
        bystander.close()


def test_framed_random_records_never_break_the_connection(client: RawClient) -> None:
    rng = random.Random(1234)
    garbage_xids: set[int] = set()
    answered: set[int] = set()
    for i in range(200):
        body = rng.randbytes(rng.randrange(0, 120))
        if i % 2:  # make it look like a CALL more often, to get past the first checks
            body = struct.pack(">III", 0x5000 + i, 0, 2) + body
        if len(body) >= 4:
            garbage_xids.add(struct.unpack_from(">I", body)[0])
        client.send_record(body)
        client.send_record(client.call_bytes(NFS_PROGRAM, 3, 0))
        # Replies owed to garbage (if any) carry its xid, in any order; the NULL's follows.
        for _ in range(10):
            reply = parse_reply(client.recv_record())
            if reply.xid == client.xid:
                assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, SUCCESS)
                break
            assert reply.xid in garbage_xids and reply.xid not in answered
            answered.add(reply.xid)
        else:
            pytest.fail("no reply to the NULL call after a garbage record")


def test_backend_exception_is_system_err_and_server_keeps_serving(
    client: RawClient, server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fh = root_fh(client, server)
    backend = server.app.exports[0].backend

    def explode(*args: object, **kw: object) -> None:
        raise RuntimeError("backend bug")

    monkeypatch.setattr(backend, "fsstat", explode)
    p = Packer()
    p.pack_opaque(fh)
    reply = client.call(NFS_PROGRAM, 3, 18, p.get_buffer())
    assert reply.xid == client.xid
    assert (reply.reply_stat, reply.stat) == (MSG_ACCEPTED, SYSTEM_ERR)
    assert reply.body.remaining() == 0
    assert_null_works(client)
    assert nfs_getattr(client, fh)[0] == Nfsstat3.OK
    monkeypatch.undo()
    reply = client.call(NFS_PROGRAM, 3, 18, p.get_buffer())
    u = reply.ok()
    assert u.unpack_uint() == Nfsstat3.OK


def test_no_descriptor_leak_over_200_connections(server: RunningServer) -> None:
    def settle(target: int) -> int:
        deadline = time.monotonic() + 10
        n = open_fd_count()
        while n > target and time.monotonic() < deadline:
            time.sleep(0.05)
            n = open_fd_count()
        return n

    warm = server.client()  # let lazily created descriptors (thread pool, caches) exist
    assert_null_works(warm)
    with_warm = open_fd_count()  # its two ends: ours and the server's, in this process
    warm.close()
    baseline = settle(with_warm - 2)  # until the server has closed its end too
    assert baseline <= with_warm - 2, "the server kept the closed connection's end"
    for i in range(200):
        c = RawClient(server.port, timeout=5)
        try:
            if i % 4 == 0:
                assert_null_works(c)
            elif i % 4 == 1:
                c.sock.sendall(b"\x80\x00")  # half a header, then hang up
        finally:
            c.close()
    after = settle(baseline)
    assert after <= baseline, f"{after - baseline} descriptors leaked over 200 connections"
    last = server.client()
    try:
        assert_null_works(last)
    finally:
        last.close()


def test_unpacker_is_exhausted_by_reply_parsing() -> None:
    """Sanity check of the test client itself: parse_reply leaves exactly the body."""
    p = Packer()
    for v in (7, 1, 0, 0, 0, 0, 99):
        p.pack_uint(v)
    reply = parse_reply(p.get_buffer())
    assert (reply.xid, reply.stat) == (7, 0)
    assert isinstance(reply.body, Unpacker) and reply.body.unpack_uint() == 99


def test_calls_sent_before_a_half_close_are_answered(client: RawClient) -> None:
    blob = b"".join(frame_bytes(client.call_bytes(NFS_PROGRAM, 3, 0)) for _ in range(3))
    client.sock.sendall(blob)
    client.sock.shutdown(socket.SHUT_WR)
    xids = {parse_reply(client.recv_record()).xid for _ in range(3)}
    assert xids == {client.xid - 2, client.xid - 1, client.xid}


# -- limits -------------------------------------------------------------------------------


def test_idle_connections_are_closed(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    with serve_in_thread(local_config(export, tmp_path / "state"), Limits(idle_timeout=1.0)) as srv:
        idle, busy = srv.client(), srv.client()
        try:
            assert_null_works(idle)
            start = time.monotonic()
            # Keep one connection busy for longer than the idle timeout.
            while time.monotonic() - start < 2.5:
                assert_null_works(busy)
                time.sleep(0.1)
            assert_closed_by_server(idle, timeout=0.1)
            assert_null_works(busy)
        finally:
            idle.close()
            busy.close()


def test_max_connections(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    with serve_in_thread(
        local_config(export, tmp_path / "state"), Limits(max_connections=2)
    ) as srv:
        first, second = srv.client(), srv.client()
        try:
            assert_null_works(first)
            assert_null_works(second)
            third = srv.client()  # accepted by the kernel, then dropped by the server
            try:
                assert_closed_by_server(third)
            finally:
                third.close()
            assert_null_works(first)
            first.close()
            deadline = time.monotonic() + 5
            while True:  # the slot frees once the server has seen the close
                again = srv.client()
                try:
                    assert_null_works(again)
                    break
                except (ConnectionError, OSError):
                    assert time.monotonic() < deadline, "slot never freed"
                    time.sleep(0.05)
                finally:
                    again.close()
        finally:
            first.close()
            second.close()


def test_backpressure_with_one_call_in_flight(tmp_path: Path) -> None:
    export = tmp_path / "export"
    export.mkdir()
    with serve_in_thread(local_config(export, tmp_path / "state"), Limits(max_in_flight=1)) as srv:
        c = srv.client()
        try:
            blob = b"".join(frame_bytes(c.call_bytes(NFS_PROGRAM, 3, 0)) for _ in range(50))
            c.sock.sendall(blob)
            xids = [parse_reply(c.recv_record()).xid for _ in range(50)]
            # One at a time means strictly in order.
            assert xids == list(range(c.xid - 49, c.xid + 1))
            # Reading resumes once the backlog is answered: a later call is served too.
            c.sock.settimeout(5)
            assert c.call(NFS_PROGRAM, 3, 0).stat == 0
        finally:
            c.close()


def test_oversized_credential_is_auth_badcred(client: RawClient) -> None:
    reply = client.call(NFS_PROGRAM, 3, 0, cred=OpaqueAuth(1, b"\0" * 404))
    assert (reply.reply_stat, reply.stat) == (1, 1)  # MSG_DENIED, AUTH_ERROR
    assert reply.body.unpack_uint() == 1  # AUTH_BADCRED
    assert client.call(NFS_PROGRAM, 3, 0).stat == 0


def test_server_stops_reading_from_a_client_that_never_reads_replies(
    server: RunningServer,
) -> None:
    """A client that pipelines 3000 one-MiB READs but never reads the replies gets
    backpressure: the server holds a bounded amount of reply data (not 3 GB) and keeps
    serving another client meanwhile."""
    assert server.root is not None
    (server.root / "big").write_bytes(os.urandom(1 << 20))
    hog = server.client()
    other = server.client()
    try:
        root = hog.mount(str(server.root))
        fh = _lookup(hog, root, b"big")
        p = Packer()
        p.pack_opaque(fh)
        p.pack_uhyper(0)
        p.pack_uint(1 << 20)
        call = frame_bytes(hog.call_bytes(NFS_PROGRAM, 3, 6, p.get_buffer()))
        before = _rss_bytes()
        hog.sock.setblocking(False)
        for _ in range(3000):  # bounded; the kernel buffers what the server does not read
            try:
                hog.sock.send(call)
            except BlockingIOError:
                break
        _wait_until_not_read(hog.sock)  # backpressure: all the server holds, it holds now
        assert other.call(NFS_PROGRAM, 3, 0).stat == 0
        grown = _rss_bytes() - before
        assert grown < 400 << 20, f"server buffered {grown >> 20} MiB for a non-reading client"
    finally:
        hog.close()
        other.close()


def _wait_until_not_read(sock: socket.socket, looks: int = 5, timeout: float = 10.0) -> None:
    """Until the (in-process) server no longer reads from ``sock`` nor grows: bytes are
    queued to send, their number (``SIOCOUTQ``) has not moved and this process's RSS not
    by a MiB, over ``looks`` looks 50 ms apart."""
    deadline = time.monotonic() + timeout
    last, same = (-1, -1), 0
    while same < looks:
        assert time.monotonic() < deadline, f"the server kept reading or growing: {last}"
        queued = struct.unpack("i", fcntl.ioctl(sock, termios.TIOCOUTQ, b"\0" * 4))[0]
        now = (queued, _rss_bytes())
        still = now[0] == last[0] > 0 and abs(now[1] - last[1]) < 1 << 20
        same = same + 1 if still else 0
        last = now
        time.sleep(0.05)


def _lookup(c: RawClient, dir_fh: bytes, name: bytes) -> bytes:
    p = Packer()
    p.pack_opaque(dir_fh)
    p.pack_opaque(name)
    u = c.call(NFS_PROGRAM, 3, 3, p.get_buffer()).ok()
    assert u.unpack_uint() == 0
    return bytes(u.unpack_opaque(64))


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")

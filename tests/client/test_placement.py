"""READ payloads received straight into the caller's buffer (``client.placement``):
the prefix parser at every split, the placing record reader fed in every way, and the
xid bookkeeping of ``RpcClient`` (duplicates, cancels, reconnects). Sans-IO: no sockets."""

from __future__ import annotations

import os
import struct

import pytest

from ferry.client.placement import (
    MAX_PREFIX,
    MIN_PLACED,
    NEED_MORE,
    Placements,
    PlacingReader,
    read_prefix,
)
from ferry.client.rpc import RpcClient
from ferry.errors import RecordError
from ferry.rpc.message import AcceptStat, OpaqueAuth, pack_accepted
from ferry.rpc.record import frame_bytes
from ferry.xdr import Packer

FATTR = bytes(range(84))
READ = 6


def read_reply(
    xid: int,
    data: bytes,
    *,
    attr: bool = True,
    eof: bool = False,
    verf: bytes = b"",
    count: int | None = None,
    status: int = 0,
) -> bytes:
    """A READ reply message (no record mark): READ3resok, or READ3resfail for ``status``."""
    p = Packer()
    pack_accepted(p, xid, AcceptStat.SUCCESS, OpaqueAuth(1 if verf else 0, verf))
    p.pack_uint(status)
    p.pack_bool(attr)
    if attr:
        p.pack_fopaque(len(FATTR), FATTR)
    if status == 0:
        p.pack_uint(len(data) if count is None else count)
        p.pack_bool(eof)
        p.pack_opaque(data)
    return p.get_buffer()


def other_reply(xid: int, size: int = 8) -> bytes:
    """A successful reply to something else (a GETATTR, say): opaque results."""
    p = Packer()
    pack_accepted(p, xid, AcceptStat.SUCCESS)
    p.pack_fopaque(size, bytes(size))
    return p.get_buffer()


# -- read_prefix ----------------------------------------------------------------------------


@pytest.mark.parametrize("attr", [True, False])
@pytest.mark.parametrize("verf", [b"", b"12345678", b"x" * 400])
@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 2000])
def test_prefix_at_every_split(attr: bool, verf: bytes, size: int) -> None:
    msg = read_reply(9, os.urandom(size), attr=attr, verf=verf)
    prefix = len(msg) - ((size + 3) & ~3)
    assert prefix <= MAX_PREFIX
    for cut in range(len(msg) + 1):
        got = read_prefix(memoryview(msg)[:cut], len(msg))
        assert got == (NEED_MORE if cut < prefix else (prefix, size)), cut


def test_a_whole_placeable_record_always_tells() -> None:
    assert MIN_PLACED > MAX_PREFIX
    big_verf = read_reply(1, b"", verf=b"v" * 400)  # the longest prefix, no data
    assert read_prefix(big_verf, MIN_PLACED) is None  # (record size mismatch)


@pytest.mark.parametrize(
    "msg",
    [
        read_reply(1, b"", status=70),  # NFS3ERR_STALE: resfail, no data
        read_reply(1, b"", attr=False, status=5),
        other_reply(1, 200),  # not a READ: an odd "attributes_follow"
    ],
)
def test_prefix_of_other_replies_is_none(msg: bytes) -> None:
    results = {read_prefix(memoryview(msg)[:cut], len(msg)) for cut in range(len(msg) + 1)}
    assert None in results and not any(isinstance(r, tuple) for r in results)


def test_prefix_rejects_what_the_ordinary_path_must_judge() -> None:
    good = read_reply(1, b"abcd")
    assert read_prefix(good, len(good)) == (len(good) - 4, 4)
    assert read_prefix(good, len(good) + 4) is None  # trailing bytes
    assert read_prefix(good, len(good) - 4) is None  # record shorter than the data
    short = read_reply(1, b"abcd", count=3)  # count and data length disagree
    assert read_prefix(short, len(short)) is None
    bad_eof = bytearray(good)
    struct.pack_into(">I", bad_eof, len(good) - 12, 2)
    assert read_prefix(bad_eof, len(good)) is None
    for offset, value in [(4, 0), (8, 1), (24, 1)]:  # a call; MSG_DENIED; GARBAGE_ARGS
        msg = bytearray(good)
        struct.pack_into(">I", msg, offset, value)
        assert read_prefix(msg, len(msg)) is None
    huge_verf = bytearray(good)
    struct.pack_into(">I", huge_verf, 16, 404)
    assert read_prefix(huge_verf, 10_000) is None


# -- PlacingReader --------------------------------------------------------------------------


def feed(reader: PlacingReader, data: bytes, sizes: list[int] | int) -> list[bytes]:
    """Feed ``data`` through get_buffer/buffer_updated in pieces of at most ``sizes``
    (cycled), as a socket would; returns the records."""
    view, out, i = memoryview(data), [], 0
    pieces = sizes if isinstance(sizes, list) else [sizes]
    while view:
        buf = reader.get_buffer()
        n = min(len(buf), len(view), pieces[i % len(pieces)])
        i += 1
        buf[:n] = view[:n]
        view = view[n:]
        reader.buffer_updated(n)
        while (rec := reader.next_record()) is not None:
            out.append(bytes(rec))
    return out


class Dest:
    """A destination inside a guarded buffer: writes outside it are caught."""

    def __init__(self, size: int) -> None:
        self.buf = bytearray(b"\xee" * 64 + b"\x00" * size + b"\xee" * 64)
        self.view = memoryview(self.buf)[64 : 64 + size]

    def data(self) -> bytes:
        return bytes(self.view)

    def intact(self) -> bool:
        return self.buf[:64] == self.buf[-64:] == b"\xee" * 64


def prefix_of(msg: bytes, size: int) -> bytes:
    return msg[: len(msg) - ((size + 3) & ~3)]


def scenario() -> tuple[bytes, Placements, dict[int, Dest], dict[int, bytes], list[bytes]]:
    """A stream of replies: placed READs (odd sizes, with and without attributes, out of
    xid order), and ones that must take the ordinary path; returns the stream, the
    registrations, the destinations, the data each should get, and the records expected."""
    placements = Placements()
    dests = {xid: Dest(3000) for xid in (1, 2, 3, 4, 5, 6, 7)}
    for xid, dest in dests.items():
        placements.register(xid, dest.view)
    payload = {xid: os.urandom(3000 - xid) for xid in dests}
    msgs: list[tuple[bytes, bytes]] = []  # (framed, expected record)
    for xid in (3, 1):  # placed
        msg = read_reply(xid, payload[xid], attr=xid == 3, eof=True)
        msgs.append((frame_bytes(msg), prefix_of(msg, len(payload[xid]))))
    msg = other_reply(99, 2000)  # not registered
    msgs.append((frame_bytes(msg), msg))
    msg = read_reply(2, b"", status=70)  # an error: no payload
    msgs.append((frame_bytes(msg), msg))
    msg = read_reply(4, payload[4], verf=b"verifier")  # two fragments: copied
    msgs.append((frame_bytes(msg, max_fragment=1000), msg))
    big = os.urandom(4000)  # more than asked: never placed
    msg = read_reply(5, big)
    msgs.append((frame_bytes(msg), msg))
    msg = read_reply(6, b"tiny")  # too small to be worth placing
    msgs.append((frame_bytes(msg), msg))
    msg = read_reply(7, payload[7])  # placed, last
    msgs.append((frame_bytes(msg), prefix_of(msg, len(payload[7]))))
    stream = b"".join(m for m, _ in msgs)
    return stream, placements, dests, payload, [r for _, r in msgs]


@pytest.mark.parametrize("sizes", [1 << 20, 1, 2, 3, 7, 100, 4096, [5, 1, 3000, 17]])
def test_reader_places_what_qualifies(sizes: list[int] | int) -> None:
    stream, placements, dests, payload, expected = scenario()
    reader = PlacingReader(placements, 1 << 20)
    assert feed(reader, stream, sizes) == expected
    assert not reader.incomplete
    assert placements.landed == {3: len(payload[3]), 1: len(payload[1]), 7: len(payload[7])}
    for xid in (3, 1, 7):
        assert dests[xid].data()[: len(payload[xid])] == payload[xid]
    for xid in (2, 4, 5, 6):  # the ordinary path: never written, still registered
        assert dests[xid].data() == bytes(3000) and xid in placements.dests
    assert all(d.intact() for d in dests.values())


def test_reader_places_at_every_split_of_two_records() -> None:
    """Two back-to-back placed replies, the stream cut in two at every byte."""
    data = [os.urandom(1500), os.urandom(1203)]
    stream = b"".join(frame_bytes(read_reply(x, d)) for x, d in enumerate(data))
    for cut in range(len(stream) + 1):
        placements, dests = Placements(), [Dest(1500), Dest(1500)]
        for xid, dest in enumerate(dests):
            placements.register(xid, dest.view)
        reader = PlacingReader(placements, 1 << 20)
        records = feed(reader, stream[:cut], 1 << 20) + feed(reader, stream[cut:], 1 << 20)
        assert len(records) == 2 and not reader.incomplete, cut
        assert placements.landed == {0: 1500, 1: 1203}, cut
        assert [d.data()[: len(x)] for d, x in zip(dests, data, strict=True)] == data
        assert all(d.intact() for d in dests)


def test_abandoned_landing_is_discarded() -> None:
    placements, dest = Placements(), Dest(5000)
    placements.register(1, dest.view)
    data = os.urandom(5000)
    msg = read_reply(1, data)
    stream = frame_bytes(msg) + frame_bytes(other_reply(2, 16))
    reader = PlacingReader(placements, 1 << 20)
    assert feed(reader, stream[:2000], 1 << 20) == []
    placements.pop(1)
    assert reader.abandon(1) is not None
    before = dest.data()
    # the prefix still comes out (the client counts it as a reply to no call)
    assert feed(reader, stream[2000:], 1000) == [prefix_of(msg, 5000), other_reply(2, 16)]
    assert dest.data() == before and dest.intact()  # nothing written after the give-up
    assert placements.landed == {}
    assert not reader.incomplete


def test_oversize_record_still_fails() -> None:
    placements = Placements()
    placements.register(1, Dest(100_000).view)
    reader = PlacingReader(placements, 10_000)
    with pytest.raises(RecordError):
        feed(reader, frame_bytes(read_reply(1, bytes(50_000))), 1 << 20)


# -- RpcClient: matching, duplicates, cancels, reconnects -----------------------------------


def rpc_with_read(size: int) -> tuple[RpcClient, int, Dest]:
    rpc = RpcClient(first_xid=100)
    dest = Dest(size)
    xid, _ = rpc.start_call(100003, 3, READ, [], dest=dest.view)
    return rpc, xid, dest


def test_duplicate_reply_lands_once() -> None:
    rpc, xid, dest = rpc_with_read(2000)
    first, second = os.urandom(2000), os.urandom(2000)
    rpc.receive_data(frame_bytes(read_reply(xid, first)) + frame_bytes(read_reply(xid, second)))
    reply = rpc.next_reply()
    assert reply is not None and reply.placed == 2000
    assert rpc.next_reply() is None and rpc.ignored == 1
    assert dest.data() == first and dest.intact()


def test_cancelled_call_never_written() -> None:
    rpc, xid, dest = rpc_with_read(2000)
    msg = frame_bytes(read_reply(xid, os.urandom(2000)))
    rpc.receive_data(msg[:1000])
    rpc.cancel(xid)
    rpc.receive_data(msg[1000:])
    assert rpc.next_reply() is None and rpc.ignored == 1
    assert dest.data()[1000:] == bytes(1000) and dest.intact()
    assert not rpc.placements.dests and not rpc.placements.landed


def test_reply_cut_by_a_reconnect_lands_again() -> None:
    rpc, xid, dest = rpc_with_read(2000)
    data = os.urandom(2000)
    msg = frame_bytes(read_reply(xid, data))
    rpc.receive_data(msg[:1500])
    assert rpc.reset_stream()  # the call is resent on the new connection
    rpc.receive_data(msg)
    reply = rpc.next_reply()
    assert reply is not None and reply.placed == 2000 and dest.data() == data


def test_unplaced_reply_keeps_its_data() -> None:
    rpc, xid, dest = rpc_with_read(100)
    rpc.receive_data(frame_bytes(read_reply(xid, bytes(200))))  # more than asked
    reply = rpc.next_reply()
    assert reply is not None and reply.placed is None and reply.body is not None
    assert reply.body.remaining() > 200 and dest.data() == bytes(100)
    assert not rpc.placements.dests  # forgotten once matched


def test_datagram_client_never_places() -> None:
    rpc = RpcClient(first_xid=5, stream=False)
    dest = Dest(2000)
    xid, _ = rpc.start_call(100003, 3, READ, [], dest=dest.view)
    reply = rpc.receive_datagram(read_reply(xid, os.urandom(2000)))
    assert reply is not None and reply.placed is None and dest.data() == bytes(2000)

"""The sans-IO RPC client state machine with synthetic replies, and AsyncRpcClient timeouts."""

from __future__ import annotations

import asyncio
import struct

import pytest

from ferry.client.aio import AsyncRpcClient, RpcOptions
from ferry.client.rpc import RpcClient
from ferry.errors import (
    AuthError,
    GarbageArgs,
    ProcUnavail,
    ProgMismatch,
    ProgUnavail,
    RpcMismatch,
    RpcTimeout,
    SystemErr,
)
from ferry.rpc.message import (
    AcceptStat,
    AuthStat,
    pack_accepted,
    pack_auth_error,
    pack_prog_mismatch,
    pack_rpc_mismatch,
)
from ferry.rpc.record import RecordReader, frame_bytes
from ferry.xdr import Packer, Unpacker


def accepted(xid: int, stat: AcceptStat = AcceptStat.SUCCESS, body: bytes = b"") -> bytes:
    p = Packer()
    pack_accepted(p, xid, stat)
    return frame_bytes(p.get_buffer() + body)


def test_call_encoding_and_out_of_order_replies() -> None:
    c = RpcClient(first_xid=100)
    x1, b1 = c.start_call(100003, 3, 1, [b"\0\0\0\1"])
    x2, _ = c.start_call(100003, 3, 6, [b"\0\0\0\2"])
    assert (x1, x2) == (100, 101)
    rec = b"".join(bytes(b) for b in b1)
    assert struct.unpack(">IIIIIII", rec[:28]) == (
        0x80000000 | len(rec) - 4,
        100,
        0,
        2,
        100003,
        3,
        1,
    )
    assert c.retransmit(x1) == b1  # same bytes, same xid
    c.receive_data(accepted(x2, body=b"\0\0\0\7") + accepted(x1, body=b"\0\0\0\5"))
    r2, r1 = c.next_reply(), c.next_reply()
    assert r2 is not None and r1 is not None
    assert (r2.xid, r2.result().unpack_uint()) == (x2, 7)
    assert (r1.xid, r1.result().unpack_uint()) == (x1, 5)
    assert c.next_reply() is None and c.outstanding == []


def test_unknown_and_duplicate_xids_are_ignored() -> None:
    c = RpcClient(first_xid=1)
    xid, _ = c.start_call(1, 1, 0, [])
    c.receive_data(accepted(999) + accepted(xid) + accepted(xid))  # stray, reply, late duplicate
    assert c.next_reply() is not None
    assert c.next_reply() is None
    assert c.ignored == 2


def _denied(build) -> bytes:  # type: ignore[no-untyped-def]
    p = Packer()
    build(p)
    return frame_bytes(p.get_buffer())


@pytest.mark.parametrize(
    ("reply", "kind", "code"),
    [
        (lambda x: accepted(x, AcceptStat.PROG_UNAVAIL), ProgUnavail, ("accept", 1)),
        (lambda x: _denied(lambda p: pack_prog_mismatch(p, x, 2, 3)), ProgMismatch, ("accept", 2)),
        (lambda x: accepted(x, AcceptStat.PROC_UNAVAIL), ProcUnavail, ("accept", 3)),
        (lambda x: accepted(x, AcceptStat.GARBAGE_ARGS), GarbageArgs, ("accept", 4)),
        (lambda x: accepted(x, AcceptStat.SYSTEM_ERR), SystemErr, ("accept", 5)),
        (lambda x: _denied(lambda p: pack_rpc_mismatch(p, x)), RpcMismatch, ("reject", 0)),
        (
            lambda x: _denied(lambda p: pack_auth_error(p, x, AuthStat.TOOWEAK)),
            AuthError,
            ("reject", 1),
        ),
    ],
)
def test_reject_statuses_become_exceptions(reply, kind, code) -> None:  # type: ignore[no-untyped-def]
    c = RpcClient()
    xid, _ = c.start_call(100003, 3, 0, [], label="NFS3 NULL")
    c.receive_data(reply(xid))
    r = c.next_reply()
    assert r is not None and isinstance(r.error, kind)
    assert "NFS3 NULL" in str(r.error)
    stat = r.error.accept_stat if code[0] == "accept" else r.error.reject_stat
    assert stat == code[1]
    with pytest.raises(kind):
        r.result()


def test_reconnect_resends_outstanding() -> None:
    c = RpcClient(first_xid=7)
    xid, bufs = c.start_call(1, 1, 1, [])
    c.receive_data(b"\x80\0\0\x10partial")  # half a record on the old stream
    assert [bytes(b) for b in c.reset_stream()] == [bytes(b) for b in bufs]
    c.receive_data(accepted(xid))
    assert c.next_reply() is not None


def test_timeout_after_max_tries_names_the_procedure() -> None:
    """A server that never answers: the call is sent max_tries times, same xid, then fails."""
    seen: list[int] = []

    async def body() -> None:
        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            rr = RecordReader()
            for _ in range(100):
                data = await r.read(65536)
                if not data:
                    break
                rr.receive_data(data)
                while (rec := rr.next_record()) is not None:
                    seen.append(Unpacker(rec).unpack_uint())
            w.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = AsyncRpcClient("127.0.0.1", port, RpcOptions(timeout=0.05, max_tries=3))
        await client.connect()
        try:
            with pytest.raises(RpcTimeout, match=r"NFS3 GETATTR .*no reply after 3 tries"):
                await client.call(100003, 3, 1, [], label="NFS3 GETATTR")
            assert isinstance(RpcTimeout("x"), TimeoutError)
            assert (client.stats.timeouts, client.stats.retransmissions) == (3, 2)
        finally:
            await client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(asyncio.wait_for(body(), 30))
    assert len(seen) == 3 and len(set(seen)) == 1

"""RPC over UDP and the two retransmission policies (selective vs go-back-N), against a
scripted UDP server; the recorder hook and the retransmission counters."""

from __future__ import annotations

import asyncio
import struct

import pytest

from ferry.client.aio import AsyncRpcClient, RpcOptions
from ferry.client.rpc import RpcClient
from ferry.errors import RpcError
from ferry.rpc.message import AcceptStat, pack_accepted
from ferry.xdr import Packer

ANSWER, ONLY_RESENT = 1, 2  # procedure numbers: how the scripted server treats a call


def reply(xid: int, value: int = 0) -> bytes:
    p = Packer()
    pack_accepted(p, xid, AcceptStat.SUCCESS)
    p.pack_uint(value)
    return p.get_buffer()


class Scripted(asyncio.DatagramProtocol):
    """Answers a call with proc ANSWER at once (``copies`` times), one with ONLY_RESENT
    only when it comes again (its first datagram is "lost"); records every datagram."""

    def __init__(self, copies: int = 1) -> None:
        self.copies = copies
        self.seen: list[int] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        xid, mtype, _, _, _, proc = struct.unpack_from(">IIIIII", data)  # no record mark
        assert mtype == 0
        again = xid in self.seen
        self.seen.append(xid)
        if proc == ANSWER or again:
            assert self.transport is not None
            for _ in range(self.copies):
                self.transport.sendto(reply(xid, proc), addr)


async def scripted(copies: int = 1) -> tuple[asyncio.DatagramTransport, Scripted]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: Scripted(copies), local_addr=("127.0.0.1", 0)
    )
    return transport, server


Events = list[tuple[str, int, int]]


async def run_calls(policy: str, procs: list[int]) -> tuple[AsyncRpcClient, Scripted, Events]:
    """Send one call per proc, 20 ms apart, over UDP; timeout 150 ms."""
    transport, server = await scripted()
    port = transport.get_extra_info("sockname")[1]
    options = RpcOptions(window=8, timeout=0.15, transport="udp", retransmit=policy)
    client = AsyncRpcClient("127.0.0.1", port, options)
    events: Events = []
    client.recorder = lambda kind, xid, n: events.append((kind, xid, n))
    await client.connect()
    try:
        tasks = []
        for proc in procs:
            tasks.append(asyncio.ensure_future(client.call(7, 1, proc, [], label=f"P{proc}")))
            await asyncio.sleep(0.02)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert [u.unpack_uint() for u in results] == procs  # each got its own reply
    finally:
        await client.close()
        transport.close()
    return client, server, events


def xids_in_order(events: Events) -> list[int]:
    return [x for kind, x, _ in events if kind == "call"]


def test_selective_resends_each_lost_call_on_its_own_timeout() -> None:
    client, server, events = asyncio.run(run_calls("selective", [ONLY_RESENT, ANSWER] * 2))
    lost = xids_in_order(events)[0::2]
    st = client.stats
    assert (st.timeouts, st.retransmissions, st.ignored_replies) == (2, 2, 0)
    resends = [x for kind, x, _ in events if kind == "resend"]
    assert resends == lost  # one each, in their own order
    # each resend follows its own call's timeout, not another's
    kinds = [(kind, x) for kind, x, _ in events if kind in ("timeout", "resend")]
    assert kinds == [("timeout", lost[0]), ("resend", lost[0]), ("timeout", lost[1]),
                     ("resend", lost[1])]  # fmt: skip
    assert sorted(x for x in server.seen if server.seen.count(x) > 1) == sorted(lost * 2)
    assert st.retransmitted_bytes == sum(n for kind, _, n in events if kind == "resend") > 0


def test_go_back_n_resends_every_later_unanswered_call_at_the_first_timeout() -> None:
    procs = [ONLY_RESENT, ANSWER, ONLY_RESENT, ONLY_RESENT]
    client, server, events = asyncio.run(run_calls("go-back-n", procs))
    xids = xids_in_order(events)
    first, answered, later = xids[0], xids[1], xids[2:]
    st = client.stats
    assert st.timeouts == 1  # the later calls were resent before their own timers fired
    assert st.retransmissions == 3  # the lost call and the two unanswered after it
    kinds = [(kind, x) for kind, x, _ in events if kind in ("timeout", "resend")]
    assert kinds == [("timeout", first), ("resend", first)] + [("resend", x) for x in later]
    assert server.seen.count(answered) == 1  # an answered call is never resent
    assert st.retransmitted_bytes == sum(n for kind, _, n in events if kind == "resend")


def test_udp_calls_are_bare_datagrams_and_duplicate_replies_are_counted() -> None:
    async def body() -> AsyncRpcClient:
        transport, server = await scripted(copies=2)
        port = transport.get_extra_info("sockname")[1]
        client = AsyncRpcClient("127.0.0.1", port, RpcOptions(transport="udp", timeout=1))
        await client.connect()
        try:
            for _ in range(3):
                assert (await client.call(7, 1, ANSWER, [b"\0\0\0\5"])).unpack_uint() == ANSWER
            await asyncio.sleep(0.05)  # let the second copies arrive
            with pytest.raises(RpcError, match="too large for one UDP datagram"):
                await client.call(7, 1, ANSWER, [bytes(70_000)])
        finally:
            await client.close()
            transport.close()
        return client

    st = asyncio.run(body()).stats
    assert (st.calls, st.replies, st.ignored_replies, st.retransmissions) == (3, 3, 3, 0)
    assert st.bytes_sent == 3 * (40 + 4)  # call header (no record mark) + argument
    assert st.bytes_received == 2 * 3 * len(reply(0))


def test_datagram_rpc_client_is_unframed() -> None:
    c = RpcClient(first_xid=9, stream=False)
    xid, bufs = c.start_call(100003, 3, 0, [])
    assert struct.unpack(">II", b"".join(bytes(b) for b in bufs)[:8]) == (9, 0)
    assert c.receive_datagram(reply(1234)) is None and c.ignored == 1
    r = c.receive_datagram(reply(xid, 5))
    assert r is not None and r.result().unpack_uint() == 5


def test_options_are_checked_and_the_recorder_is_off_by_default() -> None:
    with pytest.raises(ValueError, match="transport"):
        RpcOptions(transport="sctp")
    with pytest.raises(ValueError, match="retransmit"):
        RpcOptions(retransmit="everything")
    assert AsyncRpcClient("127.0.0.1", 1).recorder is None
    assert RpcOptions().retransmit == "selective" and RpcOptions().transport == "tcp"

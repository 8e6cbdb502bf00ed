"""The client side of ONC RPC v2 over a stream (RFC 5531), sans-IO: no sockets, no clocks.

``RpcClient`` owns the xid table and the record reader of one logical connection:

* ``start_call`` encodes and frames a call and remembers it under a fresh xid, keeping its
  framed buffers so that ``retransmit`` resends the same bytes with the same xid and
  ``outstanding_buffers`` resends every unanswered call after a reconnect.
* ``receive_data`` (or ``get_buffer``/``buffer_updated``) feeds reply bytes; ``next_reply``
  returns each reply for a known xid, in whatever order they came, as a ``Reply`` whose
  ``error`` is the RPC-level failure (an ``RpcError`` subclass) or whose ``body`` is the
  cursor positioned at the results. Replies for unknown xids (late duplicates after a
  retransmission, or calls given up on) are counted and dropped.
* A call may name a destination for the data of a READ reply (``start_call(dest=...)``):
  on a stream the reply's data is then received straight into it (``client.placement``)
  and ``Reply.placed`` says so; ``cancel`` guarantees it is never written afterwards.
* Over a datagram transport (``stream=False``) calls carry no record mark and each
  received datagram is one whole reply (``receive_datagram``), as RFC 5531 section 11
  leaves it.

Timers, retransmission policy and reconnection belong to the IO adapter (``client.aio``).
"""

from __future__ import annotations

import dataclasses
import itertools
import os

from ferry.errors import (
    AuthError,
    GarbageArgs,
    GarbageReply,
    ProcUnavail,
    ProgMismatch,
    ProgUnavail,
    RpcError,
    RpcMismatch,
    SystemErr,
    XdrError,
)
from ferry.rpc.message import (
    NULL_AUTH,
    RPC_VERSION,
    AcceptStat,
    AuthStat,
    CallHeader,
    MsgType,
    OpaqueAuth,
    RejectStat,
    ReplyStat,
)
from ferry.rpc.record import DEFAULT_MAX_RECORD, Buffer, frame
from ferry.xdr import Packer, Unpacker

from .placement import Placements, PlacingReader


@dataclasses.dataclass(slots=True)
class Call:
    """An outstanding call: what it was, and its framed bytes for retransmission."""

    xid: int
    prog: int
    vers: int
    proc: int
    buffers: list[Buffer]
    label: str = ""

    @property
    def size(self) -> int:
        return sum(len(b) for b in self.buffers)


@dataclasses.dataclass(slots=True)
class Reply:
    """A reply matched to its call: ``error`` set, or ``body`` at the procedure results."""

    call: Call
    body: Unpacker | None = None
    error: RpcError | None = None
    placed: int | None = None  # READ data bytes already in the call's destination

    @property
    def xid(self) -> int:
        return self.call.xid

    def result(self) -> Unpacker:
        """The results cursor, or raise the RPC error."""
        if self.error is not None:
            raise self.error
        assert self.body is not None
        return self.body


_ACCEPT_ERRORS: dict[int, type[RpcError]] = {  # RFC 5531 section 9, accept_stat
    AcceptStat.PROG_UNAVAIL: ProgUnavail,
    AcceptStat.PROC_UNAVAIL: ProcUnavail,
    AcceptStat.GARBAGE_ARGS: GarbageArgs,
    AcceptStat.SYSTEM_ERR: SystemErr,
}


class RpcClient:
    """Xid allocation, call table and reply matching for one RPC client connection."""

    def __init__(
        self,
        max_record: int = DEFAULT_MAX_RECORD,
        first_xid: int | None = None,
        stream: bool = True,
    ) -> None:
        self.stream = stream
        start = int.from_bytes(os.urandom(4), "big") if first_xid is None else first_xid
        self._xids = (x & 0xFFFFFFFF for x in itertools.count(start))
        self._calls: dict[int, Call] = {}
        self._max_record = max_record
        self.placements = Placements()
        self.reader = PlacingReader(self.placements, max_record)
        self.ignored = 0  # replies for unknown xids

    # -- calls ---------------------------------------------------------------------------

    def start_call(
        self,
        prog: int,
        vers: int,
        proc: int,
        args: list[Buffer],
        cred: OpaqueAuth = NULL_AUTH,
        label: str = "",
        dest: memoryview | None = None,
    ) -> tuple[int, list[Buffer]]:
        """Encode a call (RFC 5531 section 9, call_body); returns its xid and its bytes
        (framed with record marks on a stream). ``dest``: where the data of a successful
        READ reply may be received directly (streams only; see ``client.placement``)."""
        xid = next(self._xids)
        while xid in self._calls:  # after 2**32 calls with some still outstanding
            xid = next(self._xids)
        p = Packer()
        CallHeader(xid, RPC_VERSION, prog, vers, proc, cred, NULL_AUTH).pack(p)
        message = [*p.buffers(), *args]
        buffers = frame(message) if self.stream else message
        self._calls[xid] = Call(xid, prog, vers, proc, buffers, label or f"{prog}/{vers}/{proc}")
        if dest is not None and self.stream:
            self.placements.register(xid, dest)
        return xid, buffers

    def retransmit(self, xid: int) -> list[Buffer]:
        """The same framed bytes again, same xid (KeyError if the call is not outstanding)."""
        return self._calls[xid].buffers

    def cancel(self, xid: int) -> Call | None:
        """Forget a call (given up on); a late reply to it will be ignored, and its
        destination is never written again."""
        self.placements.pop(xid)
        self.reader.abandon(xid)
        return self._calls.pop(xid, None)

    def call(self, xid: int) -> Call | None:
        return self._calls.get(xid)

    @property
    def outstanding(self) -> list[Call]:
        """Unanswered calls, oldest first."""
        return list(self._calls.values())

    def reset_stream(self) -> list[Buffer]:
        """A new connection: fresh record reader; returns every outstanding call to resend."""
        for xid in list(self._calls):  # a payload cut off mid-landing: it lands again
            dest = self.reader.abandon(xid)
            if dest is not None:
                self.placements.register(xid, dest)
        self.reader = PlacingReader(self.placements, self._max_record)
        return [b for c in self._calls.values() for b in c.buffers]

    # -- replies -------------------------------------------------------------------------

    def receive_data(self, data: Buffer) -> None:
        """Bytes from the stream; ``b""`` means EOF."""
        self.reader.receive_data(data)

    def get_buffer(self) -> memoryview:
        return self.reader.get_buffer()

    def buffer_updated(self, n: int) -> None:
        self.reader.buffer_updated(n)

    def receive_datagram(self, data: bytes) -> Reply | None:
        """One datagram holding one reply: the reply to a known call, or ``None``."""
        return self._match(data)

    def next_reply(self) -> Reply | None:
        """The next reply to a known call, or ``None`` when more data is needed.

        Raises ``RecordError`` if the stream is broken (the connection must be dropped).
        """
        while (record := self.reader.next_record()) is not None:
            reply = self._match(record)
            if reply is not None:
                return reply
        return None

    def _match(self, record: bytes | bytearray) -> Reply | None:
        u = Unpacker(record)
        try:
            xid, mtype = u.unpack_uint(), u.unpack_enum()
        except XdrError:
            self.ignored += 1
            return None
        call = self._calls.get(xid)
        if call is None or mtype != MsgType.REPLY:  # late duplicate, or not a reply at all
            self.ignored += 1
            return None
        del self._calls[xid]
        placed = self.placements.pop(xid)
        try:
            error = decode_reply_header(u, call.label)
        except XdrError as exc:
            error = GarbageReply(f"{call.label}: undecodable reply: {exc}")
        return Reply(call, None if error else u, error, placed)


def decode_reply_header(u: Unpacker, label: str) -> RpcError | None:
    """Read ``reply_body`` after xid and msg_type (RFC 5531 section 9).

    Returns ``None`` with the cursor at the results for MSG_ACCEPTED / SUCCESS, else the
    error describing the failure.
    """
    stat = u.unpack_enum()
    if stat == ReplyStat.MSG_ACCEPTED:
        OpaqueAuth.unpack(u)  # verifier (AUTH_NONE or AUTH_SYS: nothing to check)
        return _accepted(u, label)
    if stat == ReplyStat.MSG_DENIED:
        return _denied(u, label)
    raise XdrError(f"bad reply_stat {stat}")


def _accepted(u: Unpacker, label: str) -> RpcError | None:
    stat = u.unpack_enum()
    if stat == AcceptStat.SUCCESS:
        return None
    if stat == AcceptStat.PROG_MISMATCH:
        low, high = u.unpack_uint(), u.unpack_uint()
        return ProgMismatch(
            f"{label}: program version mismatch (server has {low}-{high})", low, high
        )
    kind = _ACCEPT_ERRORS.get(stat)
    if kind is None:
        raise XdrError(f"bad accept_stat {stat}")
    return kind(f"{label}: {AcceptStat(stat).name.lower()}")


def _denied(u: Unpacker, label: str) -> RpcError:
    stat = u.unpack_enum()
    if stat == RejectStat.RPC_MISMATCH:
        low, high = u.unpack_uint(), u.unpack_uint()
        return RpcMismatch(f"{label}: rpc version mismatch (server has {low}-{high})", low, high)
    if stat == RejectStat.AUTH_ERROR:
        why = u.unpack_enum()
        name = AuthStat(why).name.lower() if why in AuthStat._value2member_map_ else str(why)
        return AuthError(f"{label}: authentication error ({name})", why)
    raise XdrError(f"bad reject_stat {stat}")

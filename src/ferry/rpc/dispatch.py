"""Turn one RPC call record into one reply: the program table and every RPC-level error.

This is the single place where RPC_MISMATCH, AUTH_ERROR, PROG_UNAVAIL, PROG_MISMATCH,
PROC_UNAVAIL, GARBAGE_ARGS and SYSTEM_ERR are decided (RFC 5531 section 9). Programs
register handlers that decode their arguments from an ``Unpacker`` and encode their results
into a ``Packer``; an ``XdrError`` while decoding becomes GARBAGE_ARGS, any other exception
SYSTEM_ERR (logged), so no exception ever escapes to the IO adapter.

The duplicate request cache (``ferry.rpc.drc``) sits here too, in the one place every
transport goes through: a retransmitted non-idempotent call is answered with the reply of
the original, or dropped while the original still runs, and never run twice.

Metrics are an optional ``CallObserver`` told when each call starts and ends (with the
record and the reply: it reads names and statuses from the bytes) and of each DRC
lookup; without one, ``handle`` does no extra work at all.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from ferry.errors import DropCall, XdrError
from ferry.rpc import drc as drcmod
from ferry.rpc.auth import BadCredentials, Credentials, UnsupportedFlavor, decode_credentials
from ferry.rpc.message import (
    MAX_AUTH_BYTES,
    RPC_VERSION,
    AcceptStat,
    AuthStat,
    CallHeader,
    NotACall,
    pack_accepted,
    pack_auth_error,
    pack_prog_mismatch,
    pack_rpc_mismatch,
    unpack_call,
)
from ferry.segment import FileSegment, Part, materialize, opaque_tail
from ferry.xdr import Packer, Unpacker

log = logging.getLogger("ferry.rpc")

Address = tuple[str, int] | tuple[str, int, int, int] | None
Buffer = bytes | bytearray | memoryview


@dataclasses.dataclass(frozen=True, slots=True)
class Transport:
    """What a procedure may need to know about the transport a call came over."""

    name: str
    max_io: int | None
    """Largest READ/WRITE/READDIR payload to offer or send (None: the server's own)."""
    by_port: bool
    """The DRC tells clients apart by (host, port), not the host alone."""
    sendfile: bool = False
    """The adapter sends ``FileSegment`` reply parts itself (``Dispatcher.handle_parts``),
    so READ data may stay in its file until then."""


TCP = Transport("tcp", None, False)
TCP_SENDFILE = Transport("tcp", None, False, sendfile=True)
UDP = Transport("udp", 32 * 1024, True)
"""Linux's nfsd offers 32 KiB over UDP (RPCSVC_MAXPAYLOAD_UDP): a READ reply must fit one
datagram (at most 65,507 bytes of IPv4 UDP payload), unfragmented would be better still."""


@dataclasses.dataclass(slots=True)
class CallContext:
    """What a procedure handler knows about its call besides the arguments."""

    header: CallHeader
    cred: Credentials
    client: Address = None
    transport: Transport = TCP

    @property
    def xid(self) -> int:
        return self.header.xid


@dataclasses.dataclass(frozen=True, slots=True)
class CallSource:
    """Where a call came from, as the DRC needs it: the bytes, the sender, the transport."""

    record: Buffer
    client: Address
    transport: Transport


Handler = Callable[[Unpacker, CallContext, Packer], FileSegment | None]
"""Decode arguments from the Unpacker, do the work, encode results into the Packer; return
the data that follows the results when it was left in its file (a READ's), else None."""


class CallObserver(Protocol):
    """Told about every call (``ferry.server.metrics.Metrics`` is one); must be thread-safe."""

    def call_started(self) -> float:
        """Returns a token (a start time) handed back to ``call_done``."""
        ...

    def call_done(self, token: float, record: Buffer, reply: Sequence[Part] | None) -> None:
        """The call ``record`` was answered with ``reply`` (None: no reply owed)."""
        ...

    def drc_lookup(self, outcome: str) -> None:
        """A ``drc.Lookup`` value: whether a non-idempotent call was new, a hit, running."""
        ...


@dataclasses.dataclass(slots=True)
class Program:
    """An RPC program: its number, name, and per version a table procedure -> handler."""

    number: int
    name: str
    versions: Mapping[int, Mapping[int, Handler]]


class Dispatcher:
    """Routes call records to programs; the sans-IO heart of every server model."""

    def __init__(
        self,
        programs: Iterable[Program],
        drc: drcmod.ReplyCache | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.programs = {p.number: p for p in programs}
        self.drc = drc
        self.observer = observer

    def handle(
        self, record: Buffer, client: Address = None, transport: Transport = TCP
    ) -> list[Buffer] | None:
        """Reply buffers for a call record, or ``None`` when no reply is owed (not a call,
        too short to carry an xid, or a retransmission of a call still running)."""
        reply = self.handle_parts(record, client, transport)
        return None if reply is None else materialize(reply)

    def handle_parts(
        self, record: Buffer, client: Address = None, transport: Transport = TCP
    ) -> Sequence[Part] | None:
        """Like ``handle``, but with ``transport.sendfile`` the reply may end with data left
        in a file; the caller sends it (or ``materialize``s it) and closes it."""
        observer = self.observer
        if observer is None:
            return self._handle(record, client, transport)
        token = observer.call_started()
        reply = None
        try:
            reply = self._handle(record, client, transport)
        finally:
            observer.call_done(token, record, reply)
        return reply

    def _handle(
        self, record: Buffer, client: Address, transport: Transport
    ) -> Sequence[Part] | None:
        u = Unpacker(record)
        try:
            xid = u.unpack_uint()
        except XdrError:
            log.info("dropping %d-byte record from %s: no xid", len(record), client)
            return None
        p = Packer()
        try:
            header = unpack_call(u, xid)
        except NotACall:
            return None
        except XdrError as exc:
            log.info("garbage call header from %s xid=%#x: %s", client, xid, exc)
            pack_accepted(p, xid, AcceptStat.GARBAGE_ARGS)
            return p.buffers()
        return self._dispatch(header, u, p, CallSource(record, client, transport))

    def _dispatch(
        self, header: CallHeader, u: Unpacker, p: Packer, src: CallSource
    ) -> Sequence[Part] | None:
        xid = header.xid
        if header.rpcvers != RPC_VERSION:
            pack_rpc_mismatch(p, xid)
            return p.buffers()
        try:
            if len(header.verf.body) > MAX_AUTH_BYTES:
                raise BadCredentials("verifier too long")
            cred = decode_credentials(header.cred)
        except BadCredentials:
            pack_auth_error(p, xid, AuthStat.BADCRED)
            return p.buffers()
        except UnsupportedFlavor:
            pack_auth_error(p, xid, AuthStat.TOOWEAK)
            return p.buffers()
        handler = self._find(header, p)
        if handler is None:
            return p.buffers()
        ctx = CallContext(header, cred, src.client, src.transport)
        if self.drc is None or not self.drc.wants(header):
            return self._run(handler, u, ctx, p)[0]
        return self._run_once(self.drc, handler, u, ctx, p, src.record)

    def _run_once(
        self,
        drc: drcmod.ReplyCache,
        handler: Handler,
        u: Unpacker,
        ctx: CallContext,
        p: Packer,
        record: Buffer,
    ) -> Sequence[Part] | None:
        """Run a non-idempotent call unless the DRC has seen it: replay or drop then."""
        who = drcmod.client_key(ctx.client, ctx.transport.by_port)
        key = drcmod.call_key(ctx.transport.name, who, ctx.header, record)
        state, cached = drc.begin(key)
        if self.observer is not None:
            self.observer.drc_lookup(state.value)
        if state is drcmod.Lookup.HIT:
            log.debug("drc: replaying xid=%#x to %s", ctx.xid, ctx.client)
            return [cached] if cached is not None else None
        if state is drcmod.Lookup.IN_PROGRESS:
            log.debug("drc: dropping xid=%#x from %s: still running", ctx.xid, ctx.client)
            return None
        try:
            reply, ok = self._run(handler, u, ctx, p)
        except BaseException:  # _run does not raise, but an entry must not stay in progress
            drc.abandon(key)
            raise
        if reply is None or not ok:
            drc.abandon(key)  # dropped, or a server fault: let the retransmission try again
            return reply
        kept = b"".join(materialize(reply))  # the cache keeps bytes, never a file segment
        drc.finish(key, kept)
        return [kept]

    def _run(
        self, handler: Handler, u: Unpacker, ctx: CallContext, p: Packer
    ) -> tuple[Sequence[Part] | None, bool]:
        """The reply to a call (None: dropped) and whether it may be replayed (False for
        SYSTEM_ERR)."""
        header, xid = ctx.header, ctx.xid
        results = Packer()
        try:
            tail = handler(u, ctx, results)
        except DropCall as exc:
            log.info("dropping xid=%#x from %s: %s", xid, ctx.client, exc)
            return None, True
        except XdrError as exc:
            log.info(
                "garbage arguments prog=%d proc=%d from %s: %s",
                header.prog,
                header.proc,
                ctx.client,
                exc,
            )
            pack_accepted(p, xid, AcceptStat.GARBAGE_ARGS)
            return p.buffers(), True
        except Exception:
            log.exception("procedure prog=%d proc=%d failed", header.prog, header.proc)
            pack_accepted(p, xid, AcceptStat.SYSTEM_ERR)
            return p.buffers(), False
        pack_accepted(p, xid, AcceptStat.SUCCESS)
        reply: list[Part] = [*p.buffers(), *results.buffers()]
        if tail is not None:
            reply += opaque_tail(tail)
        return reply, True

    def _find(self, header: CallHeader, p: Packer) -> Handler | None:
        program = self.programs.get(header.prog)
        if program is None:
            pack_accepted(p, header.xid, AcceptStat.PROG_UNAVAIL)
            return None
        procs = program.versions.get(header.vers)
        if procs is None:
            versions = sorted(program.versions)
            pack_prog_mismatch(p, header.xid, versions[0], versions[-1])
            return None
        handler = procs.get(header.proc)
        if handler is None:
            pack_accepted(p, header.xid, AcceptStat.PROC_UNAVAIL)
        return handler

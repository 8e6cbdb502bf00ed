"""Turn one RPC call record into one reply: the program table and every RPC-level error.

This is the single place where RPC_MISMATCH, AUTH_ERROR, PROG_UNAVAIL, PROG_MISMATCH,
PROC_UNAVAIL, GARBAGE_ARGS and SYSTEM_ERR are decided (RFC 5531 section 9). Programs
register handlers that decode their arguments from an ``Unpacker`` and encode their results
into a ``Packer``; an ``XdrError`` while decoding becomes GARBAGE_ARGS, any other exception
SYSTEM_ERR (logged), so no exception ever escapes to the IO adapter. Credentials are
decoded once per distinct credential (``CredentialCache``): clients repeat theirs.

The duplicate request cache (``ferry.rpc.drc``) sits here too, in the one place every
transport goes through: a retransmitted non-idempotent call is answered with the reply of
the original, or dropped while the original still runs, and never run twice.

Metrics are an optional ``CallObserver`` told when each call starts and ends, with the
call as decoded here (an ``Outcome``: program, procedure, accept or reject status, the
program's own status as its handler set it on the ``CallContext``), and of each DRC
lookup; without one, ``handle`` does no extra work at all. The DRC keeps a reply's
``Outcome`` beside it, so a replayed reply is counted as its original was.
"""

from __future__ import annotations

import dataclasses
import logging
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from ferry.errors import DropCall, WouldBlock, XdrError
from ferry.rpc import drc as drcmod
from ferry.rpc.auth import BadCredentials, CredentialCache, Credentials, UnsupportedFlavor
from ferry.rpc.message import (
    MAX_AUTH_BYTES,
    NULL_AUTH,
    RPC_VERSION,
    AcceptStat,
    AuthStat,
    CallHeader,
    NotACall,
    RejectStat,
    accepted_head,
    pack_accepted,
    pack_auth_error,
    pack_prog_mismatch,
    pack_rpc_mismatch,
    parse_call,
    unpack_call,
)
from ferry.segment import FileSegment, Part, materialize, opaque_tail
from ferry.xdr import Packer, Unpacker

log = logging.getLogger("ferry.rpc")

Address = tuple[str, int] | tuple[str, int, int, int] | None
Key = tuple[int, int, int]
"""(program, version, procedure)."""
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
    nowait: bool = False
    """The call runs on an event loop: a handler that would wait on the disk raises
    ``WouldBlock`` (``Dispatcher.try_handle``) rather than wait."""


TCP = Transport("tcp", None, False)
TCP_SENDFILE = Transport("tcp", None, False, sendfile=True)
TCP_NOWAIT = Transport("tcp", None, False, sendfile=True, nowait=True)
UDP = Transport("udp", 32 * 1024, True)
"""Linux's nfsd offers 32 KiB over UDP (RPCSVC_MAXPAYLOAD_UDP): a READ reply must fit one
datagram (at most 65,507 bytes of IPv4 UDP payload), unfragmented would be better still."""


@dataclasses.dataclass(slots=True)
class CallContext:
    """What a procedure handler knows about its call besides the arguments, and what it
    tells the dispatcher besides the results (``status``, ``data``: for the observer)."""

    header: CallHeader
    cred: Credentials
    client: Address = None
    transport: Transport = TCP
    status: int = -1
    """The program's own status of the results (nfsstat3, mountstat3); -1: none."""
    data: int = 0
    """File bytes the call moved (a READ's data returned, a WRITE's written)."""

    @property
    def xid(self) -> int:
        return self.header.xid


Handler = Callable[[Unpacker, CallContext, Packer], FileSegment | None]
"""Decode arguments from the Unpacker, do the work, encode results into the Packer; return
the data that follows the results when it was left in its file (a READ's), else None."""


DROPPED, DENIED = -2, 10
"""``Outcome.code`` besides accept_stat (0-5): no reply sent; DENIED + reject_stat."""


@dataclasses.dataclass(slots=True)
class Outcome:
    """A call as the dispatcher answered it, decoded: what a ``CallObserver`` is told."""

    prog: int = -1
    """-1: no call header decoded."""
    proc: int = -1
    code: int = DROPPED
    """The accept_stat, ``DENIED`` + reject_stat, or ``DROPPED`` (no reply)."""
    status: int = -1
    """The program's own status (``CallContext.status``); -1 when its results have none."""
    data: int = 0
    """``CallContext.data``: file bytes a READ returned or a WRITE wrote."""


_KEPT = struct.Struct(">iiI")  # code, status, data: ahead of a reply in the DRC
_SUCCESS = AcceptStat.SUCCESS  # hoisted: an enum member read through its class is slow


class CallObserver(Protocol):
    """Told about every call (``ferry.server.metrics.Metrics`` is one); must be thread-safe."""

    def call_started(self) -> float:
        """Returns a token (a start time) handed back to ``call_done``."""
        ...

    def call_done(
        self, token: float, call: Outcome, received: int, reply: Sequence[Part] | None
    ) -> None:
        """A call record of ``received`` bytes was answered with ``reply`` (None: no reply
        owed); ``call`` says what it was and how it ended."""
        ...

    def call_deferred(self, token: float) -> None:
        """The call tried on the event loop would have waited (``WouldBlock``): it runs
        again on a call thread, where it is started and done anew."""
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
        self.credentials = CredentialCache()
        self._routes = self._route_table(drc)

    def _route_table(self, drc: drcmod.ReplyCache | None) -> dict[Key, tuple[Handler, bool]]:
        """(program, version, procedure) -> its handler and whether the DRC keeps its
        replies (``drc.wants``): one lookup per call decides both. Programs are fixed
        at construction; a call without a row is refused by ``_unrouted``."""
        routes: dict[Key, tuple[Handler, bool]] = {}
        for program in self.programs.values():
            for vers, procs in program.versions.items():
                for proc, handler in procs.items():
                    call = CallHeader(
                        0, RPC_VERSION, program.number, vers, proc, NULL_AUTH, NULL_AUTH
                    )
                    routes[program.number, vers, proc] = (
                        handler,
                        drc is not None and drc.wants(call),
                    )
        return routes

    def handle(
        self, record: Buffer, client: Address = None, transport: Transport = TCP
    ) -> list[Buffer] | None:
        """Reply buffers for a call record, or ``None`` when no reply is owed (not a call,
        too short to carry an xid, or a retransmission of a call still running)."""
        if self.observer is None:
            reply = self._handle(record, client, transport, None)
        else:
            reply = self.handle_parts(record, client, transport)
        if reply is None:
            return None
        # Only a sendfile transport's replies may hold file segments (``Transport``).
        return materialize(reply) if transport.sendfile else reply  # type: ignore[return-value]

    def handle_parts(
        self, record: Buffer, client: Address = None, transport: Transport = TCP
    ) -> Sequence[Part] | None:
        """Like ``handle``, but with ``transport.sendfile`` the reply may end with data left
        in a file; the caller sends it (or ``materialize``s it) and closes it."""
        observer = self.observer
        if observer is None:
            return self._handle(record, client, transport, None)
        token = observer.call_started()
        call = Outcome()
        reply = None
        try:
            reply = self._handle(record, client, transport, call)
        except WouldBlock:
            observer.call_deferred(token)
            raise
        except BaseException:
            call.code = DROPPED
            observer.call_done(token, call, len(record), None)
            raise
        if reply is None:
            call.code = DROPPED
        observer.call_done(token, call, len(record), reply)
        return reply

    def try_handle(self, record: Buffer, client: Address = None) -> Sequence[Part] | None:
        """``handle_parts`` on an event loop (``TCP_NOWAIT``); ``WouldBlock`` when the call
        would wait on the disk: run it then with ``handle_parts`` on a call thread (a
        procedure says so before it changes anything, and the DRC forgets the call)."""
        return self.handle_parts(record, client, TCP_NOWAIT)

    def _handle(
        self, record: Buffer, client: Address, transport: Transport, call: Outcome | None
    ) -> Sequence[Part] | None:
        parsed = parse_call(record)
        if parsed is not None:
            header, pos = parsed
            u = Unpacker(record, pos)
        else:  # anything unusual: decoded field by field, refused with the right reply
            u = Unpacker(record)
            try:
                xid = u.unpack_uint()
            except XdrError:
                log.info("dropping %d-byte record from %s: no xid", len(record), client)
                return None
            try:
                header = unpack_call(u, xid)
            except NotACall:
                return None
            except XdrError as exc:
                log.info("garbage call header from %s xid=%#x: %s", client, xid, exc)
                return _refused(_accepted(xid, AcceptStat.GARBAGE_ARGS), call)
        if call is not None:
            call.prog, call.proc = header.prog, header.proc
        return self._dispatch(header, u, record, client, transport, call)

    def _dispatch(
        self,
        header: CallHeader,
        u: Unpacker,
        record: Buffer,
        client: Address,
        transport: Transport,
        call: Outcome | None,
    ) -> Sequence[Part] | None:
        xid = header.xid
        if header.rpcvers != RPC_VERSION:
            p = Packer()
            pack_rpc_mismatch(p, xid)
            return _refused((p, DENIED + RejectStat.RPC_MISMATCH), call)
        if isinstance(cred := _credentials(header, self.credentials), AuthStat):
            p = Packer()
            pack_auth_error(p, xid, cred)
            return _refused((p, DENIED + RejectStat.AUTH_ERROR), call)
        route = self._routes.get((header.prog, header.vers, header.proc))
        if route is None:
            return _refused(self._unrouted(header), call)
        handler, kept = route
        ctx = CallContext(header, cred, client, transport)
        if not kept:
            reply, code = self._run(handler, u, ctx)
            if call is not None:
                call.code, call.status, call.data = code, ctx.status, ctx.data
            return reply
        assert self.drc is not None  # kept: the DRC wants it
        return self._run_once(self.drc, handler, u, ctx, record, call)

    def _run_once(
        self,
        drc: drcmod.ReplyCache,
        handler: Handler,
        u: Unpacker,
        ctx: CallContext,
        record: Buffer,
        call: Outcome | None,
    ) -> Sequence[Part] | None:
        """Run a non-idempotent call unless the DRC has seen it: replay or drop then. The
        cache keeps the reply's outcome ahead of it, so a replay is observed as the first."""
        who = drcmod.client_key(ctx.client, ctx.transport.by_port)
        key = drcmod.call_key(ctx.transport.name, who, ctx.header, record)
        state, cached = drc.begin(key)
        if self.observer is not None:
            self.observer.drc_lookup(state.value)
        if state is drcmod.Lookup.HIT:
            log.debug("drc: replaying xid=%#x to %s", ctx.xid, ctx.client)
            if cached is None or len(cached) < _KEPT.size:
                return None
            if call is not None:
                call.code, call.status, call.data = _KEPT.unpack_from(cached)
            return [memoryview(cached)[_KEPT.size :]]
        if state is drcmod.Lookup.IN_PROGRESS:
            log.debug("drc: dropping xid=%#x from %s: still running", ctx.xid, ctx.client)
            return None
        try:
            reply, code = self._run(handler, u, ctx)
        except BaseException:  # _run does not raise, but an entry must not stay in progress
            drc.abandon(key)
            raise
        if call is not None:
            call.code, call.status, call.data = code, ctx.status, ctx.data
        if reply is None or code == AcceptStat.SYSTEM_ERR:
            drc.abandon(key)  # dropped, or a server fault: let the retransmission try again
            return reply
        kept = b"".join([_KEPT.pack(code, ctx.status, ctx.data), *materialize(reply)])
        drc.finish(key, kept)  # the cache keeps bytes, never a file segment
        return [memoryview(kept)[_KEPT.size :]]

    def _run(
        self, handler: Handler, u: Unpacker, ctx: CallContext
    ) -> tuple[Sequence[Part] | None, int]:
        """The reply to a call (None: dropped) and its accept_stat (``DROPPED``: none).
        The results are packed behind the SUCCESS reply header, one buffer in all unless
        the results hold large opaques (or a file segment follows)."""
        header = ctx.header
        xid = header.xid
        results = Packer(accepted_head(xid))
        try:
            tail = handler(u, ctx, results)
        except DropCall as exc:
            log.info("dropping xid=%#x from %s: %s", xid, ctx.client, exc)
            return None, DROPPED
        except WouldBlock:
            raise
        except XdrError as exc:
            log.info(
                "garbage arguments prog=%d proc=%d from %s: %s",
                header.prog,
                header.proc,
                ctx.client,
                exc,
            )
            return _accepted(xid, AcceptStat.GARBAGE_ARGS)[0].buffers(), AcceptStat.GARBAGE_ARGS
        except Exception:
            log.exception("procedure prog=%d proc=%d failed", header.prog, header.proc)
            return _accepted(xid, AcceptStat.SYSTEM_ERR)[0].buffers(), AcceptStat.SYSTEM_ERR
        if tail is None:
            return results.buffers(), _SUCCESS
        return [*results.buffers(), *opaque_tail(tail)], _SUCCESS

    def _unrouted(self, header: CallHeader) -> tuple[Packer, int]:
        """The reply that says why a call has no handler, and its code."""
        program = self.programs.get(header.prog)
        if program is None:
            return _accepted(header.xid, AcceptStat.PROG_UNAVAIL)
        if header.vers not in program.versions:
            versions = sorted(program.versions)
            p = Packer()
            pack_prog_mismatch(p, header.xid, versions[0], versions[-1])
            return p, AcceptStat.PROG_MISMATCH
        return _accepted(header.xid, AcceptStat.PROC_UNAVAIL)


def _accepted(xid: int, stat: AcceptStat) -> tuple[Packer, int]:
    """An accepted reply without results (an error), and its code for the observer."""
    p = Packer()
    pack_accepted(p, xid, stat)
    return p, stat


def _refused(reply: tuple[Packer, int], call: Outcome | None) -> list[Buffer]:
    """A reply that runs no procedure, told to the observer."""
    p, code = reply
    if call is not None:
        call.code = code
    return p.buffers()


def _credentials(header: CallHeader, cache: CredentialCache) -> Credentials | AuthStat:
    """The call's credentials, or why they are refused (RFC 5531 section 9)."""
    try:
        if len(header.verf.body) > MAX_AUTH_BYTES:
            raise BadCredentials("verifier too long")
        return cache.decode(header.cred)
    except BadCredentials:
        return AuthStat.BADCRED
    except UnsupportedFlavor:
        return AuthStat.TOOWEAK

"""Turn one RPC call record into one reply: the program table and every RPC-level error.

This is the single place where RPC_MISMATCH, AUTH_ERROR, PROG_UNAVAIL, PROG_MISMATCH,
PROC_UNAVAIL, GARBAGE_ARGS and SYSTEM_ERR are decided (RFC 5531 section 9). Programs
register handlers that decode their arguments from an ``Unpacker`` and encode their results
into a ``Packer``; an ``XdrError`` while decoding becomes GARBAGE_ARGS, any other exception
SYSTEM_ERR (logged), so no exception ever escapes to the IO adapter.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping

from ferry.errors import XdrError
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
from ferry.xdr import Packer, Unpacker

log = logging.getLogger("ferry.rpc")

Address = tuple[str, int] | tuple[str, int, int, int] | None
Buffer = bytes | bytearray | memoryview


@dataclasses.dataclass(slots=True)
class CallContext:
    """What a procedure handler knows about its call besides the arguments."""

    header: CallHeader
    cred: Credentials
    client: Address = None

    @property
    def xid(self) -> int:
        return self.header.xid


Handler = Callable[[Unpacker, CallContext, Packer], None]
"""Decode arguments from the Unpacker, do the work, encode results into the Packer."""


@dataclasses.dataclass(slots=True)
class Program:
    """An RPC program: its number, name, and per version a table procedure -> handler."""

    number: int
    name: str
    versions: Mapping[int, Mapping[int, Handler]]


class Dispatcher:
    """Routes call records to programs; the sans-IO heart of every server model."""

    def __init__(self, programs: Iterable[Program]) -> None:
        self.programs = {p.number: p for p in programs}

    def handle(self, record: Buffer, client: Address = None) -> list[Buffer] | None:
        """Reply buffers for a call record, or ``None`` when no reply is owed (not a call,
        or too short to carry an xid)."""
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
        return self._dispatch(header, u, client, p)

    def _dispatch(
        self, header: CallHeader, u: Unpacker, client: Address, p: Packer
    ) -> list[Buffer]:
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
        results = Packer()
        try:
            handler(u, CallContext(header, cred, client), results)
        except XdrError as exc:
            log.info(
                "garbage arguments prog=%d proc=%d from %s: %s",
                header.prog,
                header.proc,
                client,
                exc,
            )
            pack_accepted(p, xid, AcceptStat.GARBAGE_ARGS)
            return p.buffers()
        except Exception:
            log.exception("procedure prog=%d proc=%d failed", header.prog, header.proc)
            pack_accepted(p, xid, AcceptStat.SYSTEM_ERR)
            return p.buffers()
        pack_accepted(p, xid, AcceptStat.SUCCESS)
        return p.buffers() + results.buffers()

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

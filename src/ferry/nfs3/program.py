"""The NFS program (100003) version 3 for the RPC dispatcher: the procedure table's rows
bound to an ``Nfs3Service``.

Each handler decodes the arguments with the row's decoder, runs the service method, and
writes the status, then the ``resok`` arm or the row's ``resfail`` arm. The status, and
the bytes a READ or WRITE moved, are also left on the call's context (``CallContext``)
for the dispatcher's observer (metrics), which then reads nothing from the reply.
"""

from __future__ import annotations

import logging
from typing import Any

from ferry.errors import NfsError
from ferry.nfs3 import types as t
from ferry.nfs3.const import NFS_PROGRAM, NFS_V3, NfsProc, Nfsstat3
from ferry.nfs3.procedures import PROCEDURES, WCC, FailArm, Procedure
from ferry.nfs3.service import Nfs3Service
from ferry.rpc.dispatch import CallContext, Handler, Program
from ferry.segment import FileSegment
from ferry.xdr import Packer, Unpacker

log = logging.getLogger("ferry.nfs3")

_OK = Nfsstat3.OK
"""Hoisted: an enum member read through its class costs ten times a global (every call)."""


def _null(u: Unpacker, ctx: CallContext, p: Packer) -> None:
    """NULL: no arguments, no results (RFC 1813 section 3.3.0)."""


def _handler(service: Nfs3Service, proc: Procedure) -> Handler:
    method = getattr(service, proc.method)
    unpack, fail, name = proc.args, proc.fail, proc.number.name
    moves_data = proc.number in (NfsProc.READ, NfsProc.WRITE)  # results with a ``count``

    def handle(u: Unpacker, ctx: CallContext, p: Packer) -> FileSegment | None:
        args = unpack(u)
        try:
            res = method(args, ctx)
        except NfsError as exc:
            log.debug("%s -> %s (%s)", name, exc.status.name, exc)
            ctx.status = exc.status
            p.pack_enum(exc.status)
            _pack_fail(service, fail, args, ctx, p)
            return None
        ctx.status = _OK
        if moves_data:
            ctx.data = res.count
        p.pack_enum(_OK)
        tail: FileSegment | None = res.pack(p)  # a READ's data left in its file, or None
        return tail

    return handle


def _pack_fail(service: Nfs3Service, arm: FailArm, args: Any, ctx: CallContext, p: Packer) -> None:
    for kind, handle_of in arm:
        attr = service.post_attrs_for(handle_of(args), ctx)
        if kind == WCC:
            t.Wcc(None, attr).pack(p)
        else:
            t.pack_post_op_attr(p, attr)


def nfs_program(service: Nfs3Service) -> Program:
    """The NFS program (100003) version 3, for the RPC dispatcher."""
    table: dict[int, Handler] = {NfsProc.NULL: _null}
    table.update({proc.number: _handler(service, proc) for proc in PROCEDURES})
    return Program(NFS_PROGRAM, "nfs", {NFS_V3: table})

"""The NFSv3 program table (RFC 1813 section 3.3): decoder, service method, failure arm.

Every procedure result is ``status`` then ``resok`` or ``resfail``. The ``resfail`` arm
is derived from the arguments in one place: each row lists, in wire order, the handles
whose attributes it carries (post_op_attr) or whose weak cache consistency data it carries
(wcc_data with only the after-attributes, which RFC 1813 permits on failure).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from ferry.errors import NfsError
from ferry.nfs3 import types as t
from ferry.nfs3.const import NFS_PROGRAM, NFS_V3, NfsProc, Nfsstat3
from ferry.nfs3.service import Nfs3Service
from ferry.rpc.dispatch import CallContext, Handler, Program
from ferry.segment import FileSegment
from ferry.xdr import Packer, Unpacker

log = logging.getLogger("ferry.nfs3")

POST, WCC = "post", "wcc"
FailArm = tuple[tuple[str, Callable[[Any], bytes]], ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Procedure:
    number: NfsProc
    unpack: Callable[[Unpacker], Any]
    method: str
    fail: FailArm = ()


def _dir(attr: str) -> Callable[[Any], bytes]:
    return lambda args: getattr(args, attr).dir


def _fh(attr: str) -> Callable[[Any], bytes]:
    return lambda args: getattr(args, attr)


PROCEDURES: tuple[Procedure, ...] = (
    Procedure(NfsProc.GETATTR, t.FhArgs.unpack, "getattr"),
    Procedure(NfsProc.SETATTR, t.SetattrArgs.unpack, "setattr", ((WCC, _fh("object")),)),
    Procedure(NfsProc.LOOKUP, t.LookupArgs.unpack, "lookup", ((POST, _dir("what")),)),
    Procedure(NfsProc.ACCESS, t.AccessArgs.unpack, "access", ((POST, _fh("object")),)),
    Procedure(NfsProc.READLINK, t.FhArgs.unpack, "readlink", ((POST, _fh("object")),)),
    Procedure(NfsProc.READ, t.ReadArgs.unpack, "read", ((POST, _fh("file")),)),
    Procedure(NfsProc.WRITE, t.WriteArgs.unpack, "write", ((WCC, _fh("file")),)),
    Procedure(NfsProc.CREATE, t.CreateArgs.unpack, "create", ((WCC, _dir("where")),)),
    Procedure(NfsProc.MKDIR, t.MkdirArgs.unpack, "mkdir", ((WCC, _dir("where")),)),
    Procedure(NfsProc.SYMLINK, t.SymlinkArgs.unpack, "symlink", ((WCC, _dir("where")),)),
    Procedure(NfsProc.MKNOD, t.MknodArgs.unpack, "mknod", ((WCC, _dir("where")),)),
    Procedure(NfsProc.REMOVE, t.RemoveArgs.unpack, "remove", ((WCC, _dir("object")),)),
    Procedure(NfsProc.RMDIR, t.RemoveArgs.unpack, "rmdir", ((WCC, _dir("object")),)),
    Procedure(
        NfsProc.RENAME, t.RenameArgs.unpack, "rename", ((WCC, _dir("from_")), (WCC, _dir("to")))
    ),
    Procedure(NfsProc.LINK, t.LinkArgs.unpack, "link", ((POST, _fh("file")), (WCC, _dir("link")))),
    Procedure(NfsProc.READDIR, t.ReaddirArgs.unpack, "readdir", ((POST, _fh("dir")),)),
    Procedure(NfsProc.READDIRPLUS, t.ReaddirArgs.unpack_plus, "readdirplus", ((POST, _fh("dir")),)),
    Procedure(NfsProc.FSSTAT, t.FhArgs.unpack, "fsstat", ((POST, _fh("object")),)),
    Procedure(NfsProc.FSINFO, t.FhArgs.unpack, "fsinfo", ((POST, _fh("object")),)),
    Procedure(NfsProc.PATHCONF, t.FhArgs.unpack, "pathconf", ((POST, _fh("object")),)),
    Procedure(NfsProc.COMMIT, t.CommitArgs.unpack, "commit", ((WCC, _fh("file")),)),
)


def _null(u: Unpacker, ctx: CallContext, p: Packer) -> None:
    """NULL: no arguments, no results (RFC 1813 section 3.3.0)."""


def _handler(service: Nfs3Service, proc: Procedure) -> Handler:
    method = getattr(service, proc.method)

    def handle(u: Unpacker, ctx: CallContext, p: Packer) -> FileSegment | None:
        args = proc.unpack(u)
        try:
            res = method(args, ctx)
        except NfsError as exc:
            log.debug("%s -> %s (%s)", proc.number.name, exc.status.name, exc)
            p.pack_enum(exc.status)
            _pack_fail(service, proc.fail, args, ctx, p)
            return None
        p.pack_enum(Nfsstat3.OK)
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

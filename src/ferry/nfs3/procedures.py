"""The NFSv3 procedure table (RFC 1813 section 3.3): one row per procedure, every column once.

A row says how to decode the arguments (server side), how to decode the ``resok`` arm
(client side), which ``Nfs3Service`` method runs it, what its ``resfail`` arm carries and
whether it is idempotent. Everything else derives from the rows: the server's handlers
(``nfs3.program``), the failure arms both sides read and write, the procedures whose
replies the duplicate request cache keeps (``NON_IDEMPOTENT``).

Every procedure result is ``status`` then ``resok`` or ``resfail``. The ``resfail`` arm
is derived from the arguments in one place: each row lists, in wire order, the handles
whose attributes it carries (post_op_attr) or whose weak cache consistency data it carries
(wcc_data with only the after-attributes, which RFC 1813 permits on failure).

Pure data and decoding: no IO, no service, no RPC machinery.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any, TypeVar

from ferry.errors import NfsError, XdrError
from ferry.nfs3 import results as r
from ferry.nfs3 import types as t
from ferry.nfs3.const import NfsProc, Nfsstat3
from ferry.vocab import Attr
from ferry.xdr import Unpacker

T = TypeVar("T")

POST, WCC = "post", "wcc"
"""What a ``resfail`` arm carries for one handle: post_op_attr or wcc_data."""

FailArm = tuple[tuple[str, Callable[[Any], bytes]], ...]
"""(kind, the handle in the arguments it is about), in wire order."""


@dataclasses.dataclass(frozen=True, slots=True)
class Procedure:
    """One row of the table; the ``Nfs3Service`` method is the procedure's name."""

    number: NfsProc
    args: Callable[[Unpacker], Any]
    """Decodes the arguments (server side); the argument class also packs them."""
    result: Callable[[Unpacker], Any]
    """Decodes the ``resok`` arm (client side); the result class packs it."""
    fail: FailArm = ()
    idempotent: bool = True
    """False: a retransmission must not run it again (the DRC keeps its reply)."""

    @property
    def method(self) -> str:
        """The ``Nfs3Service`` method: ``method(args, ctx) -> result``, or NfsError."""
        return self.number.name.lower()

    @property
    def fail_kinds(self) -> tuple[str, ...]:
        return tuple(kind for kind, _ in self.fail)


def _post(*handles: str) -> FailArm:
    """post_op_attr of each handle (a dotted attribute of the arguments)."""
    return tuple((POST, operator.attrgetter(h)) for h in handles)


def _wcc(*handles: str) -> FailArm:
    """wcc_data of each handle."""
    return tuple((WCC, operator.attrgetter(h)) for h in handles)


_P, ONCE = Procedure, False
PROCEDURES: tuple[Procedure, ...] = (
    _P(NfsProc.GETATTR, t.FhArgs.unpack, r.unpack_attr_res),  # 3.3.1
    _P(NfsProc.SETATTR, t.SetattrArgs.unpack, r.unpack_wcc_res, _wcc("object"), ONCE),  # 3.3.2
    _P(NfsProc.LOOKUP, t.LookupArgs.unpack, r.unpack_lookup_res, _post("what.dir")),  # 3.3.3
    _P(NfsProc.ACCESS, t.AccessArgs.unpack, r.unpack_access_res, _post("object")),  # 3.3.4
    _P(NfsProc.READLINK, t.FhArgs.unpack, r.unpack_readlink_res, _post("object")),  # 3.3.5
    _P(NfsProc.READ, t.ReadArgs.unpack, r.unpack_read_res, _post("file")),  # 3.3.6
    _P(NfsProc.WRITE, t.WriteArgs.unpack, r.unpack_write_res, _wcc("file"), ONCE),  # 3.3.7
    _P(NfsProc.CREATE, t.CreateArgs.unpack, r.unpack_create_res, _wcc("where.dir"), ONCE),
    _P(NfsProc.MKDIR, t.MkdirArgs.unpack, r.unpack_create_res, _wcc("where.dir"), ONCE),
    _P(NfsProc.SYMLINK, t.SymlinkArgs.unpack, r.unpack_create_res, _wcc("where.dir"), ONCE),
    _P(NfsProc.MKNOD, t.MknodArgs.unpack, r.unpack_create_res, _wcc("where.dir"), ONCE),
    _P(NfsProc.REMOVE, t.RemoveArgs.unpack, r.unpack_wcc_res, _wcc("object.dir"), ONCE),
    _P(NfsProc.RMDIR, t.RemoveArgs.unpack, r.unpack_wcc_res, _wcc("object.dir"), ONCE),
    _P(NfsProc.RENAME, t.RenameArgs.unpack, r.unpack_rename_res, _wcc("from_.dir", "to.dir"), ONCE),
    _P(NfsProc.LINK, t.LinkArgs.unpack, r.unpack_link_res, _post("file") + _wcc("link.dir"), ONCE),
    _P(NfsProc.READDIR, t.ReaddirArgs.unpack, r.unpack_readdir_res, _post("dir")),  # 3.3.16
    _P(NfsProc.READDIRPLUS, t.ReaddirArgs.unpack_plus, r.unpack_readdirplus_res, _post("dir")),
    _P(NfsProc.FSSTAT, t.FhArgs.unpack, r.unpack_fsstat_res, _post("object")),  # 3.3.18
    _P(NfsProc.FSINFO, t.FhArgs.unpack, r.unpack_fsinfo_res, _post("object")),  # 3.3.19
    _P(NfsProc.PATHCONF, t.FhArgs.unpack, r.unpack_pathconf_res, _post("object")),  # 3.3.20
    _P(NfsProc.COMMIT, t.CommitArgs.unpack, r.unpack_commit_res, _wcc("file"), ONCE),  # 3.3.21
)
"""In procedure order (RFC 1813 section 3.3.N for procedure N); NULL (3.3.0: no arguments,
no results) has no row. ``ONCE``: not idempotent, as RFC 1813 section 4.4 and each
procedure's section explain: a second SETATTR (guarded, or of the size), WRITE, CREATE
(UNCHECKED truncates, GUARDED is EXIST), MKDIR, SYMLINK, MKNOD, LINK (EXIST), REMOVE, RMDIR,
RENAME (NOENT) or COMMIT would answer differently than the first."""

BY_NUMBER: dict[NfsProc, Procedure] = {p.number: p for p in PROCEDURES}
NON_IDEMPOTENT: frozenset[NfsProc] = frozenset(p.number for p in PROCEDURES if not p.idempotent)


# -- the failure arm, client side -----------------------------------------------------------


def unpack_resfail(proc: NfsProc, u: Unpacker) -> tuple[Attr | t.Wcc | None, ...]:
    """The ``resfail`` arm of ``proc``: its post_op_attr and wcc_data, in wire order."""
    return tuple(
        r.unpack_wcc(u) if kind == WCC else r.unpack_post_op_attr(u)
        for kind in BY_NUMBER[proc].fail_kinds
    )


class NfsFailure(NfsError):
    """``NfsError`` raised by a client, carrying the decoded ``resfail`` arm."""

    def __init__(
        self, status: Nfsstat3, proc: NfsProc, resfail: tuple[Attr | t.Wcc | None, ...]
    ) -> None:
        super().__init__(status, f"{proc.name}: {status.name.lower()}")
        self.detail = ""  # the status says it all; the procedure is no news to a path user
        self.proc = proc
        self.resfail = resfail


def unpack_result(proc: NfsProc, u: Unpacker, resok: Callable[[Unpacker], T]) -> T:
    """Status, then ``resok`` decoded by ``resok`` (the row's ``result``, or one that
    places READ data), or raise ``NfsFailure`` (an NfsError)."""
    status = r.unpack_status(u)
    if status == Nfsstat3.OK:
        return resok(u)
    try:
        resfail = unpack_resfail(proc, u)
    except XdrError:  # a server may omit the failure arm; the status is what matters
        resfail = ()
    raise NfsFailure(status, proc, resfail)

"""Which export a path names: the MOUNT calls a client makes before any NFS call.

The rule every face follows (``connect``, fsspec, the CLI, ``ferry mount``): the longest
prefix of the path that the server lets us MNT is the export, the rest a path inside it
(``url.export_candidates``). When no prefix is accepted, the server's EXPORT list says
why: no export holds the path (``NoSuchExport``, a FileNotFoundError naming the exports
there are; NFS-Ganesha and Linux's mountd answer MNT3ERR_ACCES here, Ferry
MNT3ERR_NOENT), or one does and refused us (its status: PermissionError for ACCES). A
client never falls back to some other export. ``export_list`` gives the EXPORT list with
each export's client groups, as ``showmount -e`` shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.errors import NfsError, NoSuchExport, RpcError, XdrError
from ferry.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, MountProc, Nfsstat3
from ferry.rpc.message import OpaqueAuth
from ferry.xdr import Packer, Unpacker

from .aio import AsyncRpcClient
from .url import export_candidates, normalise_path

MAX_EXPORTS = 4096
MAX_GROUPS = 4096


def holds(export: str, path: str) -> bool:
    """Whether ``path`` is ``export`` or inside it (``/a/bc`` is not inside ``/a/b``)."""
    return export == "/" or path == export or path.startswith(export + "/")


@dataclass(frozen=True, slots=True)
class Export:
    """One exported directory and the client groups it names (none: every client)."""

    path: str
    groups: tuple[str, ...] = ()


async def list_exports(rpc: AsyncRpcClient) -> list[str]:
    """MOUNT EXPORT (RFC 1813 section 5.2.5): the directories the server exports."""
    return [e.path for e in await export_list(rpc)]


async def export_list(rpc: AsyncRpcClient) -> list[Export]:
    """MOUNT EXPORT: each exported directory with its client groups."""
    u = await rpc.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.EXPORT, [], label="MOUNT EXPORT")
    return unpack_export_list(u)


def unpack_exports(u: Unpacker) -> list[str]:
    """exports (RFC 1813 section 5.1.7), the directories only."""
    return [e.path for e in unpack_export_list(u)]


def unpack_export_list(u: Unpacker) -> list[Export]:
    """exports (RFC 1813 section 5.1.7): a list of (directory, list of groups); longer
    lists than MAX_EXPORTS, MAX_GROUPS are refused, not cut (the rest would be misread)."""
    out: list[Export] = []
    while u.unpack_bool():
        if len(out) == MAX_EXPORTS:
            raise XdrError(f"export list longer than {MAX_EXPORTS}")
        path = normalise_path(u.unpack_bytes(1024).decode("utf-8", "surrogateescape"))
        groups: list[str] = []
        while u.unpack_bool():
            if len(groups) == MAX_GROUPS:
                raise XdrError(f"more than {MAX_GROUPS} groups for export {path}")
            groups.append(u.unpack_bytes(255).decode("utf-8", "replace"))
        out.append(Export(path, tuple(groups)))
    return out


async def mount_export(
    rpc: AsyncRpcClient, cred: OpaqueAuth, path: str, export: str | None = None
) -> tuple[bytes, str, str]:
    """MNT (RFC 1813 section 5.2.1) the longest prefix of ``path`` that the server accepts,
    or exactly ``export``; returns (root handle, mounted path, rest of the path). Raises
    ``NoSuchExport`` when no export of the server holds the path, else the OSError of the
    status the export holding it answered."""
    if export is not None:
        exp = normalise_path(export)
        clean = normalise_path(path)
        candidates = [(exp, clean[len(exp) :].strip("/") if holds(exp, clean) else "")]
    else:
        candidates = export_candidates(path)
    refused: dict[str, Nfsstat3] = {}
    for exp, rest in candidates:
        p = Packer()
        p.pack_string(exp.encode("utf-8", "surrogateescape"))
        u = await rpc.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.MNT, p.buffers(), cred, "MOUNT MNT")
        code = u.unpack_enum()
        if code == 0:
            return u.unpack_bytes(64), exp, rest
        refused[exp] = Nfsstat3(code) if code in Nfsstat3._value2member_map_ else Nfsstat3.IO
    wanted = candidates[0][0] if export is not None else normalise_path(path)
    raise await _why_refused(rpc, wanted, refused)


async def _why_refused(rpc: AsyncRpcClient, path: str, refused: dict[str, Nfsstat3]) -> OSError:
    """The error for a path no MNT accepted, from the server's EXPORT list (if it gives
    one): NoSuchExport, or the status of the longest listed export holding the path."""
    try:
        exports = await list_exports(rpc)
    except (RpcError, XdrError):
        exports = None  # no list to judge by: the MNT status is all we know
    holders = [e for e in exports or [] if holds(e, path)]
    if exports is not None and not holders:
        return NoSuchExport(path, exports)
    status = refused.get(max(holders, key=len)) if holders else None
    status = status or list(refused.values())[-1]
    return NfsError(status, f"cannot mount {path!r}").to_oserror(path)

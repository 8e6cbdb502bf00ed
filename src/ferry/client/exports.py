"""MOUNT EXPORT (RFC 1813 section 5.2.5): what a server exports and to whom, as
``showmount -e`` shows it; no mount needed."""

from __future__ import annotations

from dataclasses import dataclass

from ferry.errors import XdrError
from ferry.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, MountProc
from ferry.xdr import Unpacker

from .aio import AsyncRpcClient
from .nfs import server_ports
from .url import NfsUrl, normalise_path

MAX_EXPORTS = 4096
MAX_GROUPS = 4096


@dataclass(frozen=True, slots=True)
class Export:
    """One exported directory and the client groups it names (none: every client)."""

    path: str
    groups: tuple[str, ...] = ()


async def list_exports(url: NfsUrl) -> list[Export]:
    """The export list of the first server of ``url`` that answers (its MOUNT port from the
    URL, else from portmap)."""
    mnt = [(host, port) for host, _, port in await server_ports(url, None)]
    rpc = AsyncRpcClient(*mnt[0], fallbacks=mnt[1:])
    await rpc.connect()
    try:
        reply = await rpc.call(MOUNT_PROGRAM, MOUNT_V3, MountProc.EXPORT, [], label="EXPORT")
    finally:
        await rpc.close()
    return unpack_exports(reply)


def unpack_exports(u: Unpacker) -> list[Export]:
    """``exports`` (RFC 1813 section 5.1.7): a list of (directory, list of groups)."""
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

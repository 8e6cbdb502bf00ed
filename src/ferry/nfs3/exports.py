"""Exports: which backend is served under which MOUNT path, to whom, and how.

Pure policy, no IO: address matching, read-only, and squashing of credentials
(root_squash / all_squash with anonuid/anongid, as exports(5) defines them).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import zlib

from ferry.backends.base import Backend
from ferry.rpc.auth import NOBODY, Credentials

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(slots=True)
class Export:
    """One exported tree."""

    path: str
    """The name clients MOUNT (e.g. ``/srv/share``)."""
    backend: Backend
    read_only: bool = False
    clients: tuple[Network, ...] = ()
    """Networks allowed to mount and use the export; empty means everyone."""
    root_squash: bool = True
    all_squash: bool = False
    anonuid: int = NOBODY
    anongid: int = NOBODY
    export_id: int = 0
    """Stable id carried in file handles; 0 means derived from ``path``."""

    def __post_init__(self) -> None:
        for ident in (self.anonuid, self.anongid):
            if not 0 <= ident <= 0xFFFFFFFF:  # -1 would mean "unchanged" to chown
                raise ValueError(f"anonuid/anongid {ident} out of range")
        if not self.export_id:
            self.export_id = export_id_for(self.path)

    def allows(self, address: str | None) -> bool:
        """Whether a client at ``address`` may use this export."""
        if not self.clients:
            return True
        if address is None:
            return False
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.clients)

    def squash(self, cred: Credentials) -> Credentials:
        """The identity a caller acts as on this export. (Runs on every call: the new
        credentials are made directly, ``dataclasses.replace`` takes seven times as long.)"""
        if self.all_squash or (self.root_squash and cred.uid == 0):
            return Credentials(
                cred.flavor, self.anonuid, self.anongid, (), cred.machine, cred.stamp
            )
        if self.root_squash and (cred.gid == 0 or 0 in cred.gids):
            gids = tuple(self.anongid if g == 0 else g for g in cred.gids)
            gid = self.anongid if cred.gid == 0 else cred.gid
            return Credentials(cred.flavor, cred.uid, gid, gids, cred.machine, cred.stamp)
        return cred


def export_id_for(path: str) -> int:
    """A 16-bit id derived from the export path, never 0."""
    return (zlib.crc32(path.encode()) & 0xFFFF) or 1

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

SQUASHED_MAX = 256
"""Credentials an export remembers squashing (``Export.squash``): as many as a
``CredentialCache`` keeps."""


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
    _squashed: dict[int, tuple[Credentials, Credentials]] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    """``squash``'s answers by the id of the credentials asked about (kept beside them, so
    the id stays theirs), at most ``SQUASHED_MAX``: the dispatcher hands every call of a
    client the same ``Credentials`` object (``CredentialCache``)."""

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
        """The identity a caller acts as on this export. Runs on every call: squashed
        credentials are made once per credentials seen (making one took 0.8 µs, a
        frozen dataclass), not per call. An export's squash settings never change."""
        if not (self.all_squash or self.root_squash):
            return cred
        found = self._squashed.get(id(cred))
        if found is not None and found[0] is cred:
            return found[1]
        squashed = self._squash(cred)
        if len(self._squashed) >= SQUASHED_MAX:
            self._squashed.clear()
        self._squashed[id(cred)] = (cred, squashed)
        return squashed

    def _squash(self, cred: Credentials) -> Credentials:
        """``squash``, made (directly: ``dataclasses.replace`` takes seven times as long)."""
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

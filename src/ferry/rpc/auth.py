"""RPC credentials (RFC 5531 section 14 and appendix A): AUTH_NONE and AUTH_SYS.

``Credentials`` is what the rest of Ferry sees of the caller; squashing (root_squash,
all_squash) is applied per export by the NFS service, not here.
"""

from __future__ import annotations

import dataclasses

from ferry.errors import XdrError
from ferry.rpc.message import MAX_AUTH_BYTES, AuthFlavor, OpaqueAuth
from ferry.xdr import Packer, Unpacker

NOBODY = 65534
MAX_MACHINE_NAME = 255
MAX_GIDS = 16


@dataclasses.dataclass(slots=True, frozen=True)
class Credentials:
    """Who is calling: AUTH_SYS uid/gid/gids, or the anonymous user for AUTH_NONE."""

    flavor: int = AuthFlavor.AUTH_NONE
    uid: int = NOBODY
    gid: int = NOBODY
    gids: tuple[int, ...] = ()
    machine: str = ""
    stamp: int = 0

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.gids


ANONYMOUS = Credentials()


class BadCredentials(XdrError):
    """A credential body that does not decode: the reply is AUTH_ERROR / AUTH_BADCRED."""


def decode_credentials(cred: OpaqueAuth) -> Credentials:
    """Decode a call's credential.

    Raises ``BadCredentials`` for a malformed AUTH_SYS body (reply AUTH_BADCRED) and
    ``UnsupportedFlavor`` for flavors we do not serve (reply AUTH_TOOWEAK).
    """
    if len(cred.body) > MAX_AUTH_BYTES:
        raise BadCredentials(f"credential body of {len(cred.body)} bytes exceeds {MAX_AUTH_BYTES}")
    if cred.flavor == AuthFlavor.AUTH_NONE:
        return ANONYMOUS
    if cred.flavor != AuthFlavor.AUTH_SYS:
        raise UnsupportedFlavor(cred.flavor)
    u = Unpacker(cred.body)
    try:
        stamp = u.unpack_uint()
        machine = u.unpack_bytes(MAX_MACHINE_NAME).decode("utf-8", "replace")
        uid, gid = u.unpack_uint(), u.unpack_uint()
        gids = tuple(u.unpack_array(u.unpack_uint, MAX_GIDS))
    except XdrError as exc:
        raise BadCredentials(str(exc)) from exc
    return Credentials(AuthFlavor.AUTH_SYS, uid, gid, gids, machine, stamp)


class CredentialCache:
    """``decode_credentials`` for the credentials a server sees again and again: a client
    sends the same AUTH_SYS bytes on every call, so each is decoded once. Bounded (emptied
    when full); what fails to decode is never kept, so it fails the same way each time.
    The values are immutable: threads may share one cache."""

    __slots__ = ("_items", "size")

    def __init__(self, size: int = 256) -> None:
        self._items: dict[tuple[int, bytes], Credentials] = {}
        self.size = size

    def __len__(self) -> int:
        return len(self._items)

    def decode(self, cred: OpaqueAuth) -> Credentials:
        """``decode_credentials(cred)``, raising as it does."""
        key = (cred.flavor, cred.body)
        found = self._items.get(key)
        if found is None:
            found = decode_credentials(cred)
            if len(self._items) >= self.size:
                self._items.clear()
            self._items[key] = found
        return found


class UnsupportedFlavor(XdrError):
    """A flavor we do not accept (e.g. RPCSEC_GSS): the reply is AUTH_ERROR / AUTH_TOOWEAK."""

    def __init__(self, flavor: int) -> None:
        super().__init__(f"unsupported auth flavor {flavor}")
        self.flavor = flavor


def encode_auth_sys(
    uid: int, gid: int, gids: tuple[int, ...] = (), machine: str = "ferry", stamp: int = 0
) -> OpaqueAuth:
    """An AUTH_SYS credential (for clients and tests)."""
    p = Packer()
    p.pack_uint(stamp)
    p.pack_string(machine)
    p.pack_uint(uid)
    p.pack_uint(gid)
    p.pack_array(list(gids), p.pack_uint)
    return OpaqueAuth(AuthFlavor.AUTH_SYS, p.get_buffer())

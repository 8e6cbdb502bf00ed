"""File handles: (export id, file id, generation) sealed with a keyed MAC.

A handle is ``version(1) | export id(2) | file id(8) | generation(4) | MAC(16)``.
The MAC (keyed BLAKE2b) makes handles unforgeable: an edited handle fails the MAC and is
BADHANDLE, never a file outside its export. Handles carry no path, so they survive
renames; the key is persisted (or configured), so they survive restarts. A well-formed
handle for an unknown export, for a file that is gone, or for a file id now naming a
newer file (another generation) is STALE. Several servers in front of one store share a
key (``handle_key`` or ``handle_key_file``), so their handles are interchangeable; the
server reads and makes key files (``ferry.server.keys``), this module only uses keys.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence

from ferry.errors import NfsError
from ferry.nfs3.const import Nfsstat3

VERSION = 2
_BODY = struct.Struct(">BHQI")
MAC_SIZE = 16
HANDLE_SIZE = _BODY.size + MAC_SIZE
KEY_SIZE = 32


VERIFIED_MAX = 4096
"""Handles a codec remembers as verified (``HandleCodec.decode``)."""
MADE_MAX = 1 << 16
"""Handles a codec remembers having made (``HandleCodec.encode``, ``encode_ids``):
about 9 MiB when full, enough for a directory of 50,000 entries listed again."""


class HandleCodec:
    """Seals file handles with one secret key; opens those sealed with it or with any of
    the ``accepted`` older keys (so that a key can be replaced without making every
    handle clients hold STALE at once).

    Opening a handle means checking its MAC, which clients make us do on every call with
    the same few handles: those verified are remembered (``verified``, at most
    ``VERIFIED_MAX``, emptied when full). A codec's keys never change, and a server given
    other keys makes a new codec, so a handle is only ever remembered as verified under
    the keys that verified it. Only the MAC check is skipped: whether the file still
    exists (STALE) is decided on every call by the service, as before."""

    __slots__ = ("_key", "_accepted", "_keyed", "verified", "made")

    def __init__(self, key: bytes, accepted: Sequence[bytes] = ()) -> None:
        if min(len(k) for k in (key, *accepted)) < 16:
            raise ValueError("handle key must be at least 16 bytes")
        self._key = key[:64]
        self._accepted = tuple(k[:64] for k in accepted if k[:64] != self._key)
        self._keyed = hashlib.blake2b(key=self._key, digest_size=MAC_SIZE)
        """The MAC's state after the key block: a copy of it, updated with a body, gives
        the MAC without hashing the key again (a third cheaper than a new keyed hash)."""
        self.verified: dict[bytes, tuple[int, int, int]] = {}
        self.made: dict[int, bytes] = {}
        """Handles made (``encode``, ``encode_ids``; at most ``MADE_MAX``, emptied when
        full), by export id, file id and generation: looking a name up or listing a
        directory again costs a dictionary lookup per file instead of a MAC."""

    def _mac(self, body: bytes, key: bytes | None = None) -> bytes:
        return hashlib.blake2b(body, key=key or self._key, digest_size=MAC_SIZE).digest()

    def encode(self, export_id: int, fileid: int, generation: int = 0) -> bytes:
        """The handle of a file (LOOKUP, CREATE, MKDIR...): clients look the same names
        up again and again, so it comes from ``made`` like ``encode_ids``'s when it was
        made before (a dictionary lookup instead of a keyed hash)."""
        generation &= 0xFFFFFFFF
        made = self.made
        found = made.get(ident := (generation << 80) | (export_id << 64) | fileid)
        if found is None:
            if len(made) >= MADE_MAX:
                made.clear()
            body = _BODY.pack(VERSION, export_id, fileid, generation)
            mac = self._keyed.copy()
            mac.update(body)
            found = made[ident] = body + mac.digest()
        return found

    def encode_ids(
        self, export_id: int, fileids: Sequence[int], generations: Sequence[int | None]
    ) -> list[bytes | None]:
        """``encode`` of each file of a READDIRPLUS page from its id and generation (None:
        no handle), in one loop of C calls; remembered in ``made``."""
        pack, keyed = _BODY.pack, self._keyed
        made = self.made
        if len(made) >= MADE_MAX:
            made.clear()
        export = export_id << 64
        out: list[bytes | None] = []
        add = out.append
        for fileid, generation in zip(fileids, generations, strict=True):
            if generation is None:
                add(None)
                continue
            generation &= 0xFFFFFFFF
            found = made.get(ident := (generation << 80) | export | fileid)
            if found is None:
                body = pack(VERSION, export_id, fileid, generation)
                mac = keyed.copy()
                mac.update(body)
                found = made[ident] = body + mac.digest()
            add(found)
        return out

    def decode(self, handle: bytes) -> tuple[int, int, int]:
        """(export id, file id, generation) of a handle; BADHANDLE if not made with our key."""
        found = self.verified.get(handle)
        if found is not None:
            return found
        found = self._open(handle)
        if len(self.verified) >= VERIFIED_MAX:
            self.verified.clear()
        self.verified[handle] = found
        return found

    def _open(self, handle: bytes) -> tuple[int, int, int]:
        if len(handle) != HANDLE_SIZE or handle[0] != VERSION:
            raise NfsError(Nfsstat3.BADHANDLE, "malformed file handle")
        body, mac = handle[: _BODY.size], handle[_BODY.size :]
        if not hmac.compare_digest(mac, self._mac(body)) and not any(
            hmac.compare_digest(mac, self._mac(body, old)) for old in self._accepted
        ):
            raise NfsError(Nfsstat3.BADHANDLE, "file handle fails verification")
        _, export_id, fileid, generation = _BODY.unpack(body)
        return export_id, fileid, generation

"""File handles: (export id, file id, generation) sealed with a keyed MAC.

A handle is ``version(1) | export id(2) | file id(8) | generation(4) | MAC(16)``.
The MAC (keyed BLAKE2b) makes handles unforgeable: an edited handle fails the MAC and is
BADHANDLE, never a file outside its export. Handles carry no path, so they survive
renames; the key is persisted (or configured), so they survive restarts. A well-formed
handle for an unknown export, for a file that is gone, or for a file id now naming a
newer file (another generation) is STALE.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from pathlib import Path

from ferry.errors import NfsError
from ferry.nfs3.const import Nfsstat3

VERSION = 2
_BODY = struct.Struct(">BHQI")
MAC_SIZE = 16
HANDLE_SIZE = _BODY.size + MAC_SIZE
KEY_SIZE = 32


class HandleCodec:
    """Seals and opens file handles with one secret key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("handle key must be at least 16 bytes")
        self._key = key[:64]

    def _mac(self, body: bytes) -> bytes:
        return hashlib.blake2b(body, key=self._key, digest_size=MAC_SIZE).digest()

    def encode(self, export_id: int, fileid: int, generation: int = 0) -> bytes:
        body = _BODY.pack(VERSION, export_id, fileid, generation & 0xFFFFFFFF)
        return body + self._mac(body)

    def decode(self, handle: bytes) -> tuple[int, int, int]:
        """(export id, file id, generation) of a handle; BADHANDLE if not made with our key."""
        if len(handle) != HANDLE_SIZE or handle[0] != VERSION:
            raise NfsError(Nfsstat3.BADHANDLE, "malformed file handle")
        body = handle[: _BODY.size]
        if not hmac.compare_digest(handle[_BODY.size :], self._mac(body)):
            raise NfsError(Nfsstat3.BADHANDLE, "file handle fails verification")
        _, export_id, fileid, generation = _BODY.unpack(body)
        return export_id, fileid, generation


def load_or_create_key(state_dir: Path) -> bytes:
    """The handle key kept in ``state_dir/handle.key``, created (mode 0600) on first use."""
    path = state_dir / "handle.key"
    try:
        key = path.read_bytes()
        if len(key) >= 16:
            return key
    except FileNotFoundError:
        pass
    state_dir.mkdir(parents=True, exist_ok=True)
    key = os.urandom(KEY_SIZE)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return key

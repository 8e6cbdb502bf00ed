"""File handles: (export id, file id, generation) sealed with a keyed MAC.

A handle is ``version(1) | export id(2) | file id(8) | generation(4) | MAC(16)``.
The MAC (keyed BLAKE2b) makes handles unforgeable: an edited handle fails the MAC and is
BADHANDLE, never a file outside its export. Handles carry no path, so they survive
renames; the key is persisted (or configured), so they survive restarts. A well-formed
handle for an unknown export, for a file that is gone, or for a file id now naming a
newer file (another generation) is STALE. Several servers in front of one store share a
key (``handle_key`` or ``handle_key_file``), so their handles are interchangeable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Sequence
from pathlib import Path

from ferry.errors import ConfigError, NfsError
from ferry.nfs3.const import Nfsstat3

VERSION = 2
_BODY = struct.Struct(">BHQI")
MAC_SIZE = 16
HANDLE_SIZE = _BODY.size + MAC_SIZE
KEY_SIZE = 32


class HandleCodec:
    """Seals file handles with one secret key; opens those sealed with it or with any of
    the ``accepted`` older keys (so that a key can be replaced without making every
    handle clients hold STALE at once)."""

    __slots__ = ("_key", "_accepted")

    def __init__(self, key: bytes, accepted: Sequence[bytes] = ()) -> None:
        if min(len(k) for k in (key, *accepted)) < 16:
            raise ValueError("handle key must be at least 16 bytes")
        self._key = key[:64]
        self._accepted = tuple(k[:64] for k in accepted if k[:64] != self._key)

    def _mac(self, body: bytes, key: bytes | None = None) -> bytes:
        return hashlib.blake2b(body, key=key or self._key, digest_size=MAC_SIZE).digest()

    def encode(self, export_id: int, fileid: int, generation: int = 0) -> bytes:
        body = _BODY.pack(VERSION, export_id, fileid, generation & 0xFFFFFFFF)
        return body + self._mac(body)

    def decode(self, handle: bytes) -> tuple[int, int, int]:
        """(export id, file id, generation) of a handle; BADHANDLE if not made with our key."""
        if len(handle) != HANDLE_SIZE or handle[0] != VERSION:
            raise NfsError(Nfsstat3.BADHANDLE, "malformed file handle")
        body, mac = handle[: _BODY.size], handle[_BODY.size :]
        if not hmac.compare_digest(mac, self._mac(body)) and not any(
            hmac.compare_digest(mac, self._mac(body, old)) for old in self._accepted
        ):
            raise NfsError(Nfsstat3.BADHANDLE, "file handle fails verification")
        _, export_id, fileid, generation = _BODY.unpack(body)
        return export_id, fileid, generation


def load_key_file(path: Path) -> list[bytes]:
    """The keys in ``path``: one a line, as hex (64 digits: 32 bytes; 32 digits at least);
    blank lines and ``#`` comments are skipped. The first key signs new handles, the
    others are only accepted: to replace a key, add the new one on a second line on every
    server (a rolling restart), then move it first, and drop the old one once clients
    have mounted again. ConfigError names the file and line of any problem."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"handle_key_file {path}: cannot read it: {exc}") from exc
    keys = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) < 16:
            raise ConfigError(f"handle_key_file {path}: line {number}: not a hex key of 32+ digits")
        keys.append(key)
    if not keys:
        raise ConfigError(f"handle_key_file {path}: no key in it")
    return keys


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

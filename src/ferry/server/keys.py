"""Handle keys on disk: the key file an operator configures and the key a server keeps in its
state directory. File IO for ``ferry.nfs3.filehandle``, which only uses keys (sans-IO)."""

from __future__ import annotations

import os
from pathlib import Path

from ferry.errors import ConfigError
from ferry.nfs3.filehandle import KEY_SIZE


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

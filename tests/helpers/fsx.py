"""fsx-style random file operations and the local reference they are checked against.

A seeded sequence of writes, reads, truncates and (for a mount) mapped writes and reads,
on one file kept small so that writes overlap often; ``Reference`` is what the file must
hold after each. The drivers (the client API in tests/client, the FUSE mount in
tests/fuse) apply each operation to the file and to the reference, and compare every
read, and the file at the end, with it. The seed is printed so that a failure can be
replayed: ``FERRY_FSX_SEED=<seed> pytest ...``.

No pytest here: plain functions over bytes, bounded in count (the caller bounds time).
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator

MAX_SIZE = 256 << 10  # the file stays this small: writes land on each other often
MAX_LEN = 48 << 10  # a usual write or read (several 16 KiB WRITEs)
MAX_LARGE = 192 << 10  # a rare large one (several FUSE requests, many WRITEs)


def seed_from_env() -> int:
    """``FERRY_FSX_SEED`` if set (to replay a failure), else a fresh random seed."""
    given = os.environ.get("FERRY_FSX_SEED")
    return int(given) if given else random.SystemRandom().randrange(1 << 32)


@dataclasses.dataclass(frozen=True)
class Op:
    kind: str  # write, read, truncate, fsync, mapwrite, mapread
    offset: int = 0
    length: int = 0  # bytes to read or write; the new size for truncate
    data: bytes = b""


# Operation weights: mostly writes, so that many are in flight between the reads (a read
# waits for the writes before it) and overlap each other.
PLAIN = {"write": 78, "read": 12, "truncate": 8, "fsync": 2}
MAPPED = {"write": 50, "read": 10, "truncate": 7, "fsync": 1, "mapwrite": 22, "mapread": 10}


def operations(seed: int, count: int, weights: dict[str, int] = PLAIN) -> Iterator[Op]:
    """``count`` operations from ``seed``; offsets within MAX_SIZE, lengths of a few bytes
    (pieces overlap unevenly), up to MAX_LEN, or now and then up to MAX_LARGE."""
    rng = random.Random(seed)
    kinds, odds = list(weights), list(weights.values())
    for _ in range(count):
        (kind,) = rng.choices(kinds, odds)
        if kind in ("truncate", "fsync"):
            yield Op(kind, length=rng.randrange(MAX_SIZE + 1))
            continue
        (longest,) = rng.choices((64, MAX_LEN, MAX_LARGE), (45, 45, 10))
        length = rng.randrange(1, longest + 1)
        offset = rng.randrange(MAX_SIZE - length + 1)
        data = rng.randbytes(length) if kind in ("write", "mapwrite") else b""
        yield Op(kind, offset, length, data)


class Reference:
    """The file as it must be: a bytearray that writes extend with zeros, as a file does."""

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, offset: int, data: bytes) -> None:
        if offset > len(self.data):
            self.data += bytes(offset - len(self.data))
        self.data[offset : offset + len(data)] = data

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.data[offset : offset + length])

    def truncate(self, size: int) -> None:
        if size < len(self.data):
            del self.data[size:]
        else:
            self.data += bytes(size - len(self.data))


def first_difference(got: bytes, want: bytes) -> str:
    """Where two versions of the file first differ, for a failure message."""
    prefix = f"size {len(got)} instead of {len(want)}; " if len(got) != len(want) else ""
    for i, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"{prefix}first differing byte at offset {i}"
    return prefix or "identical"

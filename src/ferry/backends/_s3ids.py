"""File ids for an object store: a hash of the key, found again by listing the store.

An object store has no inode numbers, and a Ferry file handle carries only a 64-bit file
id. The id of an object (or of a "directory" prefix) is therefore a hash of its
path relative to the export: every server computes the same id for the same name, with
nothing to coordinate or keep. Going back from an id to a path uses a bounded in-memory
map filled by every lookup and listing; an id the map does not hold (after a restart, or
from a handle another server made) is found by listing the export tree breadth first,
hashing every key, so handles survive restarts and work on every server without any state
beyond the store itself. ``scan_limit`` bounds that listing; past it the handle is STALE.

A 63-bit hash makes a collision between two names of one export unlikely (birthday bound:
about 1 in 10**7 for a million names); a collided name is served as the one found first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable

ROOT_ID = 1
"""The export's root directory (the empty relative path)."""

Lister = Callable[[str], Iterable[tuple[str, bool]]]
"""``lister(rel_dir)``: the (relative path, is directory) of each child of a directory."""


def file_id(rel: str) -> int:
    """The file id of the relative path ``rel`` ("" is the root)."""
    if not rel:
        return ROOT_ID
    digest = hashlib.blake2b(rel.encode(), digest_size=8, person=b"ferry-s3").digest()
    return (int.from_bytes(digest, "big") >> 1) | 2  # 63 bits, never 0 or ROOT_ID


class IdMap:
    """File id -> relative path, remembered for up to ``capacity`` names."""

    def __init__(self, lister: Lister, capacity: int = 1 << 20, scan_limit: int = 1_000_000):
        self._lister = lister
        self._capacity = capacity
        self._scan_limit = scan_limit
        self._paths: OrderedDict[int, str] = OrderedDict({ROOT_ID: ""})
        self._lock = threading.Lock()

    def remember(self, rel: str) -> int:
        """Record ``rel`` (just looked up, listed or created) and return its id."""
        fid = file_id(rel)
        with self._lock:
            self._paths[fid] = rel
            self._paths.move_to_end(fid)
            while len(self._paths) > self._capacity:
                self._paths.popitem(last=False)
        return fid

    def path(self, fid: int) -> str | None:
        """The relative path of ``fid``, listing the store if it is not remembered;
        None if no name in the export (within ``scan_limit``) has this id."""
        if fid == ROOT_ID:
            return ""
        with self._lock:
            rel = self._paths.get(fid)
        return rel if rel is not None else self._scan(fid)

    def _scan(self, fid: int) -> str | None:
        queue, seen = deque([""]), 0
        while queue and seen < self._scan_limit:
            for rel, is_dir in self._lister(queue.popleft()):
                seen += 1
                if self.remember(rel) == fid:
                    return rel
                if is_dir:
                    queue.append(rel)
        return None

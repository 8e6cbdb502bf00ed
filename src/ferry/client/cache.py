"""The client's attribute and lookup cache: short-lived, bounded, invalidated on our changes.

NFSv3 clients cache attributes for a few seconds (RFC 1813 section 4.7 leaves the policy
to the client; Linux's ``actimeo``) so that resolving ``a/b/c`` twice does not cost six
round trips. Everything here expires after ``lifetime`` seconds; ``lifetime == 0`` turns
the cache off. The procedure layer feeds it (GETATTR, LOOKUP, READDIRPLUS results) and
drops entries on every change it makes itself: the changed object's attributes and the
parent directory's attributes and names. Changes by other clients show up at the latest
one lifetime later, the usual NFS contract.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ferry.vocab import Attr

MAX_ENTRIES = 16384  # per table; the oldest entries go first when it fills up


class AttrCache:
    """Handle -> attributes and (directory handle, name) -> handle, each with an expiry."""

    def __init__(self, lifetime: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime = max(0.0, lifetime)
        self.clock = clock
        """Seconds, monotonic; a test may set its own to move time on."""
        self._attrs: dict[bytes, tuple[Attr, float]] = {}
        self._names: dict[bytes, dict[bytes, tuple[bytes, float]]] = {}
        self._changes: dict[bytes, int] = {}  # directory -> changes of ours begun
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.lifetime > 0

    def attr(self, fh: bytes) -> Attr | None:
        """Fresh cached attributes of ``fh``, or None."""
        hit = self._attrs.get(fh)
        if hit is None or hit[1] <= self.clock():
            self.misses += 1
            return None
        self.hits += 1
        return hit[0]

    def put_attr(self, fh: bytes, attr: Attr | None) -> None:
        if attr is None or not self.enabled:
            return
        if len(self._attrs) >= MAX_ENTRIES:
            self._attrs.pop(next(iter(self._attrs)))
        self._attrs.pop(fh, None)  # re-insert: dict order is then age order
        self._attrs[fh] = (attr, self.clock() + self.lifetime)

    def name(self, dirfh: bytes, name: bytes) -> bytes | None:
        """The cached handle ``name`` in ``dirfh`` stands for, or None."""
        hit = self._names.get(dirfh, {}).get(name)
        if hit is None or hit[1] <= self.clock():
            return None
        return hit[0]

    def put_name(self, dirfh: bytes, name: bytes, fh: bytes) -> None:
        if not self.enabled:
            return
        if dirfh not in self._names and len(self._names) >= MAX_ENTRIES:
            self._names.pop(next(iter(self._names)))
        names = self._names.setdefault(dirfh, {})
        if len(names) >= MAX_ENTRIES:
            names.pop(next(iter(names)))
        names[name] = (fh, self.clock() + self.lifetime)

    def forget(self, *fhs: bytes | None) -> None:
        """Drop the attributes of objects we changed (size, times, link count)."""
        for fh in fhs:
            if fh is not None:
                self._attrs.pop(fh, None)

    def forget_dir(self, dirfh: bytes, name: bytes | None = None) -> None:
        """Drop a changed directory's attributes and its names (one, or all of them); the
        object a dropped name stood for loses its attributes too (its ctime/nlink moved)."""
        if dirfh not in self._changes and len(self._changes) >= MAX_ENTRIES:
            self._changes.clear()
        self._changes[dirfh] = self._changes.get(dirfh, 0) + 1  # see ``changed``
        self._attrs.pop(dirfh, None)
        names = self._names.get(dirfh)
        if not names:
            return
        dropped = [names.pop(name, None)] if name is not None else list(names.values())
        if name is None:
            del self._names[dirfh]
        for hit in dropped:
            if hit is not None:
                self._attrs.pop(hit[0], None)

    def changing(self, dirfh: bytes, name: bytes) -> int:
        """``forget_dir`` for a change we are about to send; the token ``changed`` takes."""
        self.forget_dir(dirfh, name)
        return self._changes[dirfh]

    def changed(self, dirfh: bytes, token: int, after: Attr | None) -> None:
        """The directory's attributes after our change (its reply's wcc), as fresh as a
        GETATTR's: kept, unless another change of ours to it began meanwhile (its reply
        may come first, and these would then be older than the directory)."""
        if self._changes.get(dirfh) == token:
            self.put_attr(dirfh, after)

    def clear(self) -> None:
        self._attrs.clear()
        self._names.clear()

"""READDIR/READDIRPLUS paging: stable cookies, cookie verifiers, and reply sizing.

A cookie is a 63-bit hash of the entry's name, and a listing is sorted by cookie, so a
cookie keeps its meaning when other entries come and go: a client resuming at cookie C
gets exactly the entries that sort after C, with no repeats or skips of unchanged names,
however many calls the listing takes. The cookie verifier is the directory's change time;
because cookies stay valid across changes, a stale verifier is still honoured (RFC 1813
section 3.3.16 allows this) rather than failing the client with BAD_COOKIE.

Listings are cached per directory while its change time is unchanged, so paging through
50,000 entries costs one backend listing, not one per call. READDIRPLUS listings also keep
the attributes the backend gathered while listing (one pass over the directory); they are
served for ``ATTR_TTL`` seconds and only while no change went through this server since,
after which each page fetches fresh attributes per entry.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import struct
import threading
import time
from collections.abc import Callable, Iterable

from ferry.backends.base import Attr, DirEntry
from ferry.nfs3.types import Entry

_CACHE_DIRS = 32
ATTR_TTL = 2.0
# Bytes per entry on the wire: entry3 = follows(4) fileid(8) name(4+n+pad) cookie(8);
# entryplus3 adds post_op_attr (4+84) and post_op_fh3 (4+4+handle).
_ENTRY_FIXED = 4 + 8 + 4 + 8
_PLUS_EXTRA = 4 + 84 + 4 + 4 + 28
_REPLY_OVERHEAD = 4 + 88 + 8 + 4 + 4 + 64  # status, dir attrs, verifier, end markers, slack


def cookie_for(name: bytes) -> int:
    """A stable cookie for a name: never 0 (which means "start")."""
    digest = hashlib.blake2b(name, digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) | 1


def entry_size(name: bytes, plus: bool) -> int:
    return _ENTRY_FIXED + ((len(name) + 3) & ~3) + (_PLUS_EXTRA if plus else 0)


class Listing:
    """One directory's entries sorted by cookie."""

    __slots__ = ("cookies", "entries", "verifier", "stamp", "built", "mutations", "has_attrs")

    def __init__(
        self, entries: Iterable[DirEntry], stamp: tuple[int, int], mutations: int = 0
    ) -> None:
        keyed = sorted(((cookie_for(e.name), e) for e in entries), key=lambda k: k[0])
        self.cookies = [k[0] for k in keyed]
        self.entries = [Entry(e.fileid, e.name, cookie, e.attr) for cookie, e in keyed]
        self.has_attrs = bool(self.entries) and all(e.attr is not None for e in self.entries)
        self.stamp = stamp
        self.verifier = struct.pack(">Q", stamp[0] & 0xFFFFFFFFFFFFFFFF)
        self.built = time.monotonic()
        self.mutations = mutations

    def attrs_fresh(self, mutations: int) -> bool:
        """Whether the attributes gathered at listing time may still be served."""
        return (
            self.has_attrs
            and self.mutations == mutations
            and time.monotonic() - self.built < ATTR_TTL
        )

    def page(
        self, cookie: int, dircount: int, maxcount: int, plus: bool
    ) -> tuple[list[Entry], bool]:
        """Entries after ``cookie`` fitting ``dircount`` (names) and ``maxcount`` (reply bytes)."""
        start = bisect.bisect_right(self.cookies, cookie) if cookie else 0
        budget = max(maxcount, 0) - _REPLY_OVERHEAD
        names_budget = dircount if dircount > 0 else 1 << 30
        out: list[Entry] = []
        for entry in self.entries[start:]:
            size = entry_size(entry.name, plus)
            names_budget -= entry_size(entry.name, False)
            budget -= size
            if budget < 0 or (names_budget < 0 and out):
                return out, False
            out.append(entry)
        return out, True


class DirListingCache:
    """A small LRU of listings keyed by (export, directory), valid while the directory's
    mtime and ctime are unchanged."""

    def __init__(self, size: int = _CACHE_DIRS) -> None:
        self._size = size
        self.mutations = 0
        """Bumped by every change made through the server (see ``touch``)."""
        self._items: collections.OrderedDict[tuple[int, int], Listing] = collections.OrderedDict()
        self._lock = threading.Lock()

    def touch(self) -> None:
        """Note a change that may alter cached attributes (no lock: any change of the
        value is enough to make cached attributes stale)."""
        self.mutations += 1

    def get(
        self,
        export_id: int,
        dir_fid: int,
        dir_attr: Attr,
        list_dir: Callable[[], list[DirEntry]],
        want_fresh_attrs: bool = False,
    ) -> Listing:
        """The cached listing of a directory, rebuilt if the directory changed (or, with
        ``want_fresh_attrs``, if its attributes are no longer fresh)."""
        key = (export_id, dir_fid)
        stamp = (dir_attr.mtime_ns, dir_attr.ctime_ns)
        with self._lock:
            listing = self._items.get(key)
            if (
                listing is not None
                and listing.stamp == stamp
                and not (want_fresh_attrs and not listing.attrs_fresh(self.mutations))
            ):
                self._items.move_to_end(key)
                return listing
        mutations = self.mutations
        listing = Listing(list_dir(), stamp, mutations)
        with self._lock:
            self._items[key] = listing
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return listing

    def invalidate(self, export_id: int, dir_fid: int) -> None:
        self.touch()
        with self._lock:
            self._items.pop((export_id, dir_fid), None)

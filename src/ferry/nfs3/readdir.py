"""READDIR/READDIRPLUS paging: stable cookies, cookie verifiers, and reply sizing.

A cookie is a 63-bit hash of the entry's name, and a listing is sorted by cookie, so a
cookie keeps its meaning when other entries come and go: a client resuming at cookie C
gets exactly the entries that sort after C, with no repeats or skips of unchanged names,
however many calls the listing takes. The cookie verifier is the directory's change time;
because cookies stay valid across changes, a stale verifier is still honoured (RFC 1813
section 3.3.16 allows this) rather than failing the client with BAD_COOKIE.

Listings are cached per directory while its change time is unchanged, so paging through
50,000 entries costs one backend listing, not one per call; a listing keeps the running
totals of its entries' wire sizes, so finding a page costs two binary searches. Attributes
for READDIRPLUS are not cached here: the service reads them fresh for each page.
"""

from __future__ import annotations

import array
import bisect
import collections
import contextlib
import hashlib
import itertools
import struct
from collections.abc import Callable, Iterable

from ferry.nfs3.filehandle import HANDLE_SIZE
from ferry.vocab import Attr, DirEntry

_CACHE_DIRS = 32
# Bytes per entry on the wire: entry3 = follows(4) fileid(8) name(4+n+pad) cookie(8);
# entryplus3 adds post_op_attr (4+84) and post_op_fh3 (4+4+handle).
_ENTRY_FIXED = 4 + 8 + 4 + 8
_PLUS_EXTRA = 4 + 84 + 4 + 4 + ((HANDLE_SIZE + 3) & ~3)
_REPLY_OVERHEAD = 4 + 88 + 8 + 4 + 4 + 64  # status, dir attrs, verifier, end markers, slack
MIN_RESOK = 88 + 8 + 4 + 4
"""The smallest READDIR3resok: directory attributes, verifier, end of list, eof; a count
below it is TOOSMALL even for an empty directory (RFC 1813 section 3.3.16)."""


def cookie_for(name: bytes) -> int:
    """A stable cookie for a name: never 0 (which means "start")."""
    return cookies_for([name])[0]


def cookies_for(names: Iterable[bytes]) -> list[int]:
    """``cookie_for`` of each name, in one loop of C calls (a listing of 50,000 names)."""
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [(from_bytes(blake2b(n, digest_size=8).digest(), "big") >> 1) | 1 for n in names]


class Listing:
    """One directory's entries sorted by cookie, with the running totals of their wire
    sizes, so that a page's extent is two binary searches rather than a loop over it."""

    __slots__ = ("cookies", "entries", "verifier", "stamp", "_names", "_plus")

    def __init__(self, entries: Iterable[DirEntry], stamp: tuple[int, int]) -> None:
        given = [e if e.attr is None else DirEntry(e.name, e.fileid) for e in entries]
        cookies = cookies_for([e.name for e in given])
        order = sorted(range(len(given)), key=cookies.__getitem__)  # ints sort fast
        self.cookies = [cookies[i] for i in order]
        self.entries = [given[i] for i in order]  # the backend's, no attributes kept
        self.stamp = stamp
        self.verifier = struct.pack(">Q", stamp[0] & 0xFFFFFFFFFFFFFFFF)
        sizes = [_ENTRY_FIXED + ((len(e.name) + 3) & ~3) for e in self.entries]
        self._names = array.array("q", itertools.accumulate(sizes, initial=0))
        """entry3 bytes before entry i (names, ids, cookies: what dircount counts)."""
        self._plus = array.array(
            "q", (total + i * _PLUS_EXTRA for i, total in enumerate(self._names))
        )
        """entryplus3 bytes before entry i (what maxcount counts for READDIRPLUS)."""

    def page(self, cookie: int, dircount: int, maxcount: int, plus: bool) -> tuple[int, int, bool]:
        """The entries after ``cookie`` fitting ``dircount`` (names) and ``maxcount`` (reply
        bytes), as ``entries[start:stop]``; and whether they reach the end (eof). At least
        one entry whatever ``dircount`` says, none if the first exceeds ``maxcount``."""
        start = bisect.bisect_right(self.cookies, cookie) if cookie else 0
        n = len(self.cookies)
        if start >= n:
            return n, n, True
        room = max(maxcount, 0) - _REPLY_OVERHEAD
        sums = self._plus if plus else self._names
        stop = max(bisect.bisect_right(sums, sums[start] + room, start) - 1, start)
        if dircount > 0:
            names = self._names
            fit = bisect.bisect_right(names, names[start] + dircount, start) - 1
            stop = min(stop, max(fit, start + 1))
        return start, stop, stop == n


class DirListingCache:
    """A small LRU of listings keyed by (export, directory), valid while the directory's
    mtime and ctime are unchanged. Holds the ``lock`` it is given while it changes (the
    server passes a ``threading.Lock``); without one it is for one thread."""

    def __init__(
        self, size: int = _CACHE_DIRS, lock: contextlib.AbstractContextManager[object] | None = None
    ) -> None:
        self._size = size
        self._items: collections.OrderedDict[tuple[int, int], Listing] = collections.OrderedDict()
        self._lock = lock if lock is not None else contextlib.nullcontext()

    def get(
        self, export_id: int, dir_fid: int, dir_attr: Attr, list_dir: Callable[[], list[DirEntry]]
    ) -> Listing:
        """The cached listing of a directory, rebuilt if the directory changed."""
        key = (export_id, dir_fid)
        stamp = (dir_attr.mtime_ns, dir_attr.ctime_ns)
        with self._lock:
            listing = self._items.get(key)
            if listing is not None and listing.stamp == stamp:
                self._items.move_to_end(key)
                return listing
        listing = Listing(list_dir(), stamp)
        with self._lock:
            self._items[key] = listing
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return listing

    def invalidate(self, export_id: int, dir_fid: int) -> None:
        with self._lock:
            self._items.pop((export_id, dir_fid), None)

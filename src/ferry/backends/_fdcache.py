"""A small LRU of open file descriptors, so a stream of READ/WRITE calls opens a file once.

Descriptors are leased: an evicted or invalidated descriptor is closed only when its last
user releases it, so a thread never does I/O on a number that has been closed (and
possibly reused for another file) under its feet.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable


class Lease:
    """One cached descriptor; ``fd`` stays valid until ``FdCache.release``."""

    __slots__ = ("fd", "writable", "refs", "dead")

    def __init__(self, fd: int, writable: bool) -> None:
        self.fd = fd
        self.writable = writable
        self.refs = 1
        self.dead = False


class FdCache:
    """Up to ``capacity`` descriptors keyed by file id, least recently used evicted first.

    ``closer`` releases one (``os.close``; the CephFS backend caches libcephfs handles)."""

    def __init__(self, capacity: int = 64, closer: Callable[[int], object] = os.close) -> None:
        self._close = closer
        self._lock = threading.Lock()
        self._items: OrderedDict[int, Lease] = OrderedDict()
        self._capacity = capacity

    def acquire(self, key: int, writable: bool) -> Lease | None:
        """A lease on the cached descriptor of ``key`` (writable if asked), or None."""
        with self._lock:
            lease = self._items.get(key)
            if lease is None or (writable and not lease.writable):
                return None
            self._items.move_to_end(key)
            lease.refs += 1
            return lease

    def insert(self, key: int, fd: int, writable: bool) -> Lease:
        """Cache ``fd`` (now owned by the cache) and lease it to the caller."""
        lease = Lease(fd, writable)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._retire(old)
            self._items[key] = lease
            while len(self._items) > self._capacity:
                self._retire(self._items.popitem(last=False)[1])
        return lease

    def release(self, lease: Lease) -> None:
        with self._lock:
            lease.refs -= 1
            if lease.dead and lease.refs == 0:
                self._close(lease.fd)

    def invalidate(self, key: int) -> None:
        """Forget ``key`` (its file was removed or replaced); closes once unused."""
        with self._lock:
            lease = self._items.pop(key, None)
            if lease is not None:
                self._retire(lease)

    def clear(self) -> None:
        with self._lock:
            while self._items:
                self._retire(self._items.popitem()[1])

    def _retire(self, lease: Lease) -> None:
        lease.dead = True
        if lease.refs == 0:
            self._close(lease.fd)

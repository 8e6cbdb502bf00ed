"""A small LRU of open file descriptors, so a stream of READ/WRITE calls opens a file once.

Descriptors are leased: an evicted or invalidated descriptor is closed only when its last
user releases it, so a thread never does I/O on a number that has been closed (and
possibly reused for another file) under its feet. Descriptors are closed outside the
cache's lock: closing a libcephfs handle may wait on the cluster, and must not hold up
the other files' calls meanwhile.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable


class Lease:
    """One cached descriptor; ``fd`` stays valid until ``FdCache.release``."""

    __slots__ = ("fd", "writable", "refs", "dead", "used")

    def __init__(self, fd: int, writable: bool) -> None:
        self.fd = fd
        self.writable = writable
        self.refs = 1
        self.dead = False
        self.used = time.monotonic()


class FdCache:
    """Up to ``capacity`` descriptors keyed by file id, least recently used evicted first.

    ``closer`` releases one (``os.close``; the CephFS backend caches libcephfs handles,
    and references to libcephfs inodes)."""

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
            doomed = [self._retire(old)] if (old := self._items.pop(key, None)) else []
            self._items[key] = lease
            while len(self._items) > self._capacity:
                doomed.append(self._retire(self._items.popitem(last=False)[1]))
        self._close_all(doomed)
        return lease

    def release(self, lease: Lease) -> None:
        with self._lock:
            lease.refs -= 1
            lease.used = time.monotonic()
            doomed = lease.dead and lease.refs == 0
        if doomed:
            self._close(lease.fd)

    def invalidate(self, key: int) -> None:
        """Forget ``key`` (its file was removed or replaced); closes once unused."""
        with self._lock:
            lease = self._items.pop(key, None)
            doomed = [self._retire(lease)] if lease is not None else []
        self._close_all(doomed)

    def close_idle(self, idle: float) -> int:
        """Close the descriptors nobody used for ``idle`` seconds; returns how many."""
        horizon = time.monotonic() - idle
        with self._lock:
            old = [k for k, v in self._items.items() if v.refs == 0 and v.used < horizon]
            doomed = [self._retire(self._items.pop(k)) for k in old]
        return self._close_all(doomed)

    def clear(self) -> None:
        with self._lock:
            doomed = [self._retire(lease) for lease in self._items.values()]
            self._items.clear()
        self._close_all(doomed)

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def _retire(lease: Lease) -> Lease | None:
        """Mark a lease dead; returns it if it is unused and must be closed now."""
        lease.dead = True
        return lease if lease.refs == 0 else None

    def _close_all(self, leases: list[Lease | None]) -> int:
        closed = 0
        for lease in leases:
            if lease is not None:
                self._close(lease.fd)
                closed += 1
        return closed

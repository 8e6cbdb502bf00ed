"""The duplicate request cache (DRC): a retransmitted non-idempotent call is not run twice.

RPC gives at-most-once semantics only if the server remembers replies (RFC 5531 section
8 leaves it to the server; RFC 1813 section 4.4 on why retried REMOVE, RENAME or
exclusive CREATE must not fail with NOENT or EXIST). Like the Linux server (fs/nfsd/
nfscache.c), an entry is keyed by the client's address, the XID, program, version and
procedure, the call's length and a checksum of its bytes, so a *different* call that
happens to reuse an XID is not answered from the cache.

Addresses: over UDP the key is (host, port), as a client retransmits from its socket.
Over TCP it is the host only: a client that lost its connection resends on a new one,
usually from a new port (libnfs and Ferry's client do; Linux tries to keep the port but
cannot always).

The checksum covers the call's first ``CHECKSUM_HEAD`` bytes and its last
``CHECKSUM_TAIL``: the RPC header and credential, every argument of a call other than a
large WRITE, and for a WRITE its file handle, offset, count and the start and end of its
data. knfsd sums the first 256 bytes of the arguments (``RC_CSUMLEN``) with the length
for the same reason: summing a whole 1 MiB WRITE would cost about 0.2-0.5 ms, on every
WRITE, to tell apart only two WRITEs from one host with the same XID, procedure, file,
offset and length whose data differ in the middle alone.

Sans-IO: the cache stores bytes under keys, reads a clock it is given, and holds the lock
it is given (for dictionary work only): the server passes a ``threading.Lock``, as calls run
on several threads; without one the cache is for one thread.

Life of an entry: ``begin`` -> NEW (run the call), IN_PROGRESS (the original is still
running: drop the retransmission, the original's reply answers it) or a cached reply
(send it again). ``finish`` stores the reply; ``abandon`` forgets a call whose outcome
must not be replayed. Bounded by entries and bytes, least recently used evicted first;
entries older than ``max_age`` are never answered from.

``ReplyCache`` is the contract the ``Dispatcher`` uses. ``DuplicateRequestCache`` here is
the in-process one (an ordered dict under the lock it is given); worker processes of one server
share ``ferry.server.shared_drc.SharedReplyCache`` instead, which keeps the same rules.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import enum
import time
import zlib
from collections.abc import Callable, Collection

from ferry.rpc.message import CallHeader

Buffer = bytes | bytearray | memoryview
ClientKey = tuple[str, ...] | tuple[str, int]
Key = tuple[str, ClientKey, int, int, int, int, int, int]
"""(transport, client, xid, prog, vers, proc, call length, crc32 of its head and tail)."""

CHECKSUM_HEAD = 1024
"""Bytes summed from the start of a call: the header, a credential (up to 400 bytes of
AUTH_SYS), a handle (up to 64) and the arguments after it, with room to spare."""
CHECKSUM_TAIL = 256
"""Bytes summed from the end of a longer call: the end of a WRITE's data."""

DEFAULT_ENTRIES = 4096
DEFAULT_BYTES = 8 << 20
DEFAULT_AGE = 120.0  # seconds; clients give up retransmitting long before (timeo x retrans)


class Lookup(enum.Enum):
    NEW = "new"
    IN_PROGRESS = "in-progress"
    HIT = "hit"


@dataclasses.dataclass(slots=True)
class Stats:
    """Counters for ``ferry`` logs and tests: hits replayed, misses run, drops."""

    hits: int = 0
    misses: int = 0
    in_progress: int = 0
    evictions: int = 0
    expired: int = 0


@dataclasses.dataclass(slots=True)
class _Entry:
    reply: bytes | None  # None while the call runs
    stamp: float  # when it began; replies expire ``max_age`` after


class ReplyCache(abc.ABC):
    """What the dispatcher needs of a duplicate request cache, wherever it keeps replies."""

    def __init__(self, procedures: Collection[tuple[int, int, int]]) -> None:
        self.procedures = frozenset(procedures)

    def wants(self, header: CallHeader) -> bool:
        """True for the procedures whose replies are kept (the non-idempotent ones)."""
        return (header.prog, header.vers, header.proc) in self.procedures

    @property
    @abc.abstractmethod
    def stats(self) -> Stats:
        """Counters since the cache was made."""

    @abc.abstractmethod
    def begin(self, key: Key) -> tuple[Lookup, bytes | None]:
        """Look a call up; NEW also records it as in progress."""

    @abc.abstractmethod
    def finish(self, key: Key, reply: bytes) -> None:
        """Keep the reply of a call begun with NEW (stored even if evicted meanwhile)."""

    @abc.abstractmethod
    def abandon(self, key: Key) -> None:
        """Forget a call (its reply must not be replayed, e.g. a server fault)."""


class DuplicateRequestCache(ReplyCache):
    """Replies of non-idempotent calls, by (client, xid, prog, vers, proc, checksum), in
    this process's memory."""

    def __init__(
        self,
        procedures: Collection[tuple[int, int, int]],
        max_entries: int = DEFAULT_ENTRIES,
        max_bytes: int = DEFAULT_BYTES,
        max_age: float = DEFAULT_AGE,
        clock: Callable[[], float] = time.monotonic,
        lock: contextlib.AbstractContextManager[object] | None = None,
    ) -> None:
        super().__init__(procedures)
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.clock = clock
        self._stats = Stats()
        self.bytes = 0
        self._entries: collections.OrderedDict[Key, _Entry] = collections.OrderedDict()
        self._lock = lock if lock is not None else contextlib.nullcontext()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def stats(self) -> Stats:
        return self._stats

    def begin(self, key: Key) -> tuple[Lookup, bytes | None]:
        now = self.clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and now - entry.stamp > self.max_age:
                self._drop(key)
                self._stats.expired += 1
                entry = None
            if entry is None:
                self._stats.misses += 1
                self._entries[key] = _Entry(None, now)
                self._shrink(now)
                return Lookup.NEW, None
            self._entries.move_to_end(key)
            if entry.reply is None:
                self._stats.in_progress += 1
                return Lookup.IN_PROGRESS, None
            self._stats.hits += 1
            return Lookup.HIT, entry.reply

    def finish(self, key: Key, reply: bytes) -> None:
        with self._lock:
            self._drop(key)
            self._entries[key] = _Entry(reply, self.clock())
            self.bytes += len(reply)
            self._shrink(self.clock())

    def abandon(self, key: Key) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None and entry.reply is not None:
            self.bytes -= len(entry.reply)

    def _shrink(self, now: float) -> None:
        """Evict expired entries at the LRU end, then the least recent until in bounds."""
        entries = self._entries
        while entries:
            key, oldest = next(iter(entries.items()))
            expired = now - oldest.stamp > self.max_age
            if not expired and len(entries) <= self.max_entries and self.bytes <= self.max_bytes:
                return
            self._drop(key)
            if expired:
                self._stats.expired += 1
            else:
                self._stats.evictions += 1


def client_key(client: object, by_port: bool) -> ClientKey:
    """Who sent a call: (host, port) for datagrams, the host alone for connections."""
    if isinstance(client, tuple) and len(client) >= 2:
        return (str(client[0]), int(client[1])) if by_port else (str(client[0]),)
    return (str(client),)


def call_key(transport: str, client: ClientKey, header: CallHeader, record: Buffer) -> Key:
    """The cache key of a call: who, which XID and procedure, its length and a checksum of
    its head and tail (CRC-32 of at most 1.25 KiB, whatever the call's size; see the
    module on why not the whole call)."""
    size = len(record)
    if size <= CHECKSUM_HEAD:  # a small call: all of it
        crc = zlib.crc32(record)
    else:
        view = memoryview(record)
        crc = zlib.crc32(view[:CHECKSUM_HEAD])
        crc = zlib.crc32(view[max(CHECKSUM_HEAD, size - CHECKSUM_TAIL) :], crc)
    return (transport, client, header.xid, header.prog, header.vers, header.proc, size, crc)

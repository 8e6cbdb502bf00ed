"""Which calls the event loop answers itself, without a hop to a call thread: the policy.

A call handed to a call thread costs two thread hops (the loop puts it on the pool's
queue, a call thread takes it, the reply comes back with ``call_soon_threadsafe``): about
10 µs of CPU and several futex calls and context switches per call, more than a GETATTR
answered from the kernel's caches. So the async server runs on its loop thread the calls
that wait on no slow IO, and hands the rest to its threads:

* calls that touch no backend: the NULL procedure of every program, MOUNT EXPORT and the
  portmapper's lookups (``NO_BACKEND``);
* metadata reads (``METADATA``: GETATTR, LOOKUP, ACCESS, READLINK, FSSTAT, FSINFO,
  PATHCONF), when every export's backend says its metadata calls are prompt
  (``Backend.prompt_metadata``: the local and memory backends; not CephFS or S3, whose
  calls may wait on the network: CephFS runs its own inline calls under a ``Deadline``);
* READs (``READS``), when every backend can read without waiting
  (``Backend.nowait_reads``: the local backend's ``preadv(RWF_NOWAIT)`` answers from the
  page cache or says it would wait, the memory backend's data is in memory): tried on
  the loop, and if the data is not all cached (``WouldBlock``) run again on a thread.
  Up to 32 KiB are copied; bigger ones are sent from the file with ``sendfile`` only when
  the page cache holds the whole range (``Backend.read_segment_nowait``);
* UNSTABLE WRITEs of up to 32 KiB (``WRITES``), when every backend writes promptly
  (``Backend.prompt_writes``: the local backend's ``pwrite`` copies into the page cache,
  the memory backend's into memory): tried on the loop; a stable or bigger WRITE runs on
  a thread (its sync waits on the disk): the route reads its count and stable_how from
  the record (``small_unstable``), and the service says ``WouldBlock`` before it does
  anything should one reach the loop anyway. Buffered ``RWF_NOWAIT`` writes are not
  supported on ext4, so an UNSTABLE WRITE the kernel throttles (writeback behind) waits
  on the loop: the tripwire's case.

Everything else (stable and big WRITEs, COMMIT, READDIR, READDIRPLUS, namespace changes,
MOUNT MNT) goes to the threads: it may wait on a disk, or run long enough to hold up
other clients.

The guard: the loop serves every connection, so an inline call that blocks (a cold inode
on a slow disk, a stuck device) stalls them all. Inline calls run under a ``Tripwire``:
once one has taken longer than ``TRIP`` seconds, metadata calls (still watched there,
with the longer limit ``STUCK``), READs and UNSTABLE WRITEs go to the threads until
none has been slow for ``QUIET`` seconds. One slow call at a time is the price; a disk
that stays stuck keeps them on the threads. ``TRIP`` is above Python's GIL switch interval (5 ms),
so a call that only waited for the GIL does not trip it.

The decision reads the program, version and procedure at fixed offsets of the record
(RFC 5531 section 9: xid, msg_type, rpcvers, prog, vers, proc), and for a WRITE its count
and stable_how past the credential, verifier and handle, before any decoding. It is made
once per server (``App.inline_policy``; ``inline_calls = false`` in the config or
``ferry serve --no-inline`` turns it off: every call on the threads, as before).
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterable

from ferry.backends.base import Backend
from ferry.nfs3.const import (
    MOUNT_PROGRAM,
    MOUNT_V3,
    NFS_PROGRAM,
    NFS_V3,
    MountProc,
    NfsProc,
    StableHow,
)
from ferry.nfs3.service import NOWAIT_WRITE_MAX
from ferry.rpc.dispatch import Buffer
from ferry.rpc.portmap import PMAP_PROGRAM, PMAP_V2, PmapProc
from ferry.tripwire import Tripwire

__all__ = [
    "INLINE",
    "METADATA",
    "NO_BACKEND",
    "READS",
    "THREAD",
    "TRY",
    "WATCHED",
    "WRITES",
    "InlinePolicy",
]

log = logging.getLogger("ferry.server")

Key = tuple[int, int, int]
"""(program, version, procedure)."""

NO_BACKEND: frozenset[Key] = frozenset(
    [(NFS_PROGRAM, NFS_V3, NfsProc.NULL)]
    + [(MOUNT_PROGRAM, MOUNT_V3, p) for p in (MountProc.NULL, MountProc.EXPORT)]
    + [(PMAP_PROGRAM, PMAP_V2, p) for p in (PmapProc.NULL, PmapProc.GETPORT, PmapProc.DUMP)]
)
"""Calls answered from the server's own tables: inline whenever inlining is on."""

METADATA: frozenset[Key] = frozenset(
    (NFS_PROGRAM, NFS_V3, p)
    for p in (
        NfsProc.GETATTR,
        NfsProc.LOOKUP,
        NfsProc.ACCESS,
        NfsProc.READLINK,
        NfsProc.FSSTAT,
        NfsProc.FSINFO,
        NfsProc.PATHCONF,
    )
)
"""Metadata reads: inline when the backends are prompt and the tripwire is clear."""

READS: frozenset[Key] = frozenset([(NFS_PROGRAM, NFS_V3, NfsProc.READ)])
"""Tried on the loop when the backends read without waiting and the tripwire is clear."""

WRITES: frozenset[Key] = frozenset([(NFS_PROGRAM, NFS_V3, NfsProc.WRITE)])
"""Tried on the loop when the backends write promptly and the tripwire is clear."""

TRIP = 0.010
"""Seconds an inline call may take before metadata calls go to the threads."""
QUIET = 2.0
"""Seconds without a slow metadata call before they run inline again."""
STUCK = 0.5
"""Seconds a metadata call sent to a call thread while tripped may take before it keeps
the wire tripped (on a thread, a call also waits for the GIL and its turn: tens of ms
under load are no sign of a slow disk)."""

THREAD, INLINE, WATCHED, TRY = 0, 1, 2, 3
"""Routes: a call thread; the loop (under the tripwire); a call thread, under the tripwire
(a metadata call while it is tripped); the loop, and a call thread if it would wait."""

_CALL = struct.Struct(">III")
_AT = 12  # prog, vers, proc follow xid, msg_type and rpcvers


_U32 = struct.Struct(">I")
_COUNT_STABLE = struct.Struct(">II")
_AUTH_AT = 24  # the credential follows the call header's six words


def small_unstable(record: Buffer) -> bool:
    """Whether a WRITE record asks for an UNSTABLE write of at most ``NOWAIT_WRITE_MAX``
    bytes: its count and stable_how (RFC 1813 section 3.3.7) read past the credential,
    verifier and file handle (RFC 5531 section 9), before any decoding, so a stable WRITE
    (the Linux client sends FILE_SYNC when one WRITE flushes a file) goes to a thread at
    once rather than being decoded on the loop only to say ``WouldBlock`` (about 12 µs).
    The service decides for certain; a record too short or odd answers False."""
    try:
        pos = _AUTH_AT
        for _ in range(2):  # opaque_auth credential, then verifier: flavor, length, body
            (n,) = _U32.unpack_from(record, pos + 4)
            pos += 8 + n + (-n & 3)
        (n,) = _U32.unpack_from(record, pos)  # nfs_fh3
        count, stable = _COUNT_STABLE.unpack_from(record, pos + 4 + n + (-n & 3) + 8)
    except struct.error:
        return False
    return bool(stable == StableHow.UNSTABLE and count <= NOWAIT_WRITE_MAX)


class InlinePolicy:
    """Routes each call record to the loop or to the threads (see the module)."""

    def __init__(
        self,
        always: frozenset[Key] = frozenset(),
        prompt: frozenset[Key] = frozenset(),
        tried: frozenset[Key] = frozenset(),
        trip: float = TRIP,
        quiet: float = QUIET,
        stuck: float = STUCK,
    ) -> None:
        self.always = always
        self.prompt = prompt
        self.tried = tried
        self.stuck = stuck
        self.wire = Tripwire(
            trip, quiet, "event loop", then="metadata calls go to the call threads",
            logger=log, level=logging.INFO,
        )  # fmt: skip

    @classmethod
    def for_backends(cls, enabled: bool, backends: Iterable[Backend]) -> InlinePolicy:
        """The policy of a server of these backends: off, calls without a backend only, or
        those, metadata when every backend is prompt, READs tried when every backend
        reads without waiting and small UNSTABLE WRITEs when every one writes promptly."""
        if not enabled:
            return cls()
        backends = list(backends)
        prompt = all(b.prompt_metadata for b in backends)
        tried = READS if all(b.nowait_reads for b in backends) else frozenset()
        if all(b.prompt_writes for b in backends):
            tried |= WRITES
        return cls(NO_BACKEND, METADATA if prompt else frozenset(), tried)

    def route(self, record: Buffer) -> int:
        """``INLINE``, ``TRY``, ``THREAD`` or ``WATCHED`` for a call record (hot)."""
        try:
            key = _CALL.unpack_from(record, _AT)
        except struct.error:  # too short to be a call: the dispatcher drops it at once
            return INLINE
        if key in self.always:
            return INLINE
        if key in self.prompt:
            return INLINE if time.monotonic() >= self.wire.until else WATCHED
        if key in self.tried:
            if time.monotonic() < self.wire.until or (key in WRITES and not small_unstable(record)):
                return THREAD
            return TRY
        return THREAD

    def close(self) -> None:
        self.wire.close()

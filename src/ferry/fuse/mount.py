"""``ferry mount``: an NFSv3 export as a local directory, through FUSE (pyfuse3).

This module owns a mount's life; the request handlers are ``fuseops.NfsOperations``.

* Start: connect the client (``client.retry``: hard, by default waiting forever for a
  server that went away, or for ``--retry-for`` seconds; soft: EIO after ``retrans``
  resends), GETATTR the root, mount, serve pyfuse3's main loop on the client's loop. The
  URL must name a directory: a missing export or path, or a file, is an error
  (``client.exports``).
* Stop: an unmount (``fusermount3 -u``) ends the main loop. SIGINT/SIGTERM stop it too
  (``pyfuse3.terminate``), then unmount and flush what the kernel left open; whatever is
  still running STOP_GRACE seconds after the first signal, or at a second one, is
  abandoned: FUSE requests are answered EIO, the final flush is dropped.
* Stuck requests: a process waiting in a request the daemon has read cannot be killed (the
  kernel waits for the answer), so a hard mount of a server that is gone would hold it
  forever, and a lazy unmount (``fusermount3 -u -z``) would not free it. Once the mount
  point has left the mount table, requests older than STOP_GRACE seconds are abandoned.
* Tuning: the kernel's read-ahead for the mount (``set_read_ahead``), glibc keeping freed
  buffers (``ferry.server.malloc``; up to what COMMIT frees at once), read-ahead chunks
  on huge pages (``client.buffers``), pyfuse3's asyncio shim made race-free
  (``enable_asyncio``); on request, no page cache (``direct_io``: one copy fewer per
  read, no shared mmap).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import re
import select
import signal
from collections.abc import Callable
from typing import Any

import pyfuse3
import pyfuse3.asyncio

from ferry.client.nfs import AuthSys
from ferry.client.paths import AsyncNfsClient
from ferry.client.url import parse_url
from ferry.fuse.ops import NfsOperations
from ferry.fuse.options import MountOptions
from ferry.server.malloc import TRIM, keep_freed_buffers

log = logging.getLogger("ferry.fuse")

STOP_GRACE = 5.0  # seconds a request may keep running once the mount is going away
WATCH_EVERY = 1.0  # seconds between looks at the mount table
SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def mount(
    url: str,
    mountpoint: str,
    options: MountOptions,
    ready: Callable[[], None] | None = None,
) -> None:
    """Mount ``url`` on ``mountpoint`` (an absolute path) and serve it until unmounted or
    signalled (see the module doc); ``ready`` is called once the mount is up."""
    u = parse_url(url)
    if u.readonly:  # the URL's libnfs "readonly": as --read-only
        options = dataclasses.replace(options, read_only=True)
    base = AuthSys()
    uid = options.uid if options.uid is not None else u.uid
    gid = options.gid if options.gid is not None else u.gid
    auth = AuthSys(base.uid if uid is None else uid, base.gid if gid is None else gid)
    client = await AsyncNfsClient.connect(u, auth=auth, attr_cache=0, **options.retry(u))
    try:
        if client.subpath:  # the URL names a file: not something to mount
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), u.path)
        enable_asyncio()
        # Freed memory kept for reuse, not faulted in afresh (zeroed pages cost a quarter of
        # the mount's CPU in writes): up to write_behind + commit_every bytes written are
        # freed at once, by each COMMIT.
        files = client.file_options
        keep_freed_buffers(TRIM + files.write_behind + files.commit_every)
        root = await client.nfs.getattr(client.root)
        per_caller = uid is None and gid is None  # no identity given: each caller's own
        ops = NfsOperations(client, root, options, per_caller)
        if options.read_ahead_kib:
            ops.after_init = lambda: set_read_ahead(mountpoint, options.read_ahead_kib)
        pyfuse3.init(ops, mountpoint, options.fuse_options(f"{u.host}:{u.path}"))
        await _serve(ops, mountpoint, ready)
    finally:
        await client.close()


class _Shutdown:
    """Signals, and abandoning what is still running (see the module doc)."""

    def __init__(self, ops: NfsOperations) -> None:
        self.ops, self.signals, self.abandoned = ops, 0, False
        self.loop = asyncio.get_running_loop()
        self.closing: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        for sig in SIGNALS:
            self.loop.add_signal_handler(sig, self.signal)

    def signal(self) -> None:
        self.signals += 1
        if self.signals == 1:
            pyfuse3.terminate()  # the main loop ends once running requests are answered
            self._timer = self.loop.call_later(STOP_GRACE, self.abandon)
        else:
            self.abandon()

    def abandon(self) -> None:
        self.abandoned = True
        n = self.ops.running.abandon()
        if n:
            log.warning("abandoning %d request(s) still running", n)
        if self.closing is not None:
            self.closing.cancel()

    async def close_files(self) -> None:
        """Flush and close what the kernel left open, unless already abandoned."""
        if self.abandoned:
            return
        self.closing = self.loop.create_task(self.ops.close_all())
        try:
            await self.closing
        except asyncio.CancelledError:
            if not self.abandoned:
                raise
            log.warning("unmounted without flushing the files left open")

    def uninstall(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig in SIGNALS:
            self.loop.remove_signal_handler(sig)


async def _serve(ops: NfsOperations, mountpoint: str, ready: Callable[[], None] | None) -> None:
    shutdown = _Shutdown(ops)
    watcher = asyncio.get_running_loop().create_task(_watch_unmount(ops, mountpoint))
    try:
        if ready is not None:
            ready()
        await pyfuse3.main()
    finally:
        watcher.cancel()
        pyfuse3.close(unmount=True)
        try:
            await shutdown.close_files()
        finally:
            shutdown.uninstall()


async def _watch_unmount(ops: NfsOperations, mountpoint: str) -> None:
    """Once the mount point has left the mount table, abandon requests running longer than
    STOP_GRACE: a lazily unmounted file system lives as long as a process waits in it.
    Runs until cancelled at the end of the mount."""
    while True:
        await asyncio.sleep(WATCH_EVERY)
        if len(ops.running) and not is_mounted(mountpoint):
            ops.running.abandon(older_than=STOP_GRACE)


def enable_asyncio() -> None:
    """pyfuse3's asyncio mode, race-free: its shim sets a reader's future both when the FUSE
    device turns readable and in ``terminate``, without looking whether it is done, so a
    request arriving as a signal stops the mount logged an InvalidStateError traceback.
    The same two functions here set a future only while it is pending. And a request
    already waiting is taken at once: one poll(2) instead of registering the device with
    the event loop and taking it off again (the kernel's read-ahead sends requests two at
    a time)."""
    pyfuse3.asyncio.enable()
    shim: Any = pyfuse3.asyncio
    waiting: dict[int, set[asyncio.Future[None]]] = shim._read_futures
    pollers: dict[int, select.poll] = {}

    def pending(fd: int) -> bool:
        if (poller := pollers.get(fd)) is None:
            poller = pollers[fd] = select.poll()
            poller.register(fd, select.POLLIN)
        return any(ev == select.POLLIN for _, ev in poller.poll(0))

    async def wait_readable(fd: int) -> None:
        if pending(fd):
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        waiting.setdefault(fd, set()).add(future)
        try:
            loop.add_reader(fd, _settle, future, None)
            future.add_done_callback(lambda _: loop.remove_reader(fd))
            await future
        finally:
            waiting[fd].discard(future)
            if not waiting[fd]:
                del waiting[fd]

    def notify_closing(fd: int) -> None:
        for future in waiting.get(fd, ()):
            _settle(future, shim.ClosedResourceError())

    shim.wait_readable, shim.notify_closing = wait_readable, notify_closing


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def mount_device(mountpoint: str, table: str = "/proc/self/mountinfo") -> str | None:
    """The ``major:minor`` of what is mounted on ``mountpoint`` (the topmost mount), None if
    nothing is. Reads the mount table only: a look at the mount itself could wait on this
    very process."""
    found = None
    with open(table) as f:
        for line in f:
            fields = line.split(" ")  # proc(5): id, parent, major:minor, root, mount point
            if len(fields) > 4 and _UNESCAPE.sub(_octal, fields[4]) == mountpoint:
                found = fields[2]
    return found


def is_mounted(mountpoint: str, table: str = "/proc/self/mountinfo") -> bool:
    """Whether ``mountpoint`` is in the mount table (True if the table cannot be read)."""
    try:
        return mount_device(mountpoint, table) is not None
    except OSError:
        return True


def set_read_ahead(mountpoint: str, kib: int) -> bool:
    """Set the kernel's read-ahead for the mount (its read_ahead_kb in sysfs). libfuse leaves
    the kernel's default, 128 KiB, so a sequential reader's data comes in 128 KiB requests,
    one at a time; more lets the kernel ask for rsize-sized pieces, several in flight.
    Needs write access to /sys (root): without it the default stays (False)."""
    try:
        dev = mount_device(mountpoint)
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb", "w") as f:
            f.write(str(kib))
    except OSError as exc:
        log.info("read-ahead left at the kernel's default: %s", exc)
        return False
    return True


_UNESCAPE = re.compile(r"\\([0-7]{3})")  # fstab(5): space, tab, newline, backslash


def _octal(m: re.Match[str]) -> str:
    return chr(int(m[1], 8))

"""The FUSE request handlers of ``ferry mount``: the kernel's view mapped onto the client's.

* Bridge: pyfuse3 runs in its asyncio mode on the event loop of the ``AsyncNfsClient``, so
  handlers await client coroutines directly: no threads.
* Identity: each request's NFS calls carry its caller's uid, gid and groups (``Callers``,
  through the client's ``acting_as``), as with the kernel NFS client; reads, writes and
  closes, for which FUSE names no caller, carry the opener's (kept per kernel handle).
  A mount given ``--uid/--gid`` sends that one identity for everyone.
* Inodes: inode number = NFS fileid, with the handle kept in ``InodeTable``. The export's
  root is FUSE's inode 1 (an object whose fileid is 1 takes the root's fileid instead).
  Every reply that hands the kernel an entry counts one lookup; ``forget`` drops them.
* Open files: one ``AsyncFile`` per inode, shared by every open of it (reads see writes
  made through another descriptor), used under a lock; it gives read-ahead and
  write-behind. ``flush`` (each close) and ``fsync`` COMMIT; the last ``release`` closes.
  ``open`` GETATTRs (close-to-open: the kernel's cached pages are dropped if the file
  changed since its previous open, kept if not) and truncates for O_TRUNC (libfuse asks
  the kernel for atomic O_TRUNC, which leaves it to us). An open file that is unlinked,
  or renamed over, is first renamed to a hidden name and removed at its last release, as
  NFS clients do ("silly rename").
* Directories: ``.`` and ``..`` (from where the mount saw each directory: looked up,
  listed, made, renamed), then READDIRPLUS pages; FUSE's offsets are positions, each
  mapped to the NFS cookie to resume from (``_Dir.cookies``).
* Errors: ``NfsError`` -> errno (``errors.errno_from_status``); an RPC failure (a soft
  mount giving up, a connection that cannot be re-established) -> EIO.
* Stuck requests: once the daemon has read a request, the kernel waits for its answer and
  not even SIGKILL ends the wait. Running handlers are tracked (``Running``) so that the
  mount can answer EIO to those it gives up on (see ``fusemount``).
"""

from __future__ import annotations

import array
import asyncio
import dataclasses
import errno
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
from pyfuse3 import EntryAttributes, FileInfo, FUSEError, RequestContext, SetattrFields

from ferry.client.files import AsyncFile, OpenMode
from ferry.client.nfs import AuthSys, acting_as
from ferry.client.paths import AsyncNfsClient
from ferry.errors import NfsError, RpcError, errno_from_status
from ferry.nfs3 import types as t
from ferry.nfs3.const import CreateMode, Ftype3, Nfsstat3
from ferry.rpc.message import OpaqueAuth
from ferry.vocab import FTYPE_OF, MKNOD_TYPES, S_IFMT_OF, Attr, SetAttr

if TYPE_CHECKING:
    from ferry.fuse.options import MountOptions

log = logging.getLogger("ferry.fuse")

P = ParamSpec("P")
T = TypeVar("T")
ROOT = pyfuse3.ROOT_INODE
DOTS = 2  # readdir offsets 1 and 2 are "." and ".."; the server's entries come after

SETID = stat.S_ISUID | stat.S_ISGID
DIR_AFTER_FOR = 0.2
"""Seconds a directory's attributes from a reply to our own change answer the kernel's
GETATTR of it (``NfsOperations._changed``): it asks right after the change."""
_SHARED = OpenMode(True, True, False, False, False, False, False)
_READONLY = dataclasses.replace(_SHARED, writable=False)


class Running:
    """The handlers running now (pyfuse3 runs each request in a task of its own) and since
    when, so that stuck ones can be abandoned: cancelled and answered EIO."""

    def __init__(self) -> None:
        self._since: dict[asyncio.Task[Any], float] = {}
        self._abandoned: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._since)

    def start(self, task: asyncio.Task[Any]) -> None:
        self._since[task] = time.monotonic()

    def finish(self, task: asyncio.Task[Any]) -> bool:
        """Forget ``task``; whether it was abandoned."""
        self._since.pop(task, None)
        if task not in self._abandoned:
            return False
        self._abandoned.discard(task)
        return True

    def abandon(self, older_than: float = 0.0) -> int:
        """Cancel the handlers running for at least ``older_than`` seconds; how many."""
        now, n = time.monotonic(), 0
        for task, since in self._since.items():
            if now - since >= older_than and task not in self._abandoned:
                self._abandoned.add(task)
                task.cancel()
                n += 1
        return n


def _errors(
    fn: Callable[Concatenate[NfsOperations, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[NfsOperations, P], Coroutine[Any, Any, T]]:
    """Every handler's failure becomes FUSEError(errno): anything else would stop pyfuse3.
    An abandoned handler (``Running.abandon``) answers EIO."""

    async def wrapper(self: NfsOperations, /, *args: P.args, **kwargs: P.kwargs) -> T:
        task = asyncio.current_task()
        if task is not None:
            self.running.start(task)
        for arg in args:  # handlers with a RequestContext: act as that caller
            if isinstance(arg, RequestContext):
                acting_as.set(self.identity(arg))
        try:
            return await fn(self, *args, **kwargs)
        except asyncio.CancelledError:
            if task is None or not self.running.finish(task):
                raise
            task.uncancel()
            log.warning("%s: abandoned (no answer from the server)", fn.__name__)
            raise FUSEError(errno.EIO) from None
        except FUSEError:
            raise
        except NfsError as exc:
            raise FUSEError(errno_from_status(exc.status)) from None
        except RpcError as exc:  # also timeouts and lost connections (OSError subclasses)
            log.warning("%s: %s", fn.__name__, exc)
            raise FUSEError(errno.EIO) from None
        except OSError as exc:
            raise FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise FUSEError(errno.EIO) from None
        finally:
            if task is not None:
                self.running.finish(task)

    wrapper.__name__ = fn.__name__
    return wrapper


class Callers:
    """The AUTH_SYS credential of each process making requests: its uid, gid and (from
    /proc) supplementary groups, as the kernel NFS client sends them; kept for a second
    per process so that a busy reader does not cost a /proc read per request."""

    TTL = 1.0

    def __init__(self) -> None:
        self.machine = AuthSys().machine
        self._seen: dict[tuple[int, int, int], tuple[float, OpaqueAuth]] = {}

    def credential(self, ctx: RequestContext) -> OpaqueAuth:
        key, now = (ctx.pid, ctx.uid, ctx.gid), time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and seen[0] > now:
            return seen[1]
        if len(self._seen) >= 4096:
            self._seen.clear()
        cred = AuthSys(ctx.uid, ctx.gid, groups_of(ctx.pid), self.machine).credential()
        self._seen[key] = (now + self.TTL, cred)
        return cred


def groups_of(pid: int) -> tuple[int, ...]:
    """A process's supplementary groups (proc(5): "Groups:" in status); none if it is gone
    or not in our pid namespace (FUSE gives pid 0 then)."""
    if pid <= 0:
        return ()
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Groups:"):
                    return tuple(int(g) for g in line.split()[1:])
    except (OSError, ValueError):
        pass
    return ()


def _dot(inode: int) -> EntryAttributes:
    """The entry for ``.`` or ``..``: the kernel takes only its inode and type (it neither
    caches it nor counts a lookup for it)."""
    e = EntryAttributes()
    e.st_ino, e.st_mode = inode, stat.S_IFDIR | 0o755
    return e


class InodeTable:
    """Inode number <-> NFS handle, with the kernel's lookup count per inode, and where
    each directory the kernel knows sits (for its ``..`` entry)."""

    def __init__(self, root_fh: bytes, root_fileid: int) -> None:
        self.root_fileid = root_fileid
        self._fh: dict[int, bytes] = {ROOT: root_fh}
        self._lookups: dict[int, int] = {}
        self._versions: dict[int, tuple[int, int, int]] = {}  # see ``unchanged``
        self._place: dict[int, tuple[int, bytes]] = {}  # directory -> (parent, name)
        self._at: dict[tuple[int, bytes], int] = {}  # (parent, name) -> directory

    def inode(self, fileid: int) -> int:
        if fileid == self.root_fileid:
            return ROOT
        return self.root_fileid if fileid == ROOT else fileid

    def fh(self, inode: int) -> bytes:
        try:
            return self._fh[inode]
        except KeyError:
            raise FUSEError(errno.ESTALE) from None

    def remember(self, fileid: int, fh: bytes) -> int:
        """The inode for an entry handed to the kernel (one more lookup)."""
        inode = self.inode(fileid)
        if inode != ROOT:
            self._fh[inode] = fh  # a reused fileid: the newest handle wins
            self._lookups[inode] = self._lookups.get(inode, 0) + 1
        return inode

    def forget(self, inode: int, n: int) -> None:
        left = self._lookups.get(inode, 0) - n
        if inode == ROOT:
            return
        if left > 0:
            self._lookups[inode] = left
        else:
            self._lookups.pop(inode, None)
            self._fh.pop(inode, None)
            self._versions.pop(inode, None)
            if (place := self._place.pop(inode, None)) is not None and self._at.get(place) == inode:
                del self._at[place]

    def placed(self, inode: int, parent: int, name: bytes) -> None:
        """Directory ``inode`` is ``name`` in ``parent`` (it was looked up, made or listed)."""
        if inode != ROOT:
            self._place[inode] = (parent, name)
            self._at[parent, name] = inode

    def moved(self, parent: int, name: bytes, new_parent: int, new_name: bytes) -> None:
        """A rename: a directory known at the old place is now at the new one."""
        inode = self._at.pop((parent, name), None)
        self._at.pop((new_parent, new_name), None)  # what it replaced is gone
        if inode is not None:
            self.placed(inode, new_parent, new_name)

    def parent(self, inode: int) -> int:
        """The directory holding directory ``inode``: its ``..`` (the export root's own, as
        for the root of any file system; and for one not placed, which the kernel never
        names, itself)."""
        place = self._place.get(inode)
        return place[0] if place is not None else inode

    def unchanged(self, inode: int, attr: Attr) -> bool:
        """Whether the file's size, mtime and ctime are those of its previous open (then
        the pages the kernel cached since are still the file's); records them. ctime moves
        with every change, even one that puts the old size and mtime back."""
        version = (attr.size, attr.mtime_ns, attr.ctime_ns)
        same = self._versions.get(inode) == version
        self._versions[inode] = version
        return same

    def __len__(self) -> int:
        return len(self._fh)


@dataclasses.dataclass(slots=True)
class _Open:
    file: AsyncFile
    lock: asyncio.Lock
    count: int = 1
    silly: tuple[bytes, str] | None = None  # (directory, hidden name) to remove at the end
    reply: bytearray = dataclasses.field(default_factory=bytearray)  # see ``read``


@dataclasses.dataclass(slots=True)
class _Handle:
    """One open of a file: which inode, and who opened it (reads and writes act as them)."""

    inode: int
    cred: OpaqueAuth | None


@dataclasses.dataclass(slots=True)
class _Dir:
    inode: int
    fh: bytes
    cred: OpaqueAuth | None
    verf: bytes = t.COOKIEVERF_ZERO
    # The server's cookie after each entry listed, by position: the entry at position k
    # has directory offset DOTS + k + 1 (cookies are the server's to choose, up to 2**64).
    cookies: array.array[int] = dataclasses.field(default_factory=lambda: array.array("Q"))
    # Where the last readdir stopped (the kernel's buffer full): the entries of its page
    # not given yet, whether that page was the last, and the next page, asked for while
    # that one was given (``ahead``: the cookie it starts after, and the call). Valid only
    # for a readdir that continues at ``len(cookies)``; dropped otherwise.
    rest: Sequence[t.Entry] = ()
    rest_eof: bool = False
    resumable: bool = False
    ahead: tuple[int, asyncio.Task[t.ReaddirRes]] | None = None

    def drop_ahead(self) -> None:
        """Forget the page asked for ahead (cancelled, or its outcome retrieved)."""
        if self.ahead is not None:
            task, self.ahead = self.ahead[1], None
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: not logged as never retrieved


class NfsOperations(pyfuse3.Operations):
    """The FUSE request handlers over one mounted ``AsyncNfsClient``."""

    def __init__(
        self, client: AsyncNfsClient, root: Attr, options: MountOptions, per_caller: bool = False
    ) -> None:
        super().__init__()
        self.client, self.options = client, options
        self.callers = Callers() if per_caller else None  # else: the client's one identity
        self.inodes = InodeTable(client.root, root.fileid)
        self.running = Running()
        self.after_init: Callable[[], object] | None = None  # once the kernel has INIT's reply
        self._open: dict[int, _Open] = {}  # by inode
        self._handles: dict[int, _Handle] = {}  # the kernel's file handles
        self._dirs: dict[int, _Dir] = {}
        self._ids = itertools.count(1)
        self._dir_after: dict[int, tuple[Attr, float]] = {}  # see ``_changed``

    def init(self) -> None:
        """Called while INIT is answered: ``after_init`` runs once the kernel has the answer
        (it resets some settings, the read-ahead among them, from it)."""
        if self.after_init is not None:
            asyncio.get_running_loop().call_soon(self.after_init)

    # -- helpers --------------------------------------------------------------------------

    def identity(self, ctx: RequestContext) -> OpaqueAuth | None:
        """The credential calls for ``ctx``'s request carry (None: the client's own)."""
        return self.callers.credential(ctx) if self.callers is not None else None

    def _entry(self, inode: int, attr: Attr) -> EntryAttributes:
        e = EntryAttributes()
        e.st_ino, e.generation = inode, attr.generation
        e.entry_timeout, e.attr_timeout = self.options.entry_timeout, self.options.attr_timeout
        e.st_mode = S_IFMT_OF.get(attr.type, stat.S_IFREG) | (attr.mode & 0o7777)
        e.st_nlink, e.st_uid, e.st_gid = attr.nlink, attr.uid, attr.gid
        e.st_rdev = os.makedev(*attr.rdev)
        opened = self._open.get(inode)  # write-behind: the server may not have it all yet
        e.st_size = max(attr.size, opened.file.size) if opened else attr.size
        e.st_blksize = self.client.wsize
        e.st_blocks = (attr.used + 511) // 512
        e.st_atime_ns, e.st_mtime_ns, e.st_ctime_ns = attr.atime_ns, attr.mtime_ns, attr.ctime_ns
        return e

    async def _found(self, fh: bytes, attr: Attr | None) -> EntryAttributes:
        """The entry for an object handed to the kernel (counts a lookup)."""
        attr = attr or await self.client.nfs.getattr(fh)
        return self._entry(self.inodes.remember(attr.fileid, fh), attr)

    async def _created(self, dirfh: bytes, name: bytes, res: t.CreateRes) -> EntryAttributes:
        fh = res.obj or (await self.client.nfs.lookup(dirfh, name)).object
        return await self._found(fh, res.obj_attributes)

    def _placed(self, entry: EntryAttributes, parent: int, name: bytes) -> EntryAttributes:
        if stat.S_ISDIR(entry.st_mode):
            self.inodes.placed(entry.st_ino, parent, name)
        return entry

    def _changing(self, *dirs: int) -> None:
        """Directories about to change: what ``_changed`` kept of them is old now."""
        for inode in dirs:
            self._dir_after.pop(inode, None)

    def _changed(self, inode: int, wcc: t.Wcc | None) -> None:
        """Directory ``inode`` changed by us: keep its attributes after the change (the
        reply's wcc) for the kernel's next GETATTR of it. The kernel drops what it knew
        of a directory it changed and asks again before the next change there (to check
        permissions): one round trip per file of ``tar -x`` or ``rm -r``. The Linux NFS
        client keeps such post-op attributes too. Used once, within ``DIR_AFTER_FOR``
        seconds (and attr_timeout); never with attr_timeout 0."""
        after = wcc.after if wcc is not None else None
        if after is None or self.options.attr_timeout <= 0:
            self._dir_after.pop(inode, None)
            return
        if len(self._dir_after) >= 1024:  # bounded: unused ones are old anyway
            self._dir_after.clear()
        self._dir_after[inode] = (after, time.monotonic())

    def _writable(self) -> None:
        if self.options.read_only:
            raise FUSEError(errno.EROFS)

    # -- names ----------------------------------------------------------------------------

    @_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: RequestContext) -> EntryAttributes:
        res = await self.client.nfs.lookup(self.inodes.fh(parent_inode), name)
        return self._placed(await self._found(res.object, res.obj_attributes), parent_inode, name)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, n in inode_list:
            self.inodes.forget(inode, n)

    @_errors
    async def getattr(self, inode: int, ctx: RequestContext) -> EntryAttributes:
        kept = self._dir_after.pop(inode, None)
        if kept is not None:
            age = time.monotonic() - kept[1]
            if age < min(DIR_AFTER_FOR, self.options.attr_timeout):
                return self._entry(inode, kept[0])
        return self._entry(inode, await self.client.nfs.getattr(self.inodes.fh(inode)))

    @_errors
    async def setattr(
        self,
        inode: int,
        attr: EntryAttributes,
        fields: SetattrFields,
        fh: int | None,
        ctx: RequestContext,
    ) -> EntryAttributes:
        self._writable()
        self._changing(inode)
        nfh = self.inodes.fh(inode)
        change = SetAttr(
            mode=attr.st_mode & 0o7777 if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        if change.mode is not None and await self._kills_setid(nfh, change.mode, ctx):
            change = dataclasses.replace(change, mode=None)
        opened = self._open.get(inode)
        if opened is not None:  # queued writes first: they must not undo this change
            async with opened.lock:
                await opened.file.flush()
        if fields.update_size:
            await self._set_size(inode, nfh, attr.st_size)
        after = None
        if change != SetAttr():  # its reply has the attributes after (as Linux uses them)
            after = (await self.client.nfs.setattr(nfh, change)).after
        return self._entry(inode, after or await self.client.nfs.getattr(nfh))

    async def _kills_setid(self, nfh: bytes, mode: int, ctx: RequestContext) -> bool:
        """Is this mode change the kernel clearing set-ID bits before a write or truncate by a
        caller who does not own the file (``file_remove_privs``)? The kernel checks
        permissions (``default_permissions``), so a non-owner's chmod never reaches us:
        from such a caller, a mode that is the file's own less set-ID bits can only be
        that. The server would refuse it (only the owner changes a mode) and the write
        would fail with EPERM; the server clears the bits itself when the data (or the new
        size) arrives, so the change is left out, as the Linux NFS client does."""
        if ctx.uid == 0:
            return False
        attr = await self.client.nfs.getattr(nfh)
        dropped = attr.mode & ~mode & 0o7777
        return ctx.uid != attr.uid and not mode & ~attr.mode and not dropped & ~SETID

    async def _set_size(self, inode: int, nfh: bytes, size: int) -> None:
        """Truncate or extend; through the open file if there is one (it commits what it
        queued first, so a resend can never undo the new size)."""
        opened = self._open.get(inode)
        if opened is None:
            await self.client.nfs.setattr(nfh, SetAttr(size=size))
            return
        async with opened.lock:
            await opened.file.truncate(size)

    @_errors
    async def readlink(self, inode: int, ctx: RequestContext) -> bytes:
        return await self.client.nfs.readlink(self.inodes.fh(inode))

    @_errors
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: RequestContext
    ) -> EntryAttributes:
        self._writable()
        self._changing(parent_inode)
        dirfh, perm = self.inodes.fh(parent_inode), SetAttr(mode=mode & 0o7777)
        if stat.S_ISREG(mode):
            res = await self.client.nfs.create_exclusive(dirfh, name, perm)
        else:
            kind = FTYPE_OF.get(stat.S_IFMT(mode))
            if kind is None or kind not in MKNOD_TYPES:
                raise FUSEError(errno.EINVAL)
            dev = (os.major(rdev), os.minor(rdev))
            res = await self.client.nfs.mknod(dirfh, name, kind, perm, dev)
        return await self._created(dirfh, name, res)

    @_errors
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: RequestContext
    ) -> EntryAttributes:
        self._writable()
        self._changing(parent_inode)
        dirfh = self.inodes.fh(parent_inode)
        res = await self.client.nfs.mkdir(dirfh, name, SetAttr(mode=mode & 0o7777))
        self._changed(parent_inode, res.dir_wcc)
        return self._placed(await self._created(dirfh, name, res), parent_inode, name)

    @_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        self._writable()
        self._changing(parent_inode)
        dirfh = self.inodes.fh(parent_inode)
        if not await self._hide_if_open(dirfh, name, await self._fileid_of(dirfh, name)):
            self._changed(parent_inode, await self.client.nfs.remove(dirfh, name))

    async def _fileid_of(self, dirfh: bytes, name: bytes) -> int | None:
        """The fileid of ``name`` if a file is open here (only then does it matter), else
        None; NFS errors (no such name) are raised."""
        if not self._open:
            return None
        found = await self.client.nfs.lookup(dirfh, name)
        attr = found.obj_attributes or await self.client.nfs.getattr(found.object)
        return attr.fileid if attr.type == Ftype3.REG else None

    async def _hide_if_open(self, dirfh: bytes, name: bytes, fileid: int | None) -> bool:
        """An open file keeps its data when its name goes (unlink, or a rename over it):
        as NFS clients do, rename it to a hidden name, removed at its last close ("silly
        rename"). Whether it was open and is now hidden."""
        opened = self._open.get(self.inodes.inode(fileid)) if fileid is not None else None
        if opened is None or opened.silly is not None:
            return False
        hidden = f".ferry{fileid:x}.{next(self._ids)}"
        await self.client.nfs.rename(dirfh, name, dirfh, hidden)
        opened.silly = (dirfh, hidden)
        return True

    @_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: RequestContext) -> None:
        self._writable()
        self._changing(parent_inode)
        self._changed(parent_inode, await self.client.nfs.rmdir(self.inodes.fh(parent_inode), name))

    @_errors
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: RequestContext
    ) -> EntryAttributes:
        self._writable()
        self._changing(parent_inode)
        dirfh = self.inodes.fh(parent_inode)
        res = await self.client.nfs.symlink(dirfh, name, target, SetAttr(mode=0o777))
        return await self._created(dirfh, name, res)

    @_errors
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: RequestContext,
    ) -> None:
        self._writable()
        if flags:  # RENAME_NOREPLACE / RENAME_EXCHANGE: NFSv3 has neither
            raise FUSEError(errno.EINVAL)
        self._changing(parent_inode_old, parent_inode_new)
        old, new = self.inodes.fh(parent_inode_old), self.inodes.fh(parent_inode_new)
        victim = await self._rename_victim(old, name_old, new, name_new)
        hidden = victim is not None and await self._hide_if_open(new, name_new, victim)
        try:
            await self.client.nfs.rename(old, name_old, new, name_new)
        except (NfsError, RpcError):
            if hidden and victim is not None:
                await self._unhide(victim, new, name_new)
            raise
        self.inodes.moved(parent_inode_old, name_old, parent_inode_new, name_new)

    async def _rename_victim(
        self, old: bytes, name_old: bytes, new: bytes, name_new: bytes
    ) -> int | None:
        """The fileid of an open file that renaming ``name_old`` would replace, if any (not
        when both names are the same file: then the rename changes nothing)."""
        try:
            victim = await self._fileid_of(new, name_new)
        except NfsError as exc:
            if exc.status == Nfsstat3.NOENT:
                return None
            raise
        if victim is None or await self._fileid_of(old, name_old) == victim:
            return None
        return victim

    async def _unhide(self, fileid: int, dirfh: bytes, name: bytes) -> None:
        """Undo ``_hide_if_open`` (the rename it made way for failed): the name back."""
        opened = self._open.get(self.inodes.inode(fileid))
        if opened is None or opened.silly is None:
            return
        hidden_dir, hidden = opened.silly
        await self.client.nfs.rename(hidden_dir, hidden, dirfh, name)
        opened.silly = None

    @_errors
    async def link(
        self, inode: int, new_parent_inode: int, new_name: bytes, ctx: RequestContext
    ) -> EntryAttributes:
        self._writable()
        self._changing(new_parent_inode)
        fh = self.inodes.fh(inode)
        res = await self.client.nfs.link(fh, self.inodes.fh(new_parent_inode), new_name)
        return await self._found(fh, res.file_attributes)

    # -- files ----------------------------------------------------------------------------

    async def _open_inode(self, inode: int, fh: bytes, attr: Attr) -> FileInfo:
        opened = self._open.get(inode)
        if opened is not None:
            opened.count += 1
        else:
            mode = _READONLY if self.options.read_only else _SHARED
            client = self.client
            file = AsyncFile(client.nfs, fh, "", attr, mode, client.file_options, client.buffers)
            self._open[inode] = _Open(file, asyncio.Lock())
        # close-to-open as the kernel NFS client does it: the kernel keeps the pages it
        # cached unless the file changed since its previous open. direct_io: no page cache
        # at all, so a read is copied once, from our reply into the reader's buffer (not
        # into the page cache and out again), and the client's read-ahead is the only one.
        keep = self.inodes.unchanged(inode, attr)
        handle = next(self._ids)
        self._handles[handle] = _Handle(inode, acting_as.get())
        return FileInfo(fh=handle, keep_cache=keep, direct_io=self.options.direct_io)

    @_errors
    async def open(self, inode: int, flags: int, ctx: RequestContext) -> FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC):
            self._writable()
        fh = self.inodes.fh(inode)
        attr = await self.client.nfs.getattr(fh)  # close-to-open: fresh attributes at open
        if attr.type == Ftype3.DIR:
            raise FUSEError(errno.EISDIR)
        if flags & os.O_TRUNC:  # libfuse asks for atomic O_TRUNC: the kernel leaves it to us
            await self._set_size(inode, fh, 0)
            attr = dataclasses.replace(attr, size=0)
        return await self._open_inode(inode, fh, attr)

    @_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: RequestContext
    ) -> tuple[FileInfo, EntryAttributes]:
        self._writable()
        self._changing(parent_inode)
        dirfh = self.inodes.fh(parent_inode)
        perm = SetAttr(mode=mode & 0o7777, size=0 if flags & os.O_TRUNC else None)
        if flags & os.O_EXCL:  # safe when resent (EXCLUSIVE with a verifier), as Linux does
            res = await self.client.nfs.create_exclusive(dirfh, name, SetAttr(mode=perm.mode))
        else:
            res = await self.client.nfs.create(dirfh, name, perm, CreateMode.UNCHECKED)
        self._changed(parent_inode, res.dir_wcc)
        entry = await self._created(dirfh, name, res)
        fh = self.inodes.fh(entry.st_ino)
        # The reply's attributes are as fresh as a GETATTR's would be (close-to-open holds).
        attr = res.obj_attributes or await self.client.nfs.getattr(fh)
        return await self._open_inode(entry.st_ino, fh, attr), entry

    def _file(self, fh: int) -> _Open:
        """The open file behind the kernel's handle ``fh``; this request's calls act as
        whoever opened it (FUSE tells no caller for reads, writes and closes)."""
        handle = self._handles.get(fh)
        opened = self._open.get(handle.inode) if handle is not None else None
        if handle is None or opened is None:
            raise FUSEError(errno.EBADF)
        acting_as.set(handle.cred)
        return opened

    @_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        """A view of the READ reply itself when the request lies within one chunk (no copy);
        else copied into the file's one reply buffer (a fresh 1 MiB buffer per request costs
        page faults). Both are safe to reuse at the next read: pyfuse3 sends the reply as
        soon as this returns, before any other request can run, and reads of one file take
        turns; so each read first gives back the chunks earlier ones lent out."""
        opened = self._file(fh)
        async with opened.lock:
            opened.file.recycle()
            if len(opened.reply) < size:
                opened.reply = bytearray(size)
            data = await opened.file.pread(off, memoryview(opened.reply)[:size])
        return data  # type: ignore[return-value]  # pyfuse3 takes any buffer

    @_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        self._writable()
        opened = self._file(fh)
        async with opened.lock:
            return await opened.file.pwrite(off, buf)

    @_errors
    async def flush(self, fh: int) -> None:
        await self._commit(fh)

    @_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._commit(fh)

    async def _commit(self, fh: int) -> None:
        opened = self._file(fh)
        if opened.file.mode.writable:
            async with opened.lock:
                await opened.file.flush()

    @_errors
    async def release(self, fh: int) -> None:
        self._file(fh)  # a handle we gave out; the last close acts as its opener
        await self._release(self._handles.pop(fh).inode)

    async def _release(self, inode: int) -> None:
        opened = self._open[inode]
        opened.count -= 1
        if opened.count > 0:
            return
        del self._open[inode]
        try:
            async with opened.lock:
                opened.file.recycle()  # the last read's reply is sent
                await opened.file.close()
            log.debug("inode %d closed: %s", inode, opened.file.stats)
        finally:
            if opened.silly is not None:
                try:
                    await self.client.nfs.remove(*opened.silly)
                except (NfsError, RpcError) as exc:
                    log.warning("cannot remove %s: %s", opened.silly[1], exc)

    async def close_all(self) -> None:
        """At unmount: flush and close whatever the kernel left open (as one who opened it)."""
        openers = {handle.inode: handle.cred for handle in self._handles.values()}
        self._handles.clear()
        for inode in list(self._open):
            acting_as.set(openers.get(inode))
            self._open[inode].count = 1
            try:
                await self._release(inode)
            except (FUSEError, NfsError, RpcError, OSError) as exc:
                log.warning("closing inode %d at unmount: %s", inode, exc)

    # -- directories ----------------------------------------------------------------------

    @_errors
    async def opendir(self, inode: int, ctx: RequestContext) -> int:
        handle = next(self._ids)
        self._dirs[handle] = _Dir(inode, self.inodes.fh(inode), acting_as.get())
        return handle

    @_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """``.`` and ``..`` (offsets 1 and 2: not every server lists them), then READDIRPLUS
        pages until the kernel's buffer is full, each entry at the next offset (see
        ``_Dir.cookies``); a listing resumes at the cookie recorded for ``start_id``.

        While the entries of a page are given to the kernel, the next page is already
        asked for (``_Dir.ahead``), so the server makes it meanwhile rather than after; a
        readdir that continues where the last one stopped starts with the rest of its page
        (``_Dir.rest``) and that next page, rather than asking for them again."""
        d = self._dirs[fh]
        acting_as.set(d.cred)
        dots = ((b".", d.inode), (b"..", self.inodes.parent(d.inode)))
        for offset, (name, inode) in enumerate(dots, 1):
            if start_id < offset and not pyfuse3.readdir_reply(token, name, _dot(inode), offset):
                return
        seen = max(start_id - DOTS, 0)  # server entries the kernel already has
        if seen > len(d.cookies):
            raise FUSEError(errno.EINVAL)  # not an offset this directory handle gave out
        entries: Sequence[t.Entry] = ()
        eof = False
        if d.resumable and seen == len(d.cookies):
            entries, eof = d.rest, d.rest_eof
        else:
            d.drop_ahead()
            del d.cookies[seen:]
        d.rest, d.resumable = (), False
        cookie = d.cookies[-1] if seen else 0
        if cookie == 0 and not entries:
            d.verf = t.COOKIEVERF_ZERO
        for _ in range(1 << 30):  # bounded by the directory: every page moves on
            for i, e in enumerate(entries):
                if e.name in (b".", b".."):
                    cookie = e.cookie
                    continue
                fh_, attr = e.handle, e.attr
                if fh_ is None or attr is None:  # the server left them out: ask
                    found = await self.client.nfs.lookup(d.fh, e.name)
                    fh_, attr = found.object, found.obj_attributes
                    attr = attr or await self.client.nfs.getattr(fh_)
                entry = self._entry(self.inodes.inode(attr.fileid), attr)
                if not pyfuse3.readdir_reply(token, e.name, entry, DOTS + len(d.cookies) + 1):
                    d.rest, d.rest_eof, d.resumable = entries[i:], eof, True
                    return
                d.cookies.append(e.cookie)
                self.inodes.remember(attr.fileid, fh_)
                self._placed(entry, d.inode, e.name)
                cookie = e.cookie
            if eof:
                d.drop_ahead()
                d.rest_eof = d.resumable = True
                return
            res = await self._dir_page(d, cookie)
            entries, eof = res.entries, res.eof or not res.entries
            if not eof:  # the next page, made by the server while this one is given
                after = res.entries[-1].cookie
                call = self.client.nfs.readdirplus(d.fh, after, d.verf)
                d.ahead = (after, asyncio.get_running_loop().create_task(call))
                await asyncio.sleep(0)  # sent now, before the entries are given

    async def _dir_page(self, d: _Dir, cookie: int) -> t.ReaddirRes:
        """The page after ``cookie``: the one asked for ahead if it starts there, else
        asked for now; again without the cookie verifier if the server refuses it."""
        if d.ahead is not None and d.ahead[0] != cookie:  # asked for after another entry
            d.drop_ahead()
        ahead, d.ahead = d.ahead, None
        try:
            if ahead is not None:
                res = await ahead[1]
            else:
                res = await self.client.nfs.readdirplus(d.fh, cookie, d.verf)
        except NfsError as exc:
            if exc.status != Nfsstat3.BAD_COOKIE or d.verf == t.COOKIEVERF_ZERO:
                raise
            d.verf = t.COOKIEVERF_ZERO  # the directory changed: resume without it
            res = await self.client.nfs.readdirplus(d.fh, cookie, d.verf)
        d.verf = res.cookieverf
        return res

    async def releasedir(self, fh: int) -> None:
        d = self._dirs.pop(fh, None)
        if d is not None:
            d.drop_ahead()

    @_errors
    async def statfs(self, ctx: RequestContext) -> pyfuse3.StatvfsData:
        res = await self.client.nfs.fsstat(self.client.root)
        s, bsize = pyfuse3.StatvfsData(), 4096
        s.f_bsize = s.f_frsize = bsize
        s.f_blocks, s.f_bfree, s.f_bavail = (
            b // bsize for b in (res.tbytes, res.fbytes, res.abytes)
        )
        s.f_files, s.f_ffree, s.f_favail = res.tfiles, res.ffiles, res.afiles
        s.f_namemax = 255
        return s

"""The NFSv3 procedures (RFC 1813 section 3.3): one method per procedure, value in, value out.

Each method takes decoded arguments and a ``CallContext`` and returns the ``resok`` value,
or raises ``NfsError``; ``procedures`` owns the wire status and ``resfail`` arms. Here live
the rules the RFC puts on a server: handle checks, export policy (client addresses,
read-only, squashing), permission checks, set-ID bits taken away from a file an unprivileged
caller writes or truncates, name checks, weak cache consistency data, the write verifier,
exclusive-create verifiers, and READDIR cookies.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import TypeVar

from ferry.backends.base import Backend
from ferry.errors import NfsError, WouldBlock, status_from_oserror
from ferry.nfs3 import types as t
from ferry.nfs3.access import R, W, X, access_mask, may, setid_to_clear
from ferry.nfs3.const import MAX_IO, CreateMode, FsProperties, Ftype3, Nfsstat3, StableHow
from ferry.nfs3.exports import Export
from ferry.nfs3.filehandle import HandleCodec
from ferry.nfs3.readdir import MIN_RESOK, DirListingCache
from ferry.rpc.auth import Credentials
from ferry.rpc.dispatch import CallContext, Transport
from ferry.segment import FileSegment
from ferry.vocab import Attr, FileId, SetAttr

T = TypeVar("T")

PREF_IO = MAX_IO
MAX_FILE_SIZE = (1 << 63) - 1
NOWAIT_READ_MAX = 32 * 1024
"""Largest READ copied on the event loop (``Transport.nowait``): a copy of a few pages
costs less than two thread hops; bigger READs are left in the file for ``sendfile``."""
NOWAIT_WRITE_MAX = 32 * 1024
"""Largest UNSTABLE WRITE run on the event loop (``Transport.nowait``): a copy of a few
pages into the page cache costs less than two thread hops."""
_DOTS = (b".", b"..")
_DIR = Ftype3.DIR  # hoisted for LOOKUP: an enum member read through its class is slow


@dataclasses.dataclass(slots=True)
class Target:
    """A resolved handle: the export, the file id, and who is acting on it. (One per call:
    not frozen, which would make it three times as slow to make; nothing changes it.)"""

    export: Export
    fid: FileId
    cred: Credentials
    generation: int
    backend: Backend
    """``export.backend``, kept here: read several times per call."""


def call_backend(fn: Callable[[], T]) -> T:
    """Run a backend operation, translating OSError into NfsError in one place."""
    try:
        return fn()
    except OSError as exc:
        raise NfsError(status_from_oserror(exc), str(exc)) from exc


class Nfs3Service:
    """NFSv3 over a set of exports.

    Sans-IO: the server gives it the ``write_verifier`` (8 random bytes per run, RFC 1813
    section 3.3.7) and, when calls run on several threads, ``new_lock`` (``threading.Lock``)
    for the state the service keeps between calls."""

    def __init__(
        self,
        exports: Sequence[Export],
        handles: HandleCodec,
        write_verifier: bytes,
        new_lock: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
    ) -> None:
        self.exports = {e.export_id: e for e in exports}
        if len(self.exports) != len(exports):
            raise ValueError("two exports share an export id; set distinct ids")
        self.handles = handles
        self.write_verifier = write_verifier
        self.listings = DirListingCache(lock=new_lock() if new_lock else None)

    # -- handles, policy and attributes --------------------------------------------------

    def resolve(self, fh: bytes, ctx: CallContext) -> Target:
        export_id, fid, generation = self.handles.decode(fh)
        export = self.exports.get(export_id)
        if export is None:
            raise NfsError(Nfsstat3.STALE, "handle of an unknown export")
        if export.clients and not export.allows(_host(ctx)):  # no list: every client
            raise NfsError(Nfsstat3.ACCES, "client not allowed on this export")
        return Target(export, fid, export.squash(ctx.cred), generation, export.backend)

    def verifier(self, target: Target) -> bytes:
        """The write verifier (RFC 1813 section 3.3.7) for ``target``'s export: the
        server's, changed each time its backend lost uncommitted writes (``write_epoch``),
        so that clients send them again."""
        epoch = target.backend.write_epoch
        if not epoch:
            return self.write_verifier
        return ((int.from_bytes(self.write_verifier, "big") + epoch) % (1 << 64)).to_bytes(8, "big")

    def handle_for(self, export: Export, attr: Attr) -> bytes:
        return self.handles.encode(export.export_id, attr.fileid, attr.generation)

    def maybe_handle(self, export: Export, attr: Attr | None) -> bytes | None:
        """post_op_fh3: a handle when the attributes (which carry the generation) are known."""
        return None if attr is None else self.handle_for(export, attr)

    def attrs(self, target: Target, fid: FileId | None = None) -> Attr:
        """Attributes of ``fid``, or of the target itself, checked against the handle's
        generation: a handle of a removed file whose id was reused is STALE."""
        try:  # call_backend, inlined: this runs once or twice in every call
            attr = target.backend.getattr(target.fid if fid is None else fid)
        except OSError as exc:
            raise NfsError(status_from_oserror(exc), str(exc)) from exc
        if fid is None and attr.generation != target.generation:
            raise NfsError(Nfsstat3.STALE, "file id reused by a newer file")
        attr.fsid = target.export.export_id
        return attr

    def try_attrs(self, target: Target, fid: FileId | None = None) -> Attr | None:
        """Attributes for post_op_attr: absent rather than failing the call."""
        try:
            return self.attrs(target, fid)
        except NfsError:
            return None

    def post_attrs_for(self, fh: bytes, ctx: CallContext) -> Attr | None:
        """post_op_attr for a handle in a failed call's arguments (resfail arms)."""
        try:
            return self.try_attrs(self.resolve(fh, ctx))
        except NfsError:
            return None

    def _writable(self, target: Target) -> None:
        if target.export.read_only:
            raise NfsError(Nfsstat3.ROFS, "export is read-only")

    def _dir_for_change(self, fh: bytes, ctx: CallContext) -> tuple[Target, Attr]:
        """Resolve a directory the caller wants to add or remove entries in."""
        target = self.resolve(fh, ctx)
        self._writable(target)
        attr = self.attrs(target)
        if attr.type != Ftype3.DIR:
            raise NfsError(Nfsstat3.NOTDIR)
        if not may(attr, target.cred, W | X):
            raise NfsError(Nfsstat3.ACCES)
        return target, attr

    def _check_name(self, target: Target, name: bytes) -> None:
        """Refuse names that could escape or confuse: empty, '/', NUL, '.', '..', too long."""
        if not name or b"/" in name or b"\0" in name:
            raise NfsError(Nfsstat3.ACCES, f"invalid name {name!r}")
        if len(name) > target.backend.name_max:
            raise NfsError(Nfsstat3.NAMETOOLONG)
        if name in (b".", b".."):
            raise NfsError(Nfsstat3.EXIST if name == b"." else Nfsstat3.INVAL)

    def _owner_attrs(
        self, target: Target, attrs: SetAttr, dir_attr: Attr, is_dir: bool = False
    ) -> SetAttr:
        """New objects belong to the (squashed) caller, as on a local file system; in a
        set-group-ID directory they take its group, and new directories keep the bit
        (the POSIX/Linux rule knfsd follows), so shared project directories work."""
        setgid = bool(dir_attr.mode & 0o2000)
        gid = dir_attr.gid if setgid else target.cred.gid
        mode = attrs.mode | 0o2000 if is_dir and setgid and attrs.mode is not None else attrs.mode
        return dataclasses.replace(
            attrs,
            mode=mode,
            uid=target.cred.uid if attrs.uid is None or target.cred.uid != 0 else attrs.uid,
            gid=gid if attrs.gid is None or target.cred.uid != 0 else attrs.gid,
        )

    # -- procedures, in RFC order --------------------------------------------------------

    def getattr(self, args: t.FhArgs, ctx: CallContext) -> t.AttrRes:
        return t.AttrRes(self.attrs(self.resolve(args.object, ctx)))

    def setattr(self, args: t.SetattrArgs, ctx: CallContext) -> t.WccRes:
        target = self.resolve(args.object, ctx)
        self._writable(target)
        before = self.attrs(target)
        if args.guard_ctime_ns is not None and args.guard_ctime_ns != _nfs_time(before.ctime_ns):
            raise NfsError(Nfsstat3.NOT_SYNC, "ctime guard does not match")
        new = args.new_attributes
        self._check_setattr(target, before, new)
        _check_size(new.size)
        bits = setid_to_clear(before, target.cred) if new.size is not None else 0
        if bits and new.mode is None:  # as truncate(2) does; a mode asked for wins
            new = dataclasses.replace(new, mode=before.mode & ~bits)
        call_backend(lambda: target.backend.setattr(target.fid, new))
        return t.WccRes(t.Wcc(before, self.try_attrs(target)))

    def _check_setattr(self, target: Target, attr: Attr, new: SetAttr) -> None:
        cred = target.cred
        owner = cred.uid in (0, attr.uid)
        if new.uid is not None and new.uid != attr.uid and cred.uid != 0:
            raise NfsError(Nfsstat3.PERM, "only root may change the owner")
        if (
            new.gid is not None
            and new.gid != attr.gid
            and not (cred.uid == 0 or (cred.uid == attr.uid and cred.in_group(new.gid)))
        ):
            raise NfsError(Nfsstat3.PERM, "may not change the group")
        if new.mode is not None and not owner:
            raise NfsError(Nfsstat3.PERM, "only the owner may change the mode")
        if new.size is not None:
            if attr.type == Ftype3.DIR:
                raise NfsError(Nfsstat3.ISDIR)
            if not owner and not may(attr, cred, W):
                raise NfsError(Nfsstat3.ACCES)
        for value in (new.atime_ns, new.mtime_ns):
            if value is not None and not owner and not (value < 0 and may(attr, cred, W)):
                raise NfsError(Nfsstat3.PERM, "only the owner may set times")

    def lookup(self, args: t.LookupArgs, ctx: CallContext) -> t.LookupRes:
        target = self.resolve(args.what.dir, ctx)
        dir_attr = self.attrs(target)
        if dir_attr.type != _DIR:
            raise NfsError(Nfsstat3.NOTDIR)
        if not may(dir_attr, target.cred, X):
            raise NfsError(Nfsstat3.ACCES)
        name = args.what.name
        if name in _DOTS:
            attr = self.attrs(target, self._lookup_name(target, name))
        else:
            self._check_lookup_name(target, name)
            try:  # the id and its attributes in one backend call (a statx, locally)
                attr = target.backend.lookup_attr(target.fid, name)
            except OSError as exc:
                raise NfsError(status_from_oserror(exc), str(exc)) from exc
            attr.fsid = target.export.export_id
        return t.LookupRes(self.handle_for(target.export, attr), attr, dir_attr)

    def _lookup_name(self, target: Target, name: bytes) -> FileId:
        if name == b"." or (name == b".." and target.fid == target.backend.root()):
            return target.fid  # '..' at the export root is the root itself
        if name == b"..":
            return call_backend(lambda: target.backend.lookup(target.fid, b".."))
        self._check_lookup_name(target, name)
        return call_backend(lambda: target.backend.lookup(target.fid, name))

    def _check_lookup_name(self, target: Target, name: bytes) -> None:
        if not name or b"/" in name or b"\0" in name:
            raise NfsError(Nfsstat3.ACCES, f"invalid name {name!r}")
        if len(name) > target.backend.name_max:
            raise NfsError(Nfsstat3.NAMETOOLONG)

    def access(self, args: t.AccessArgs, ctx: CallContext) -> t.AccessRes:
        target = self.resolve(args.object, ctx)
        attr = self.attrs(target)
        return t.AccessRes(
            attr, access_mask(attr, target.cred, args.access, target.export.read_only)
        )

    def readlink(self, args: t.FhArgs, ctx: CallContext) -> t.ReadlinkRes:
        target = self.resolve(args.object, ctx)
        attr = self.attrs(target)
        if attr.type != Ftype3.LNK:
            raise NfsError(Nfsstat3.INVAL, "not a symbolic link")
        return t.ReadlinkRes(attr, call_backend(lambda: target.backend.readlink(target.fid)))

    def read(self, args: t.ReadArgs, ctx: CallContext) -> t.ReadRes | t.ReadSegmentRes:
        target = self.resolve(args.file, ctx)
        attr = self.attrs(target)
        _check_file_io(target, attr, R)
        count = min(args.count, _max_io(ctx))
        if args.offset > MAX_FILE_SIZE:
            return t.ReadRes(attr, 0, True, b"")  # past any possible end of file
        fid, offset = target.fid, args.offset
        read = _reader(target.backend, ctx.transport, count)
        data, eof = call_backend(lambda: read(fid, offset, count))
        if eof or len(data) < count:
            attr = self.attrs(target)  # should this fail, a segment closes when collected
        if isinstance(data, FileSegment):
            return t.ReadSegmentRes(attr, eof, data)
        return t.ReadRes(attr, len(data), eof, data)

    def write(self, args: t.WriteArgs, ctx: CallContext) -> t.WriteRes:
        if ctx.transport.nowait and (
            args.stable is not StableHow.UNSTABLE or args.count > NOWAIT_WRITE_MAX
        ):
            raise WouldBlock  # a stable WRITE syncs, a big one copies long: on a call thread
        target = self.resolve(args.file, ctx)
        self._writable(target)
        before = self.attrs(target)
        _check_file_io(target, before, W)
        if args.count > len(args.data):
            raise NfsError(Nfsstat3.INVAL, "count exceeds the data sent")
        data = args.data[: args.count]
        _check_size(args.offset + len(data))
        self._clear_setid(target, before, len(data))
        verf = self.verifier(target)  # before the write: it may be lost with this epoch
        committed = call_backend(
            lambda: target.backend.write(target.fid, args.offset, data, args.stable)
        )
        after = self.try_attrs(target)
        return t.WriteRes(t.Wcc(before, after), len(data), committed, verf)

    def _clear_setid(self, target: Target, attr: Attr, count: int) -> None:
        """Before data is written, take away the set-ID bits an unprivileged writer loses
        (``setid_to_clear``), as write(2) does on a local file system and knfsd and
        NFS-Ganesha do by writing as the caller. The backend may run as root, whose own
        writes keep them, so the service does it for every backend. A zero-length write
        changes nothing, here as in Linux."""
        if count and (bits := setid_to_clear(attr, target.cred)):
            mode = SetAttr(mode=attr.mode & ~bits)
            call_backend(lambda: target.backend.setattr(target.fid, mode))

    def create(self, args: t.CreateArgs, ctx: CallContext) -> t.CreateRes:
        target, before = self._dir_for_change(args.where.dir, ctx)
        name = args.where.name
        self._check_name(target, name)
        backend = target.backend
        if args.mode == CreateMode.EXCLUSIVE:
            fid = self._create_exclusive(target, name, args.verf, before)
        else:
            attrs = self._owner_attrs(target, args.obj_attributes, before)
            _check_size(attrs.size)
            exclusive = args.mode == CreateMode.GUARDED
            fid = call_backend(lambda: backend.create(target.fid, name, attrs, exclusive))
        return self._created(target, fid, before)

    def _create_exclusive(self, target: Target, name: bytes, verf: bytes, dir_attr: Attr) -> FileId:
        """Exclusive create keeps the verifier in atime/mtime, as knfsd does, so that a
        retransmission finds the same verifier and succeeds (RFC 1813 section 3.3.8).
        The times go with the create, so a backend that applies them there (local) has
        them on stable storage with the new file; the others get a SETATTR after it."""
        backend = target.backend
        stamp = _verifier_times(verf)
        attrs = self._owner_attrs(target, SetAttr(mode=0o600), dir_attr)
        attrs = dataclasses.replace(attrs, atime_ns=stamp[0], mtime_ns=stamp[1])
        try:
            fid = call_backend(lambda: backend.create(target.fid, name, attrs, True))
        except NfsError as exc:
            if exc.status != Nfsstat3.EXIST:
                raise
            fid = call_backend(lambda: backend.lookup(target.fid, name))
            existing = self.attrs(target, fid)
            if (existing.atime_ns, existing.mtime_ns) != stamp or existing.type != Ftype3.REG:
                raise
            return fid
        made = self.attrs(target, fid)
        if (made.atime_ns, made.mtime_ns) != stamp:  # the backend left times to SETATTR
            call_backend(
                lambda: backend.setattr(fid, SetAttr(atime_ns=stamp[0], mtime_ns=stamp[1]))
            )
        return fid

    def _created(self, target: Target, fid: FileId, before: Attr) -> t.CreateRes:
        self.listings.invalidate(target.export.export_id, target.fid)
        attr = self.try_attrs(target, fid)
        return t.CreateRes(
            self.maybe_handle(target.export, attr), attr, t.Wcc(before, self.try_attrs(target))
        )

    def mkdir(self, args: t.MkdirArgs, ctx: CallContext) -> t.CreateRes:
        target, before = self._dir_for_change(args.where.dir, ctx)
        self._check_name(target, args.where.name)
        attrs = self._owner_attrs(target, args.attributes, before, is_dir=True)
        fid = call_backend(lambda: target.backend.mkdir(target.fid, args.where.name, attrs))
        return self._created(target, fid, before)

    def symlink(self, args: t.SymlinkArgs, ctx: CallContext) -> t.CreateRes:
        target, before = self._dir_for_change(args.where.dir, ctx)
        self._check_name(target, args.where.name)
        if not args.symlink_data or b"\0" in args.symlink_data:
            raise NfsError(Nfsstat3.INVAL, "bad symlink target")
        attrs = self._owner_attrs(target, args.symlink_attributes, before)
        fid = call_backend(
            lambda: target.backend.symlink(target.fid, args.where.name, args.symlink_data, attrs)
        )
        return self._created(target, fid, before)

    def mknod(self, args: t.MknodArgs, ctx: CallContext) -> t.CreateRes:
        target, before = self._dir_for_change(args.where.dir, ctx)
        self._check_name(target, args.where.name)
        if args.type in (Ftype3.REG, Ftype3.DIR, Ftype3.LNK):
            raise NfsError(Nfsstat3.BADTYPE)
        if args.type in (Ftype3.CHR, Ftype3.BLK) and target.cred.uid != 0:
            raise NfsError(Nfsstat3.PERM, "only root may create devices")
        attrs = self._owner_attrs(target, args.attributes, before)
        fid = call_backend(
            lambda: target.backend.mknod(target.fid, args.where.name, args.type, attrs, args.rdev)
        )
        return self._created(target, fid, before)

    def remove(self, args: t.RemoveArgs, ctx: CallContext) -> t.WccRes:
        return self._unlink(args, ctx, directory=False)

    def rmdir(self, args: t.RemoveArgs, ctx: CallContext) -> t.WccRes:
        return self._unlink(args, ctx, directory=True)

    def _unlink(self, args: t.RemoveArgs, ctx: CallContext, directory: bool) -> t.WccRes:
        target, before = self._dir_for_change(args.object.dir, ctx)
        name = args.object.name
        if name == b".":
            raise NfsError(Nfsstat3.INVAL)
        if name == b"..":
            raise NfsError(Nfsstat3.NOTEMPTY if directory else Nfsstat3.ISDIR)
        self._check_name(target, name)
        self._check_sticky(target, before, name)
        backend = target.backend
        op = backend.rmdir if directory else backend.remove
        call_backend(lambda: op(target.fid, name))
        self.listings.invalidate(target.export.export_id, target.fid)
        return t.WccRes(t.Wcc(before, self.try_attrs(target)))

    def _check_sticky(
        self, target: Target, dir_attr: Attr, name: bytes, missing_ok: bool = False
    ) -> None:
        """In a sticky directory only the owner of an entry (or of the directory) removes or
        replaces it; ``missing_ok`` for a rename target, which need not exist."""
        cred = target.cred
        if not dir_attr.mode & 0o1000 or cred.uid in (0, dir_attr.uid):
            return
        try:
            fid = call_backend(lambda: target.backend.lookup(target.fid, name))
        except NfsError as exc:
            if missing_ok and exc.status == Nfsstat3.NOENT:
                return
            raise
        if self.attrs(target, fid).uid != cred.uid:
            raise NfsError(Nfsstat3.ACCES, "sticky directory")

    def rename(self, args: t.RenameArgs, ctx: CallContext) -> t.RenameRes:
        src, src_before = self._dir_for_change(args.from_.dir, ctx)
        dst, dst_before = self._dir_for_change(args.to.dir, ctx)
        if src.export.export_id != dst.export.export_id:
            raise NfsError(Nfsstat3.XDEV)
        for name in (args.from_.name, args.to.name):
            if name in (b".", b".."):
                raise NfsError(Nfsstat3.INVAL)
            self._check_name(src, name)
        self._check_sticky(src, src_before, args.from_.name)
        self._check_sticky(dst, dst_before, args.to.name, missing_ok=True)
        call_backend(lambda: src.backend.rename(src.fid, args.from_.name, dst.fid, args.to.name))
        self.listings.invalidate(src.export.export_id, src.fid)
        self.listings.invalidate(dst.export.export_id, dst.fid)
        return t.RenameRes(
            t.Wcc(src_before, self.try_attrs(src)), t.Wcc(dst_before, self.try_attrs(dst))
        )

    def link(self, args: t.LinkArgs, ctx: CallContext) -> t.LinkRes:
        file = self.resolve(args.file, ctx)
        target, before = self._dir_for_change(args.link.dir, ctx)
        if file.export.export_id != target.export.export_id:
            raise NfsError(Nfsstat3.XDEV)
        self._check_name(target, args.link.name)
        if self.attrs(file).type == Ftype3.DIR:
            raise NfsError(Nfsstat3.ISDIR, "hard links to directories are not allowed")
        call_backend(lambda: target.backend.link(file.fid, target.fid, args.link.name))
        self.listings.invalidate(target.export.export_id, target.fid)
        return t.LinkRes(self.try_attrs(file), t.Wcc(before, self.try_attrs(target)))

    def readdir(self, args: t.ReaddirArgs, ctx: CallContext) -> t.ReaddirPage:
        return self._readdir(args, ctx, plus=False)

    def readdirplus(self, args: t.ReaddirArgs, ctx: CallContext) -> t.ReaddirPage:
        return self._readdir(args, ctx, plus=True)

    def _readdir(self, args: t.ReaddirArgs, ctx: CallContext, plus: bool) -> t.ReaddirPage:
        target = self.resolve(args.dir, ctx)
        dir_attr = self.attrs(target)
        if dir_attr.type != Ftype3.DIR:
            raise NfsError(Nfsstat3.NOTDIR)
        if not may(dir_attr, target.cred, R):
            raise NfsError(Nfsstat3.ACCES)
        listing = self.listings.get(
            target.export.export_id,
            target.fid,
            dir_attr,
            lambda: call_backend(lambda: list(target.backend.readdir(target.fid))),
        )
        limit = min(args.maxcount if plus else args.dircount, _max_io(ctx))
        # READDIRPLUS pages are sized by maxcount alone, as knfsd sizes them ("we choose
        # to ignore the dircount parameter"): Linux sends dircount = maxcount / 8 "to make
        # sure [it is] big enough", which would cut each page to about half of maxcount
        # and double the calls of a listing. READDIR's one count is its limit.
        names = 0 if plus else args.dircount
        start, stop, eof = listing.page(args.cookie, names, limit, plus)
        if limit < MIN_RESOK or (start == stop and not eof):
            raise NfsError(Nfsstat3.TOOSMALL)
        entries, cookies = listing.entries[start:stop], listing.cookies[start:stop]
        page = t.ReaddirPage(dir_attr, listing.verifier, entries, cookies, eof)
        if plus:
            self._plus_attrs(target, page)
        return page

    def _plus_attrs(self, target: Target, page: t.ReaddirPage) -> None:
        """entryplus3 attributes and handles read now, one page at a time, so a listing of
        any size never serves stale attributes and costs nothing for pages not asked for."""
        backend, export_id = target.backend, target.export.export_id
        rows, generations = call_backend(
            lambda: backend.attr_rows_in(target.fid, page.entries, export_id)
        )
        page.rows = rows
        page.handles = self.handles.encode_ids(
            export_id, [e.fileid for e in page.entries], generations
        )

    def fsstat(self, args: t.FhArgs, ctx: CallContext) -> t.FsstatRes:
        target = self.resolve(args.object, ctx)
        attr = self.attrs(target)
        s = call_backend(lambda: target.backend.fsstat(target.fid))
        return t.FsstatRes(
            attr,
            s.total_bytes,
            s.free_bytes,
            s.avail_bytes,
            s.total_files,
            s.free_files,
            s.avail_files,
        )

    def fsinfo(self, args: t.FhArgs, ctx: CallContext) -> t.FsinfoRes:
        target = self.resolve(args.object, ctx)
        props = FsProperties.LINK | FsProperties.SYMLINK | FsProperties.HOMOGENEOUS
        props |= FsProperties.CANSETTIME
        io = _max_io(ctx)  # per transport, as in Linux (svc_max_payload)
        return t.FsinfoRes(
            self.attrs(target),
            io,
            min(PREF_IO, io),
            4096,
            io,
            min(PREF_IO, io),
            4096,
            64 * 1024,
            MAX_FILE_SIZE,
            1,
            int(props),
        )

    def pathconf(self, args: t.FhArgs, ctx: CallContext) -> t.PathconfRes:
        target = self.resolve(args.object, ctx)
        return t.PathconfRes(self.attrs(target), 65000, target.backend.name_max)

    def commit(self, args: t.CommitArgs, ctx: CallContext) -> t.CommitRes:
        target = self.resolve(args.file, ctx)
        self._writable(target)
        before = self.attrs(target)
        if before.type != Ftype3.REG:
            raise _not_regular(before)
        verf = self.verifier(target)  # before: the data committed is what it covers
        call_backend(lambda: target.backend.commit(target.fid, args.offset, args.count))
        return t.CommitRes(t.Wcc(before, self.try_attrs(target)), verf)


def _would_block(fid: FileId, offset: int, count: int) -> tuple[bytes, bool]:
    raise WouldBlock


def _reader(
    backend: Backend, how: Transport, count: int
) -> Callable[[FileId, int, int], tuple[bytes | memoryview | FileSegment, bool]]:
    """The backend's read for this transport. On an event loop (``nowait``) a small READ is
    copied from the page cache, a bigger one left in its file if the cache holds it all
    (the loop sends it with ``sendfile``); either raises ``WouldBlock`` (run it on a call
    thread) rather than wait for the disk."""
    if how.nowait:
        if count <= NOWAIT_READ_MAX:
            return backend.read_nowait
        return backend.read_segment_nowait if how.sendfile else _would_block
    return backend.read_segment if how.sendfile else backend.read


def _max_io(ctx: CallContext) -> int:
    """rtmax/wtmax for the call's transport: a UDP reply must fit one datagram."""
    limit = ctx.transport.max_io
    return MAX_IO if limit is None else min(limit, MAX_IO)


def _not_regular(attr: Attr) -> NfsError:
    return NfsError(Nfsstat3.ISDIR if attr.type == Ftype3.DIR else Nfsstat3.INVAL)


def _check_file_io(target: Target, attr: Attr, want: int) -> None:
    """READ/WRITE need a regular file and permission; the owner always passes, as with a
    file opened before its mode changed (knfsd does the same)."""
    if attr.type != Ftype3.REG:
        raise _not_regular(attr)
    if attr.uid != target.cred.uid and not may(attr, target.cred, want):
        raise NfsError(Nfsstat3.ACCES)


def _host(ctx: CallContext) -> str | None:
    return ctx.client[0] if ctx.client else None


def _check_size(size: int | None) -> None:
    """FBIG for a file size no backend can hold: offsets are 64-bit unsigned on the wire but
    signed in POSIX, and an out-of-range one must not reach the backend (OverflowError)."""
    if size is not None and size > MAX_FILE_SIZE:
        raise NfsError(Nfsstat3.FBIG, f"size {size} exceeds maxfilesize")


def _nfs_time(ns: int) -> int:
    """A time as it went over the wire (seconds truncated to 32 bits), for guard checks."""
    seconds, nseconds = divmod(ns, 1_000_000_000)
    return (seconds & 0xFFFFFFFF) * 1_000_000_000 + nseconds


def _verifier_times(verf: bytes) -> tuple[int, int]:
    """The (atime, mtime) in ns that store an 8-byte exclusive-create verifier.

    Each half is cut to 31 bits, as knfsd does: times past 2038 are clamped by file systems
    without big timestamps, and a clamped time would never match on retransmission."""
    hi, lo = (int.from_bytes(half, "big") & 0x7FFFFFFF for half in (verf[:4], verf[4:]))
    return hi * 1_000_000_000, lo * 1_000_000_000

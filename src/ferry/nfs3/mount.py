"""The MOUNT program, version 3 (RFC 1813 section 5): how clients get an export's root handle.

MNT also accepts a path below an export (resolved name by name, never through a symlink).
A path that no export holds (``/`` among them, unless ``/`` is exported) is MNT3ERR_NOENT,
never another export: a misspelled export must fail, not serve something else. Every
refused MNT is logged, one line with the client's address and the reason. The mount table
that DUMP reports is advisory, as in every NFS server: it records (client host, path) pairs.

MOUNT has no "try again later" status: a MNT the backend cannot answer now (JUKEBOX: a
store that is down or stuck) is dropped, so the client sends it again, and an export's
root handle, once known, is answered from memory (it never changes), so mounting works
while the store is out and the client's next NFS calls are the ones told to wait.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Sequence
from typing import Protocol

from ferry.errors import DropCall, NfsError
from ferry.nfs3.const import (
    MNTPATHLEN,
    MOUNT_PROGRAM,
    MOUNT_V3,
    Ftype3,
    MountProc,
    Mountstat3,
    Nfsstat3,
)
from ferry.nfs3.exports import Export
from ferry.nfs3.service import Nfs3Service, call_backend
from ferry.rpc.dispatch import CallContext, Handler, Program
from ferry.rpc.message import AuthFlavor
from ferry.xdr import Packer, Unpacker

log = logging.getLogger("ferry.mount")

_STATUS_FROM_NFS = {
    Nfsstat3.NOENT: Mountstat3.NOENT,
    Nfsstat3.ACCES: Mountstat3.ACCES,
    Nfsstat3.NOTDIR: Mountstat3.NOTDIR,
    Nfsstat3.NAMETOOLONG: Mountstat3.NAMETOOLONG,
    Nfsstat3.STALE: Mountstat3.NOENT,
}


class MountRegistry(Protocol):
    """Where MNT/UMNT record (host, path) pairs for DUMP; one process's ``MountTable``, or a
    table shared by worker processes (``ferry.server.shared``)."""

    def add(self, host: str, path: str) -> None: ...
    def remove(self, host: str, path: str) -> None: ...
    def remove_host(self, host: str) -> None: ...
    def entries(self) -> list[tuple[str, str]]: ...


class MountTable:
    """Who has mounted what, for DUMP, in one process; holds the ``lock`` it is given (the
    server passes a ``threading.Lock``), without one it is for one thread."""

    def __init__(self, lock: contextlib.AbstractContextManager[object] | None = None) -> None:
        self._entries: dict[tuple[str, str], None] = {}
        self._lock = lock if lock is not None else contextlib.nullcontext()

    def add(self, host: str, path: str) -> None:
        with self._lock:
            self._entries[(host, path)] = None

    def remove(self, host: str, path: str) -> None:
        with self._lock:
            self._entries.pop((host, path), None)

    def remove_host(self, host: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == host]:
                del self._entries[key]

    def entries(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._entries)


class MountService:
    """MOUNT v3 procedures over the NFS service's exports."""

    def __init__(self, nfs: Nfs3Service, table: MountRegistry | None = None) -> None:
        self.nfs = nfs
        self.table: MountRegistry = table if table is not None else MountTable()
        self._roots: dict[int, bytes] = {}  # export id -> root handle

    def root_handle(self, export: Export) -> bytes:
        """The handle of ``export``'s root, asked of the backend once; raises NfsError."""
        fh = self._roots.get(export.export_id)
        if fh is None:
            backend = export.backend
            attr = call_backend(lambda: backend.getattr(backend.root()))
            if attr.type != Ftype3.DIR:
                raise NfsError(Nfsstat3.NOTDIR, f"not a directory ({export.path})")
            fh = self._roots[export.export_id] = self.nfs.handle_for(export, attr)
        return fh

    def warm(self) -> None:
        """Learn every export's root handle now, so MNT works later while a store is out
        (an export whose store does not answer now is asked again at its first MNT)."""
        for export in self.exports:
            with contextlib.suppress(NfsError):
                self.root_handle(export)

    @property
    def exports(self) -> Sequence[Export]:
        return list(self.nfs.exports.values())

    def find(self, path: str) -> tuple[Export, list[bytes]]:
        """The export serving ``path`` and the components below its root."""
        clean = "/" + "/".join(part for part in path.split("/") if part)
        best: tuple[Export, list[bytes]] | None = None
        for export in self.exports:
            root = "/" + "/".join(part for part in export.path.split("/") if part)
            if clean == root or clean.startswith(root.rstrip("/") + "/"):
                rest = [
                    p.encode("utf-8", "surrogateescape") for p in clean[len(root) :].split("/") if p
                ]
                if best is None or len(rest) < len(best[1]):
                    best = (export, rest)
        if best is None:
            raise NfsError(Nfsstat3.NOENT, "not exported")
        return best

    def mnt(self, path: str, ctx: CallContext) -> bytes:
        """The handle of ``path`` (RFC 1813 section 5.2.1); raises NfsError."""
        export, parts = self.find(path)
        host = ctx.client[0] if ctx.client else ""
        if not export.allows(host or None):
            raise NfsError(Nfsstat3.ACCES, f"client not allowed on export {export.path}")
        fh = self._below_root(export, parts) if parts else self.root_handle(export)
        self.table.add(host, path)
        return fh

    def _below_root(self, export: Export, parts: list[bytes]) -> bytes:
        backend = export.backend
        fid = backend.root()
        for part in parts:
            where = f"looking up {part.decode('utf-8', 'surrogateescape')!r} in {export.path}"
            if part in (b".", b"..") or len(part) > backend.name_max:
                raise NfsError(Nfsstat3.NOENT, where)
            try:
                fid = call_backend(functools.partial(backend.lookup, fid, part))
            except NfsError as exc:
                raise NfsError(exc.status, where) from exc
        attr = call_backend(lambda: backend.getattr(fid))
        if attr.type != Ftype3.DIR:
            raise NfsError(Nfsstat3.NOTDIR, f"not a directory (in {export.path})")
        return self.nfs.handle_for(export, attr)


def _unpack_path(u: Unpacker) -> str:
    return u.unpack_bytes(MNTPATHLEN).decode("utf-8", "surrogateescape")


def _who(ctx: CallContext) -> str:
    """The caller as ``host:port`` (``[v6]:port``), or "an unknown client"."""
    if not ctx.client:
        return "an unknown client"
    host, port = ctx.client[0], ctx.client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def mount_program(service: MountService) -> Program:
    """The MOUNT program (100005) version 3, for the RPC dispatcher."""

    def null(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        pass

    def mnt(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        path = _unpack_path(u)
        try:
            fh = service.mnt(path, ctx)
        except NfsError as exc:
            if exc.status is Nfsstat3.JUKEBOX:
                raise DropCall(f"MNT {path!r} from {_who(ctx)}: {exc}") from exc
            status = _STATUS_FROM_NFS.get(exc.status, Mountstat3.SERVERFAULT)
            log.warning("refused MNT %r from %s: %s, %s", path, _who(ctx), status.name, exc)
            p.pack_enum(status)
            return
        p.pack_enum(Mountstat3.OK)
        p.pack_opaque(fh)
        p.pack_array([AuthFlavor.AUTH_SYS, AuthFlavor.AUTH_NONE], p.pack_enum)

    def dump(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        for host, path in service.table.entries():
            p.pack_bool(True)
            p.pack_string(host)
            p.pack_string(path.encode("utf-8", "surrogateescape"))
        p.pack_bool(False)

    def umnt(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        path = _unpack_path(u)
        service.table.remove(ctx.client[0] if ctx.client else "", path)

    def umntall(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        service.table.remove_host(ctx.client[0] if ctx.client else "")

    def export(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        for e in service.exports:
            p.pack_bool(True)
            p.pack_string(e.path)
            for net in e.clients:
                p.pack_bool(True)
                p.pack_string(str(net))
            p.pack_bool(False)
        p.pack_bool(False)

    table: dict[int, Handler] = {
        MountProc.NULL: null,
        MountProc.MNT: mnt,
        MountProc.DUMP: dump,
        MountProc.UMNT: umnt,
        MountProc.UMNTALL: umntall,
        MountProc.EXPORT: export,
    }
    return Program(MOUNT_PROGRAM, "mount", {MOUNT_V3: table})

"""The procedure layer of the asyncio NFSv3 client: mount, one method per procedure.

``NfsProcedures`` owns what a mounted client knows: the RPC connections (NFS, MOUNT),
the AUTH_SYS credential, the root handle, the transfer sizes from FSINFO and the
attribute/lookup cache (``client.cache``). Its procedure methods (RFC 1813 section 3.3, in
RFC order) take handles and values, return the decoded ``resok`` arm and raise
``NfsError`` (the status) on failure; they always go to the wire, feed the cache with what
the server returned and drop what their own change made stale, so every way of changing
the server through this client keeps the cache honest. ``resolve`` turns a path into a
handle through the cache. The path-level API built on this is ``client.paths``
(``AsyncNfsClient``, which holds one of these as ``client.nfs``).

Every procedure goes through ``_nfs``, which also retries NFS3ERR_JUKEBOX ("try again
later", what a server says while its store is slow): the same call as a new request (new
xid, as the Linux client does), with backoff, within ``RpcOptions.jukebox_*``.

A call the transport had to send more than once (a lost reply, a server restarted in
between) may be answered for a second execution once the server's duplicate request
cache is gone: REMOVE of the file the first send removed answers NOENT, MKDIR of the
directory it made EXIST. As BSD's client does ("Kludge City" in nfs_vnops.c), such an
error to a resent REMOVE, RMDIR, RENAME, MKDIR, SYMLINK, MKNOD or LINK is taken as the
first send's success, but only after checking what it would have left (the new name
there, of the right type and target); a GUARDED CREATE cannot be checked, which is why
exclusive opens use ``create_exclusive`` (EXCLUSIVE with a verifier, RFC 1813 3.3.8,
the way the Linux client opens O_EXCL). ``RpcStats.resent_errors`` counts them.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import os
import socket
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, Self, TypedDict, TypeVar, Unpack

from ferry.errors import GarbageReply, NfsError, XdrError
from ferry.nfs3 import procedures
from ferry.nfs3 import results as r
from ferry.nfs3 import types as t
from ferry.nfs3.const import (
    MAX_IO,
    MOUNT_PROGRAM,
    MOUNT_V3,
    NFS_PROGRAM,
    NFS_V3,
    CreateMode,
    Ftype3,
    MountProc,
    NfsProc,
    Nfsstat3,
    StableHow,
)
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.message import OpaqueAuth
from ferry.vocab import SERVER_TIME, Attr, SetAttr
from ferry.xdr import Packer, Unpacker

from . import retry
from .aio import AsyncRpcClient, RpcOptions
from .cache import AttrCache
from .exports import mount_export
from .url import NfsUrl, parse_url, server_name

log = logging.getLogger("ferry.client")
T = TypeVar("T")
Name = str | bytes
MAX_SYMLINKS = 40  # like Linux's MAXSYMLINKS
MAX_DIR_PAGES = 1 << 20
UMNT_TIMEOUT = 1.0  # seconds close() waits for UMNT's reply (it is only a courtesy)
PMAP_PORT, PMAP_PROGRAM, PMAP_V2, PMAP_GETPORT, IPPROTO_TCP = 111, 100000, 2, 3, 6
_PROGRAMS = {(NFS_PROGRAM, NFS_V3): "NFS v3", (MOUNT_PROGRAM, MOUNT_V3): "MOUNT v3"}
CHANGES = frozenset({
    NfsProc.SETATTR, NfsProc.WRITE, NfsProc.CREATE, NfsProc.MKDIR, NfsProc.SYMLINK,
    NfsProc.MKNOD, NfsProc.REMOVE, NfsProc.RMDIR, NfsProc.RENAME, NfsProc.LINK,
})  # fmt: skip
"""Procedures a ``readonly`` client refuses itself (EROFS), before asking the server."""


acting_as: contextvars.ContextVar[OpaqueAuth | None] = contextvars.ContextVar(
    "ferry_acting_as", default=None
)
"""The credential for NFS calls made in this context, instead of the client's own: a FUSE
mount sets it per request so that each caller acts as itself, as with the kernel NFS
client (tasks started meanwhile, read-ahead and write-behind, inherit it)."""


@dataclasses.dataclass(frozen=True, slots=True)
class AuthSys:
    """Who we say we are (RFC 5531 appendix A); defaults to this process's ids."""

    uid: int = dataclasses.field(default_factory=os.getuid)
    gid: int = dataclasses.field(default_factory=os.getgid)
    gids: tuple[int, ...] = ()
    machine: str = dataclasses.field(default_factory=socket.gethostname)

    def credential(self) -> OpaqueAuth:
        return encode_auth_sys(self.uid, self.gid, self.gids[:16], self.machine[:255])


@dataclasses.dataclass(slots=True)
class NfsDirEntry:
    """One READDIRPLUS entry: name, handle and attributes (``None`` if the server sent none)."""

    name: str
    fileid: int
    handle: bytes | None
    attr: Attr | None

    def is_dir(self) -> bool:
        return self.attr is not None and self.attr.type == Ftype3.DIR


def _name(name: Name) -> bytes:
    return name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")


def _str(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


async def getport(host: str, prog: int, vers: int, options: RpcOptions | None = None) -> int:
    """Portmap v2 GETPORT over TCP (RFC 1833 section 3.2); raises OSError if unregistered."""
    rpc = AsyncRpcClient(host, PMAP_PORT, options)
    await rpc.connect()
    try:
        p = Packer()
        for v in (prog, vers, IPPROTO_TCP, 0):
            p.pack_uint(v)
        u = await rpc.call(PMAP_PROGRAM, PMAP_V2, PMAP_GETPORT, p.buffers(), label="PMAP GETPORT")
        port = u.unpack_uint()
    finally:
        await rpc.close()
    if port == 0:
        name = _PROGRAMS.get((prog, vers), f"program {prog} version {vers}")
        raise ConnectionRefusedError(f"has no {name} server registered")
    return port


def jukebox_waits(options: RpcOptions) -> list[float]:
    """The pauses before each resend of a call answered JUKEBOX: doubling, capped, one
    fewer than ``jukebox_tries`` (bounded, so a store that never recovers gives EAGAIN)."""
    first, cap = options.jukebox_delay, options.jukebox_max_delay
    return [min(first * 2**n, cap) for n in range(options.jukebox_tries - 1)]


async def server_ports(u: NfsUrl, options: RpcOptions | None) -> list[tuple[str, int, int]]:
    """(host, NFS port, MOUNT port) of every server of the URL, asking portmap where the URL
    does not say; with several servers, one whose portmap cannot be asked is left out.
    When none can be, the ConnectionError says so and shows how to give the ports."""
    out: list[tuple[str, int, int]] = []
    error: OSError | None = None
    for host, port in u.servers:
        try:
            nfs_port = u.nfs_port_of(port) or await getport(host, NFS_PROGRAM, NFS_V3, options)
            mnt_port = u.mount_port_of(port) or await getport(
                host, MOUNT_PROGRAM, MOUNT_V3, options
            )
        except (OSError, TimeoutError) as exc:
            error = exc
            continue
        out.append((host, nfs_port, mnt_port))
    if not out:
        raise ConnectionError(_no_portmap(u, error)) from None
    return out


def _no_portmap(u: NfsUrl, exc: BaseException | None) -> str:
    """One line: the portmapper could not be asked, and the URL forms that need none."""
    hosts = [h for h, p in u.servers if u.nfs_port_of(p) is None or u.mount_port_of(p) is None]
    where = ", ".join(server_name(h, PMAP_PORT) for h in hosts)
    if isinstance(exc, ConnectionRefusedError) and exc.errno is None:
        why = str(exc)  # it answered: nothing registered
    elif isinstance(exc, ConnectionRefusedError):
        why = "refuses connections (no portmapper runs there)"
    elif isinstance(exc, TimeoutError):
        why = "does not answer"
    else:
        why = f"cannot be reached ({(exc.strerror if isinstance(exc, OSError) else None) or exc})"
    host = server_name(u.host, None)
    path = urllib.parse.quote(u.path) if u.path != "/" else "/..."
    return (
        f"no port in the url, and the portmapper on {where} {why}; give the server's port: "
        f"nfs://{host}:PORT{path} or nfs://{host}{path}?nfsport=PORT&mountport=PORT"
    )


class UrlSettings(TypedDict, total=False):
    """The keywords of ``connect`` that a URL's libnfs arguments can also give
    (``url_keywords``); a keyword given (not None) wins over the URL's argument.

    ``hard`` (default True: wait a server out, for at most ``retry_for`` seconds, 300 by
    default) or soft (fail after ``retrans`` resends), ``timeout`` seconds before a call
    is first resent (``client.retry``); ``rsize``/``wsize`` (the largest READ/WRITE),
    ``readahead`` (bytes an open file reads ahead), ``attr_cache`` (seconds attributes
    and lookups are cached) and ``read_only`` (refuse changes here)."""

    hard: bool | None
    timeout: float | None
    retrans: int | None
    retry_for: float | None
    readahead: int | None
    rsize: int | None
    wsize: int | None
    attr_cache: float | None
    read_only: bool | None


class ConnectOptions(UrlSettings, total=False):
    """Every keyword of ``connect`` (``NfsProcedures.connect``, ``AsyncNfsClient.connect``,
    ``Client``, ``ferry.connect``): one list, so the faces cannot drift apart.

    ``export`` (the export to MNT, when the URL's path alone does not say), ``auth``
    (``AuthSys``: uid, gid, groups; default the URL's or this process's), ``options``
    (``RpcOptions``: the transport in full), ``servers`` (further servers of the same
    store, ``"host[:port]"`` each, tried after the URL's own), and ``UrlSettings``."""

    export: str | None
    auth: AuthSys | None
    options: RpcOptions | None
    servers: str | Iterable[str]


def settings_given(given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``UrlSettings`` in ``given`` that were given (not None)."""
    return {k: given[k] for k in UrlSettings.__annotations__ if given.get(k) is not None}


def url_keywords(u: NfsUrl) -> dict[str, Any]:
    """``connect``'s keywords that a URL's libnfs arguments stand for (docs/urls.md)."""
    kw = retry.url_policy(u)
    for key in ("readahead", "rsize", "wsize"):
        if (value := getattr(u, key)) is not None:
            kw[key] = value
    if u.readonly:
        kw["read_only"] = True
    if u.dircache is False:
        kw["attr_cache"] = 0.0
    return kw


class NfsProcedures:
    """A mounted NFSv3 export at the procedure level; see ``AsyncNfsClient`` for paths."""

    def __init__(
        self,
        rpc: AsyncRpcClient,
        mount_rpc: AsyncRpcClient,
        root: bytes,
        export: str,
        auth: AuthSys,
        subpath: str = "",
        attr_cache: float = 1.0,
    ) -> None:
        self.rpc, self.mount_rpc = rpc, mount_rpc
        self.root, self.export, self.subpath = root, export, subpath
        self.auth = auth
        self.cred = auth.credential()
        self.rsize = self.wsize = 64 * 1024
        self.dtpref = 32 * 1024
        self.cache = AttrCache(attr_cache)
        self.read_only = False  # refuse every change here (EROFS): ``readonly`` in the URL
        self.readahead: int | None = None  # bytes open files read ahead, if the user said

    @property
    def stats(self) -> object:
        return self.rpc.stats

    # -- connecting ------------------------------------------------------------------------

    @classmethod
    async def connect(cls, url: str | NfsUrl, **kw: Unpack[ConnectOptions]) -> Self:
        """Resolve ports, MNT the export, FSINFO the root; see ``client.url`` for the rules
        and ``ConnectOptions`` for the keywords. With several servers, in the URL and/or
        ``servers``, the connections fail over between them."""
        if unknown := sorted(kw.keys() - ConnectOptions.__annotations__.keys()):
            raise TypeError(f"connect() got an unexpected keyword argument {unknown[0]!r}")
        u = (parse_url(url) if isinstance(url, str) else url).with_servers(kw.get("servers", ()))
        settings = {**url_keywords(u), **settings_given(kw)}
        options = retry.resolve(kw.get("options"), **{k: settings.get(k) for k in retry.SETTINGS})
        base = AuthSys()
        auth = kw.get("auth") or AuthSys(
            base.uid if u.uid is None else u.uid, base.gid if u.gid is None else u.gid
        )
        ports = await server_ports(u, options)
        nfs = [(host, nfs_port) for host, nfs_port, _ in ports]
        mnt = [(host, mount_port) for host, _, mount_port in ports]
        rpc = AsyncRpcClient(*nfs[0], options, fallbacks=nfs[1:])
        await rpc.connect()
        mount_rpc = rpc
        try:
            if mnt != nfs:
                mount_rpc = AsyncRpcClient(*mnt[0], options, fallbacks=mnt[1:])
                await mount_rpc.connect()
            root, exp, sub = await mount_export(
                mount_rpc, auth.credential(), u.path, kw.get("export")
            )
            client = cls(rpc, mount_rpc, root, exp, auth, sub, settings.get("attr_cache", 1.0))
            client.read_only = bool(settings.get("read_only"))
            await client._negotiate(settings.get("rsize"), settings.get("wsize"))
            client.readahead = settings.get("readahead")
            await client._enter_subdir(u.path)
        except BaseException:
            await rpc.close()
            await mount_rpc.close()
            raise
        return client

    async def _negotiate(self, rsize: int | None, wsize: int | None) -> None:
        info = await self.fsinfo(self.root)
        self.rsize = max(1, min(rsize or MAX_IO, info.rtmax or MAX_IO, MAX_IO))
        self.wsize = max(1, min(wsize or MAX_IO, info.wtmax or MAX_IO, MAX_IO))
        self.dtpref = max(4096, min(info.dtpref or 32768, 1 << 20))

    async def _enter_subdir(self, path: str) -> None:
        """When MNT took a prefix of the URL ``path``, the rest must exist: a directory, to
        which paths are then relative (as when the server mounts it directly), or a file,
        kept as ``subpath`` beside the directory mounted. A missing one is an error naming
        ``path``: paths relative to some other directory would put files where the user
        never said."""
        if not self.subpath:
            return
        try:
            fh, attr = await self._walk(self.subpath, True)
        except NfsError as exc:
            raise exc.to_oserror(path) from exc
        if attr.type == Ftype3.DIR:
            self.root, self.subpath = fh, ""

    async def close(self) -> None:
        """UMNT (best effort, RFC 1813 section 5.2.3), then close the connections. UMNT is
        skipped when the connection is already down (no reconnect, no wait for a dead
        server) and bounded by ``UMNT_TIMEOUT`` otherwise."""
        if self.mount_rpc.connected:
            try:
                p = Packer()
                p.pack_string(self.export.encode("utf-8", "surrogateescape"))
                umnt = self.mount_rpc.call(
                    MOUNT_PROGRAM, MOUNT_V3, MountProc.UMNT, p.buffers(), self.cred,
                    "MOUNT UMNT", timeout=UMNT_TIMEOUT,
                )  # fmt: skip
                await asyncio.wait_for(umnt, UMNT_TIMEOUT)
            except (OSError, NfsError, TimeoutError, XdrError, Exception):  # noqa: BLE001
                pass
        await self.rpc.close()
        if self.mount_rpc is not self.rpc:
            await self.mount_rpc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- procedures (RFC 1813 section 3.3) -------------------------------------------------

    async def _nfs(
        self,
        proc: NfsProc,
        args: Callable[[Packer], None],
        resok: Callable[[Unpacker], T],
        resent: Callable[[NfsError], Awaitable[T | None]] | None = None,
    ) -> T:
        """One procedure: call, decode, raise NfsError; JUKEBOX answers are retried (new
        xid: a new request) after each of ``jukebox_waits``, the last one surfaces.
        ``resent``: for an error answering a call sent more than once, the result the
        first send must have had, if ``resent`` finds it did succeed (else None)."""
        if self.read_only and proc in CHANGES:
            raise NfsError(Nfsstat3.ROFS, f"NFS3 {proc.name}: the url says readonly")
        p = Packer()
        args(p)
        buffers, label = p.buffers(), f"NFS3 {proc.name}"

        async def attempt() -> T:
            if resent is None:
                u = await self.rpc.call(NFS_PROGRAM, NFS_V3, proc, buffers, self._cred(), label)
                return _results(proc, u, resok, label)
            u, sends = await self.rpc.call_counted(
                NFS_PROGRAM, NFS_V3, proc, buffers, self._cred(), label
            )
            try:
                return _results(proc, u, resok, label)
            except NfsError as exc:
                if sends <= 1 or exc.status == Nfsstat3.JUKEBOX:
                    raise
                done = await resent(exc)
                if done is None:
                    raise
                self.rpc.stats.resent_errors += 1
                log.info("%s: %s answered a resend; the first send did it", label, exc.status.name)
                return done

        return await self._past_jukebox(label, attempt)

    def _cred(self) -> OpaqueAuth:
        return acting_as.get() or self.cred

    async def _past_jukebox(self, label: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()``, made again (a new request: new xid, as the Linux client does)
        while the server answers NFS3ERR_JUKEBOX, after each of ``jukebox_waits``; the
        answer after the last wait surfaces, whatever it is."""
        waits: Iterator[float] | None = None  # worked out on the first JUKEBOX only
        while True:
            try:
                return await attempt()
            except NfsError as exc:
                if exc.status != Nfsstat3.JUKEBOX:
                    raise
                waits = waits or iter(jukebox_waits(self.rpc.options))
                wait = next(waits, None)
                if wait is None:
                    raise
            self.rpc.stats.jukebox_retries += 1
            log.debug("%s: server busy (JUKEBOX), trying again in %.2f s", label, wait)
            await asyncio.sleep(wait)

    async def null(self) -> None:
        await self.rpc.call(NFS_PROGRAM, NFS_V3, NfsProc.NULL, [], self._cred(), "NFS3 NULL")

    async def getattr(self, fh: bytes) -> Attr:
        res = await self._nfs(NfsProc.GETATTR, t.FhArgs(fh).pack, r.unpack_attr_res)
        self.cache.put_attr(fh, res.obj_attributes)
        return res.obj_attributes

    async def setattr(self, fh: bytes, attrs: SetAttr, guard_ctime_ns: int | None = None) -> t.Wcc:
        args = t.SetattrArgs(fh, attrs, guard_ctime_ns)
        self.cache.forget(fh)
        return (await self._nfs(NfsProc.SETATTR, args.pack, r.unpack_wcc_res)).wcc

    async def lookup(self, dir: bytes, name: Name) -> t.LookupRes:
        args = t.LookupArgs(t.DirOpArgs(dir, _name(name)))
        res = await self._nfs(NfsProc.LOOKUP, args.pack, r.unpack_lookup_res)
        self.cache.put_name(dir, _name(name), res.object)
        self.cache.put_attr(res.object, res.obj_attributes)
        self.cache.put_attr(dir, res.dir_attributes)
        return res

    async def access(self, fh: bytes, access: int) -> t.AccessRes:
        return await self._nfs(NfsProc.ACCESS, t.AccessArgs(fh, access).pack, r.unpack_access_res)

    async def readlink(self, fh: bytes) -> bytes:
        res = await self._nfs(NfsProc.READLINK, t.FhArgs(fh).pack, r.unpack_readlink_res)
        return res.data

    async def read(self, fh: bytes, offset: int, count: int) -> t.ReadRes:
        args = t.ReadArgs(fh, offset, count)
        return await self._nfs(NfsProc.READ, args.pack, r.unpack_read_res)

    async def read_into(self, fh: bytes, offset: int, dest: memoryview) -> t.ReadRes:
        """READ of up to ``min(len(dest), rsize)`` bytes at ``offset`` into ``dest``: over
        TCP the reply's data is received straight into it (``client.placement``), else
        copied there. The result's ``data`` is ``dest[:count]``; JUKEBOX as in ``_nfs``."""
        dest = memoryview(dest).cast("B")[: self.rsize]
        p = Packer()
        t.ReadArgs(fh, offset, len(dest)).pack(p)
        buffers, label = p.buffers(), "NFS3 READ"

        async def attempt() -> t.ReadRes:
            u, placed = await self.rpc.call_into(
                NFS_PROGRAM, NFS_V3, NfsProc.READ, buffers, self._cred(), label, dest=dest
            )
            return _results(NfsProc.READ, u, _read_into_res(dest, placed), label)

        return await self._past_jukebox(label, attempt)

    async def write(
        self,
        fh: bytes,
        offset: int,
        data: bytes | bytearray | memoryview,
        stable: StableHow = StableHow.UNSTABLE,
    ) -> t.WriteRes:
        view = memoryview(data).cast("B")
        args = t.WriteArgs(fh, offset, len(view), stable, view)
        self.cache.forget(fh)
        return await self._nfs(NfsProc.WRITE, args.pack, r.unpack_write_res)

    async def create(
        self,
        dir: bytes,
        name: Name,
        attrs: SetAttr | None = None,
        mode: CreateMode = CreateMode.UNCHECKED,
        verf: bytes = b"\0" * 8,
    ) -> t.CreateRes:
        where = t.DirOpArgs(dir, _name(name))
        args = t.CreateArgs(where, mode, attrs or SetAttr(mode=0o644), verf)
        token = self.cache.changing(dir, where.name)
        res = await self._nfs(NfsProc.CREATE, args.pack, r.unpack_create_res)
        self.cache.changed(dir, token, res.dir_wcc.after)
        return res

    async def create_exclusive(
        self, dir: bytes, name: Name, attrs: SetAttr | None = None
    ) -> t.CreateRes:
        """Create a file that must not exist yet, safely under retransmission: EXCLUSIVE
        with a fresh verifier (a resent CREATE finds the verifier and succeeds, RFC 1813
        section 3.3.8), then SETATTR of ``attrs`` (the server kept the verifier in the
        times); GUARDED where the server has no EXCLUSIVE (NOTSUPP). The result always
        has the handle and the attributes: the SETATTR reply's own (its wcc after), a
        GETATTR only where the server sent none."""
        attrs = attrs or SetAttr(mode=0o644)
        try:
            res = await self.create(dir, name, None, CreateMode.EXCLUSIVE, os.urandom(8))
        except NfsError as exc:
            if exc.status != Nfsstat3.NOTSUPP:
                raise
            res = await self.create(dir, name, attrs, CreateMode.GUARDED)
            fh = res.obj or (await self.lookup(dir, name)).object
            return t.CreateRes(fh, res.obj_attributes or await self.getattr(fh), res.dir_wcc)
        fh = res.obj or (await self.lookup(dir, name)).object
        now = dataclasses.replace(attrs, atime_ns=SERVER_TIME, mtime_ns=SERVER_TIME)
        after = (await self.setattr(fh, now)).after
        return t.CreateRes(fh, after or await self.getattr(fh), res.dir_wcc)

    async def mkdir(self, dir: bytes, name: Name, attrs: SetAttr | None = None) -> t.CreateRes:
        args = t.MkdirArgs(t.DirOpArgs(dir, _name(name)), attrs or SetAttr(mode=0o755))
        token = self.cache.changing(dir, _name(name))
        made = self._made(dir, name, Nfsstat3.EXIST, lambda a: a.type == Ftype3.DIR)
        res = await self._nfs(NfsProc.MKDIR, args.pack, r.unpack_create_res, made)
        self.cache.changed(dir, token, res.dir_wcc.after)
        return res

    async def symlink(
        self, dir: bytes, name: Name, target: Name, attrs: SetAttr | None = None
    ) -> t.CreateRes:
        where = t.DirOpArgs(dir, _name(name))
        args = t.SymlinkArgs(where, attrs or SetAttr(), _name(target))
        self.cache.forget_dir(dir, where.name)

        async def made(exc: NfsError) -> t.CreateRes | None:
            res = await self._made(dir, name, Nfsstat3.EXIST, lambda a: a.type == Ftype3.LNK)(exc)
            if res is None or res.obj is None or await self.readlink(res.obj) != _name(target):
                return None
            return res

        return await self._nfs(NfsProc.SYMLINK, args.pack, r.unpack_create_res, made)

    async def mknod(
        self,
        dir: bytes,
        name: Name,
        ftype: Ftype3,
        attrs: SetAttr | None = None,
        rdev: tuple[int, int] = (0, 0),
    ) -> t.CreateRes:
        args = t.MknodArgs(t.DirOpArgs(dir, _name(name)), ftype, attrs or SetAttr(), rdev)
        self.cache.forget_dir(dir, _name(name))
        made = self._made(dir, name, Nfsstat3.EXIST, lambda a: a.type == ftype)
        return await self._nfs(NfsProc.MKNOD, args.pack, r.unpack_create_res, made)

    async def remove(self, dir: bytes, name: Name) -> t.Wcc:
        args = t.RemoveArgs(t.DirOpArgs(dir, _name(name)))
        token = self.cache.changing(dir, _name(name))
        gone = self._gone(dir, name, t.WccRes(t.Wcc()))
        wcc = (await self._nfs(NfsProc.REMOVE, args.pack, r.unpack_wcc_res, gone)).wcc
        self.cache.changed(dir, token, wcc.after)
        return wcc

    async def rmdir(self, dir: bytes, name: Name) -> t.Wcc:
        args = t.RemoveArgs(t.DirOpArgs(dir, _name(name)))
        token = self.cache.changing(dir, _name(name))
        gone = self._gone(dir, name, t.WccRes(t.Wcc()))
        wcc = (await self._nfs(NfsProc.RMDIR, args.pack, r.unpack_wcc_res, gone)).wcc
        self.cache.changed(dir, token, wcc.after)
        return wcc

    async def rename(
        self, fromdir: bytes, fromname: Name, todir: bytes, toname: Name
    ) -> t.RenameRes:
        args = t.RenameArgs(
            t.DirOpArgs(fromdir, _name(fromname)), t.DirOpArgs(todir, _name(toname))
        )
        self.cache.forget_dir(fromdir, _name(fromname))
        self.cache.forget_dir(todir, _name(toname))

        async def moved(exc: NfsError) -> t.RenameRes | None:
            if exc.status != Nfsstat3.NOENT:
                return None
            gone = await self._gone(fromdir, fromname, True)(exc)
            there = await self._made(todir, toname, Nfsstat3.NOENT, lambda a: True)(exc)
            return t.RenameRes(t.Wcc(), t.Wcc()) if gone and there else None

        return await self._nfs(NfsProc.RENAME, args.pack, r.unpack_rename_res, moved)

    async def link(self, fh: bytes, dir: bytes, name: Name) -> t.LinkRes:
        args = t.LinkArgs(fh, t.DirOpArgs(dir, _name(name)))
        self.cache.forget(fh)
        self.cache.forget_dir(dir, _name(name))

        async def linked(exc: NfsError) -> t.LinkRes | None:
            fileid = (await self.getattr(fh)).fileid
            res = await self._made(dir, name, Nfsstat3.EXIST, lambda a: a.fileid == fileid)(exc)
            return None if res is None else t.LinkRes(res.obj_attributes, t.Wcc())

        return await self._nfs(NfsProc.LINK, args.pack, r.unpack_link_res, linked)

    # -- errors answering a resend (see the module doc) ------------------------------------

    def _gone(self, dir: bytes, name: Name, result: T) -> Callable[[NfsError], Awaitable[T | None]]:
        """For a resent removal answered NOENT: ``result`` if ``name`` is indeed gone."""

        async def check(exc: NfsError) -> T | None:
            if exc.status != Nfsstat3.NOENT:
                return None
            try:
                await self.lookup(dir, name)
            except NfsError as again:
                return result if again.status == Nfsstat3.NOENT else None
            return None

        return check

    def _made(
        self, dir: bytes, name: Name, status: Nfsstat3, fits: Callable[[Attr], bool]
    ) -> Callable[[NfsError], Awaitable[t.CreateRes | None]]:
        """For a resent creation answered ``status``: what LOOKUP finds at ``name``, if
        it ``fits`` what the call would have made."""

        async def check(exc: NfsError) -> t.CreateRes | None:
            if exc.status != status:
                return None
            try:
                res = await self.lookup(dir, name)
            except NfsError:
                return None
            attr = res.obj_attributes or await self.getattr(res.object)
            return t.CreateRes(res.object, attr, t.Wcc()) if fits(attr) else None

        return check

    async def readdir(
        self, dir: bytes, cookie: int = 0, cookieverf: bytes = t.COOKIEVERF_ZERO, count: int = 0
    ) -> t.ReaddirRes:
        args = t.ReaddirArgs(dir, cookie, cookieverf, count or self.dtpref, 0)
        return await self._nfs(NfsProc.READDIR, args.pack, r.unpack_readdir_res)

    async def readdirplus(
        self,
        dir: bytes,
        cookie: int = 0,
        cookieverf: bytes = t.COOKIEVERF_ZERO,
        dircount: int = 0,
        maxcount: int = 0,
    ) -> t.ReaddirRes:
        dircount = dircount or self.dtpref
        args = t.ReaddirArgs(dir, cookie, cookieverf, dircount, maxcount or 8 * dircount)
        res = await self._nfs(NfsProc.READDIRPLUS, args.pack_plus, r.unpack_readdirplus_res)
        for e in res.entries:
            if e.handle is not None and e.name not in (b".", b".."):
                self.cache.put_name(dir, e.name, e.handle)
                self.cache.put_attr(e.handle, e.attr)
        return res

    async def fsstat(self, fh: bytes) -> t.FsstatRes:
        return await self._nfs(NfsProc.FSSTAT, t.FhArgs(fh).pack, r.unpack_fsstat_res)

    async def fsinfo(self, fh: bytes) -> t.FsinfoRes:
        return await self._nfs(NfsProc.FSINFO, t.FhArgs(fh).pack, r.unpack_fsinfo_res)

    async def pathconf(self, fh: bytes) -> t.PathconfRes:
        return await self._nfs(NfsProc.PATHCONF, t.FhArgs(fh).pack, r.unpack_pathconf_res)

    async def commit(self, fh: bytes, offset: int = 0, count: int = 0) -> t.CommitRes:
        args = t.CommitArgs(fh, offset, count)
        return await self._nfs(NfsProc.COMMIT, args.pack, r.unpack_commit_res)

    # -- paths ---------------------------------------------------------------------------

    async def resolve(self, path: str, follow_symlinks: bool = False) -> tuple[bytes, Attr]:
        """Handle and attributes of ``path`` (relative to the mounted directory), by LOOKUP
        per component. Symlinks are not followed unless ``follow_symlinks``; then every
        link on the way is (at most MAX_SYMLINKS). Raises OSError naming ``path``."""
        try:
            return await self._walk(path, follow_symlinks)
        except NfsError as exc:
            raise exc.to_oserror(path) from None

    async def _cached_getattr(self, fh: bytes) -> Attr:
        """Attributes from the cache while fresh, else GETATTR."""
        return self.cache.attr(fh) or await self.getattr(fh)

    async def _cached_lookup(self, dir: bytes, name: str) -> tuple[bytes, Attr]:
        """Handle and attributes of ``name`` in ``dir``, from the cache while fresh."""
        fh = self.cache.name(dir, _name(name))
        attr = self.cache.attr(fh) if fh is not None else None
        if fh is not None and attr is not None:
            return fh, attr
        res = await self.lookup(dir, name)
        return res.object, res.obj_attributes or await self.getattr(res.object)

    async def _walk(self, path: str, follow: bool) -> tuple[bytes, Attr]:
        todo, stack = _parts(path)[::-1], [(self.root, await self._cached_getattr(self.root))]
        links = 0
        while todo:
            name = todo.pop()
            if name == "..":
                stack = stack[:-1] or stack
                continue
            fh, attr = await self._cached_lookup(stack[-1][0], name)
            if attr.type == Ftype3.LNK and follow:
                links += 1
                if links > MAX_SYMLINKS:
                    raise OSError(40, "too many levels of symbolic links", path)  # ELOOP
                target = _str(await self.readlink(fh))
                stack = stack[:1] if target.startswith("/") else stack
                todo.extend(_parts(target)[::-1])
                continue
            stack.append((fh, attr))
        return stack[-1]


def _read_into_res(dest: memoryview, placed: int | None) -> Callable[[Unpacker], t.ReadRes]:
    """READ3resok whose data is in ``dest`` already (``placed`` bytes) or follows in the
    reply (copied into ``dest``, never beyond it)."""

    def resok(u: Unpacker) -> t.ReadRes:
        attr, count, eof = r.unpack_post_op_attr(u), u.unpack_uint(), u.unpack_bool()
        n = u.unpack_uint()
        if n != count or n > len(dest):
            raise XdrError(f"READ count {count}, {n} bytes of data for {len(dest)} asked")
        if placed is None:
            dest[:n] = u.unpack_fopaque(n)
        elif placed != n:
            raise XdrError(f"READ count {n} but {placed} bytes placed")
        return t.ReadRes(attr, count, eof, dest[:n])

    return resok


def _results(proc: NfsProc, u: Unpacker, resok: Callable[[Unpacker], T], label: str) -> T:
    """The ``resok`` arm, or NfsError; a reply that does not decode is GarbageReply."""
    try:
        return procedures.unpack_result(proc, u, resok)
    except XdrError as exc:
        raise GarbageReply(f"{label}: undecodable results: {exc}") from exc

"""Protocol tests' helpers: a Ferry server in a thread, NFS and MOUNT calls decoded by hand.

The raw RPC client itself (``RawClient``: no retries, no pipelining, malformed input on
request) is a reusable tool, ``ferry.testing.rawrpc``; it is re-exported here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from ferry.nfs3.const import MOUNT_PROGRAM, Nfsstat3
from ferry.server.aio import AsyncServer, Limits
from ferry.server.app import App, build_app
from ferry.server.config import ExportConfig, ServerConfig
from ferry.server.inline import InlinePolicy
from ferry.testing.rawrpc import RawClient as RawClient
from ferry.testing.rawrpc import Reply as Reply
from ferry.testing.rawrpc import parse_reply as parse_reply
from ferry.xdr import Packer, Unpacker


@dataclass
class RunningServer:
    app: App
    port: int
    root: Path | None
    stop: Callable[[], None]

    def client(self) -> RawClient:
        return RawClient(self.port)


@contextmanager
def serve_in_thread(
    config: ServerConfig,
    limits: Limits | None = None,
    port: int = 0,
    inline: Callable[[App], InlinePolicy] = App.inline_policy,
    new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop,
) -> Iterator[RunningServer]:
    """Run an AsyncServer for ``config`` on a loopback port (0: a free one) in a background
    thread named ``ferry-loop`` (``inline``: its inline policy, the App's own by default;
    ``new_loop``: makes its event loop).
    Whatever was made is undone in reverse order however far start-up got (a
    port in use, a bad config): no thread, loop or descriptor outlives the block."""
    with ExitStack() as stack:
        app = build_app(config)
        stack.callback(app.close)
        loop = new_loop()
        stack.callback(loop.close)
        thread = threading.Thread(target=loop.run_forever, name="ferry-loop", daemon=True)
        thread.start()
        stack.callback(thread.join, 10)
        stack.callback(loop.call_soon_threadsafe, loop.stop)
        server = AsyncServer(app.dispatcher(0), limits, inline=inline(app))
        stack.callback(lambda: asyncio.run_coroutine_threadsafe(server.close(), loop).result(10))

        async def start() -> int:
            bound = await server.listen("127.0.0.1", port)
            server.dispatcher = app.dispatcher(bound)
            return bound

        bound = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
        root = Path(config.exports[0].path) if config.exports[0].backend == "local" else None
        yield RunningServer(app, bound, root, stack.close)


def local_config(root: Path, state: Path, **export_kw: object) -> ServerConfig:
    return ServerConfig(
        exports=[ExportConfig(path=str(root), **export_kw)],  # type: ignore[arg-type]
        state_dir=state,
    )


# -- small NFSv3 / MOUNT / portmap helpers for the RPC, MOUNT, security and restart tests ---
# Module-level functions over a RawClient; results are decoded by hand (not with Ferry's
# own codecs) so a codec bug cannot hide itself.


@dataclass
class Fattr:
    """The fields of fattr3 the tests look at."""

    type: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    fsid: int
    fileid: int


def unpack_fattr(u: Unpacker) -> Fattr:
    ftype, mode, nlink, uid, gid = (u.unpack_uint() for _ in range(5))
    size, _used = u.unpack_uhyper(), u.unpack_uhyper()
    u.unpack_uint(), u.unpack_uint()  # rdev
    fsid, fileid = u.unpack_uhyper(), u.unpack_uhyper()
    for _ in range(6):  # atime, mtime, ctime
        u.unpack_uint()
    return Fattr(ftype, mode, nlink, uid, gid, size, fsid, fileid)


def unpack_post_op_attr(u: Unpacker) -> Fattr | None:
    return unpack_fattr(u) if u.unpack_bool() else None


def skip_wcc(u: Unpacker) -> None:
    if u.unpack_bool():  # pre_op_attr: size, mtime, ctime
        u.unpack_uhyper()
        for _ in range(4):
            u.unpack_uint()
    unpack_post_op_attr(u)


def pack_sattr(
    p: Packer,
    mode: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    size: int | None = None,
) -> None:
    p.pack_optional(mode, p.pack_uint)
    p.pack_optional(uid, p.pack_uint)
    p.pack_optional(gid, p.pack_uint)
    p.pack_optional(size, p.pack_uhyper)
    p.pack_uint(0)  # atime DONT_CHANGE
    p.pack_uint(0)  # mtime DONT_CHANGE


def _diropargs(p: Packer, dirfh: bytes, name: bytes | str) -> None:
    p.pack_opaque(dirfh)
    p.pack_opaque(name.encode() if isinstance(name, str) else name)


def nfs_getattr(c: RawClient, fh: bytes) -> tuple[Nfsstat3, Fattr | None]:
    status, u = c.nfs(1, lambda p: p.pack_opaque(fh))
    return status, (unpack_fattr(u) if status == Nfsstat3.OK else None)


def nfs_lookup(
    c: RawClient, dirfh: bytes, name: bytes | str
) -> tuple[Nfsstat3, bytes | None, Fattr | None]:
    """LOOKUP: (status, handle, object attributes)."""
    status, u = c.nfs(3, lambda p: _diropargs(p, dirfh, name))
    if status != Nfsstat3.OK:
        return status, None, None
    fh = bytes(u.unpack_opaque(64))
    return status, fh, unpack_post_op_attr(u)


def nfs_read(
    c: RawClient, fh: bytes, offset: int = 0, count: int = 4096
) -> tuple[Nfsstat3, bytes | None]:
    def build(p: Packer) -> None:
        p.pack_opaque(fh)
        p.pack_uhyper(offset)
        p.pack_uint(count)

    status, u = c.nfs(6, build)
    if status != Nfsstat3.OK:
        return status, None
    unpack_post_op_attr(u)
    n, _eof = u.unpack_uint(), u.unpack_bool()
    data = bytes(u.unpack_opaque())
    assert len(data) == n
    return status, data


def nfs_write(
    c: RawClient, fh: bytes, data: bytes, offset: int = 0, stable: int = 2
) -> tuple[Nfsstat3, bytes | None]:
    """WRITE: (status, write verifier)."""

    def build(p: Packer) -> None:
        p.pack_opaque(fh)
        p.pack_uhyper(offset)
        p.pack_uint(len(data))
        p.pack_uint(stable)
        p.pack_opaque(data)

    status, u = c.nfs(7, build)
    if status != Nfsstat3.OK:
        return status, None
    skip_wcc(u)
    count, _committed = u.unpack_uint(), u.unpack_uint()
    assert count == len(data)
    return status, bytes(u.unpack_fopaque(8))


def nfs_commit(c: RawClient, fh: bytes) -> tuple[Nfsstat3, bytes | None]:
    """COMMIT of the whole file: (status, write verifier)."""

    def build(p: Packer) -> None:
        p.pack_opaque(fh)
        p.pack_uhyper(0)
        p.pack_uint(0)

    status, u = c.nfs(21, build)
    if status != Nfsstat3.OK:
        return status, None
    skip_wcc(u)
    return status, bytes(u.unpack_fopaque(8))


def nfs_create(
    c: RawClient, dirfh: bytes, name: bytes | str, mode: int | None = 0o644, how: int = 0
) -> tuple[Nfsstat3, bytes | None, Fattr | None]:
    """CREATE (UNCHECKED by default): (status, handle, attributes)."""

    def build(p: Packer) -> None:
        _diropargs(p, dirfh, name)
        p.pack_uint(how)
        pack_sattr(p, mode=mode)

    status, u = c.nfs(8, build)
    if status != Nfsstat3.OK:
        return status, None, None
    fh = bytes(u.unpack_opaque(64)) if u.unpack_bool() else None
    return status, fh, unpack_post_op_attr(u)


def nfs_mkdir(
    c: RawClient, dirfh: bytes, name: bytes | str, mode: int = 0o755
) -> tuple[Nfsstat3, bytes | None]:
    def build(p: Packer) -> None:
        _diropargs(p, dirfh, name)
        pack_sattr(p, mode=mode)

    status, u = c.nfs(9, build)
    if status != Nfsstat3.OK:
        return status, None
    return status, (bytes(u.unpack_opaque(64)) if u.unpack_bool() else None)


def nfs_setattr(
    c: RawClient, fh: bytes, mode: int | None = None, size: int | None = None
) -> Nfsstat3:
    def build(p: Packer) -> None:
        p.pack_opaque(fh)
        pack_sattr(p, mode=mode, size=size)
        p.pack_bool(False)  # no guard

    return c.nfs(2, build)[0]


def nfs_remove(c: RawClient, dirfh: bytes, name: bytes | str) -> Nfsstat3:
    return c.nfs(12, lambda p: _diropargs(p, dirfh, name))[0]


def nfs_rename(
    c: RawClient, fromdir: bytes, fromname: bytes | str, todir: bytes, toname: bytes | str
) -> Nfsstat3:
    def build(p: Packer) -> None:
        _diropargs(p, fromdir, fromname)
        _diropargs(p, todir, toname)

    return c.nfs(14, build)[0]


def mount_status(c: RawClient, path: str | bytes) -> tuple[int, bytes | None]:
    """MNT that may fail: (mountstat3, handle or None)."""
    p = Packer()
    p.pack_string(path)
    u = c.call(MOUNT_PROGRAM, 3, 1, p.get_buffer()).ok()
    status = u.unpack_uint()
    if status != 0:
        return status, None
    return status, bytes(u.unpack_opaque(64))


def open_fd_count() -> int:
    """Descriptors open in this process (Linux)."""
    import os

    return len(os.listdir("/proc/self/fd"))

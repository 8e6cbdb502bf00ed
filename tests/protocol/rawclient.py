"""A deliberately small RPC-over-TCP client for protocol tests: no retries, no pipelining.

It builds calls byte by byte from Ferry's XDR layer so tests can send malformed input too.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ferry.config import ExportConfig, ServerConfig
from ferry.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, Nfsstat3
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.message import NULL_AUTH, CallHeader, OpaqueAuth
from ferry.rpc.record import frame_bytes
from ferry.server.aio import AsyncServer, Limits
from ferry.server.app import App, build_app
from ferry.xdr import Packer, Unpacker


@dataclass
class Reply:
    xid: int
    reply_stat: int  # 0 accepted, 1 denied
    stat: int  # accept_stat or reject_stat
    body: Unpacker

    def ok(self) -> Unpacker:
        assert (self.reply_stat, self.stat) == (0, 0), f"rpc failed: {self.reply_stat}/{self.stat}"
        return self.body


class RawClient:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.xid = 0x1000
        self.cred: OpaqueAuth = encode_auth_sys(0, 0)

    def close(self) -> None:
        self.sock.close()

    def as_user(self, uid: int, gid: int, gids: tuple[int, ...] = ()) -> None:
        self.cred = encode_auth_sys(uid, gid, gids)

    def send_record(self, data: bytes) -> None:
        self.sock.sendall(frame_bytes(data))

    def recv_record(self) -> bytes:
        chunks = []
        while True:
            (header,) = struct.unpack(">I", self._recv_exact(4))
            chunks.append(self._recv_exact(header & 0x7FFFFFFF))
            if header & 0x80000000:
                return b"".join(chunks)

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return bytes(buf)

    def call_bytes(self, prog: int, vers: int, proc: int, args: bytes = b"",
                   cred: OpaqueAuth | None = None, rpcvers: int = 2) -> bytes:
        self.xid += 1
        p = Packer()
        CallHeader(self.xid, rpcvers, prog, vers, proc, cred or self.cred, NULL_AUTH).pack(p)
        return p.get_buffer() + args

    def call(self, prog: int, vers: int, proc: int, args: bytes = b"", **kw: object) -> Reply:
        self.send_record(self.call_bytes(prog, vers, proc, args, **kw))  # type: ignore[arg-type]
        return parse_reply(self.recv_record())

    def nfs(self, proc: int, build: Callable[[Packer], None] | None = None) -> tuple[Nfsstat3, Unpacker]:
        p = Packer()
        if build:
            build(p)
        u = self.call(NFS_PROGRAM, 3, proc, p.get_buffer()).ok()
        return Nfsstat3(u.unpack_uint()), u

    def mount(self, path: str) -> bytes:
        p = Packer()
        p.pack_string(path)
        u = self.call(MOUNT_PROGRAM, 3, 1, p.get_buffer()).ok()
        status = u.unpack_uint()
        assert status == 0, f"MNT {path} -> {status}"
        return bytes(u.unpack_opaque(64))


def parse_reply(data: bytes) -> Reply:
    u = Unpacker(data)
    xid, mtype, reply_stat = u.unpack_uint(), u.unpack_uint(), u.unpack_uint()
    assert mtype == 1
    if reply_stat == 0:
        u.unpack_uint()
        u.unpack_opaque(400)  # verifier
    return Reply(xid, reply_stat, u.unpack_uint(), u)


@dataclass
class RunningServer:
    app: App
    port: int
    root: Path | None
    stop: Callable[[], None]

    def client(self) -> RawClient:
        return RawClient(self.port)


@contextmanager
def serve_in_thread(config: ServerConfig, limits: Limits | None = None) -> Iterator[RunningServer]:
    """Run an AsyncServer for ``config`` on a loopback port in a background thread."""
    app = build_app(config)
    loop = asyncio.new_event_loop()
    server = AsyncServer(app.dispatcher(0), limits)
    ready = threading.Event()
    port_box: list[int] = []

    async def start() -> None:
        port_box.append(await server.listen("127.0.0.1", 0))
        server.dispatcher = app.dispatcher(port_box[0])
        ready.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    ready.wait(10)

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        app.close()

    root = Path(config.exports[0].path) if config.exports[0].backend == "local" else None
    try:
        yield RunningServer(app, port_box[0], root, stop)
    finally:
        stop()


def local_config(root: Path, state: Path, **export_kw: object) -> ServerConfig:
    return ServerConfig(exports=[ExportConfig(path=str(root), **export_kw)],  # type: ignore[arg-type]
                        state_dir=state)

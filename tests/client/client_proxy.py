"""A fault-injecting loopback TCP proxy for RPC-over-TCP, for the client tests.

It parses records in both directions, so it knows which xid and procedure each call and
reply belong to. Knobs (set before or during a test): drop the reply to one chosen call,
hold replies and send them reversed (out of order), hold WRITE calls and pass them to the
server reversed (as a server free to run concurrent calls in any order may), cut the
connection after N replies (or in the middle of the Nth), flip the verifier of the first
COMMIT reply, or act as a server that restarted after N WRITEs (every later WRITE and
COMMIT reply with another verifier). It records every forwarded call's xid (what the
server saw) and the most calls the server had outstanding at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Callable

from ferry.rpc.record import RecordReader, frame_bytes

_CALL = struct.Struct(">IIIIII")  # xid, msg_type, rpcvers, prog, vers, proc
WRITE, COMMIT = 7, 21  # NFSv3 procedure numbers


class Proxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.calls: list[tuple[int, int]] = []  # (xid, proc) as forwarded to the server
        self.procs: dict[int, int] = {}
        self.outstanding: set[int] = set()
        self.max_in_flight = 0
        self.drop_reply: Callable[[int, int], bool] | None = None  # (xid, proc) -> drop?
        self.dropped: list[int] = []
        self.reorder = False
        self.reordered = 0
        self.cut_after_replies: int | None = None
        self.cut_inside_reply: int | None = None  # send half of the Nth reply, then cut
        self._halted: set[int] = set()  # writers whose replies are no longer forwarded
        self.cuts = 0
        self.flip_commit_verf = False
        self.reorder_writes = False  # WRITE calls held (50 ms) and forwarded newest first
        self.writes_reordered = 0
        self.restart_after_writes: int | None = None  # verifier changes after N WRITEs
        self._write_replies = 0
        self.replies = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
        await self._server.wait_closed()

    def xid_counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for xid, _ in self.calls:
            counts[xid] = counts.get(xid, 0) + 1
        return counts

    async def _accept(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [cw, sw]
        pair = (cw, sw)
        up = asyncio.ensure_future(self._pump(cr, sw, self._on_call, pair))
        down = asyncio.ensure_future(self._pump(sr, cw, self._on_reply, pair))
        self._tasks |= {up, down}
        await asyncio.wait([up, down], return_when=asyncio.FIRST_COMPLETED)
        for w in pair:
            w.close()

    async def _pump(self, reader, writer, handle, pair) -> None:  # type: ignore[no-untyped-def]
        rr = RecordReader(1 << 24)
        for _ in range(10_000_000):  # bounded: one iteration per received chunk
            data = await reader.read(1 << 20)
            if not data:
                return
            rr.receive_data(data)
            while (rec := rr.next_record()) is not None:
                for out in handle(bytes(rec), writer, pair):
                    writer.write(frame_bytes(out))
            await writer.drain()

    def _on_call(self, rec: bytes, writer, pair) -> list[bytes]:  # type: ignore[no-untyped-def]
        xid, _, _, _, _, proc = _CALL.unpack_from(rec)
        self.calls.append((xid, proc))
        self.procs[xid] = proc
        self.outstanding.add(xid)
        self.max_in_flight = max(self.max_in_flight, len(self.outstanding))
        if self.reorder_writes and proc == WRITE:
            return self._hold_write(rec, writer)
        return [rec]

    def _hold_write(self, rec: bytes, writer) -> list[bytes]:  # type: ignore[no-untyped-def]
        """WRITEs wait (50 ms at most) for the next one, then both go newest first."""
        held: list[bytes] | None = getattr(writer, "_held_writes", None)
        if held:
            writer._held_writes = []
            self.writes_reordered += 1
            return [rec, *held[::-1]]
        writer._held_writes = held = [rec]
        asyncio.get_running_loop().call_later(0.05, self._release_writes, writer, held)
        return []

    def _release_writes(self, writer, held: list[bytes]) -> None:  # type: ignore[no-untyped-def]
        if getattr(writer, "_held_writes", None) is held and held and not writer.is_closing():
            writer._held_writes = []
            for rec in held:
                writer.write(frame_bytes(rec))

    def _on_reply(self, rec: bytes, writer, pair) -> list[bytes]:  # type: ignore[no-untyped-def]
        (xid,) = struct.unpack_from(">I", rec)
        self.outstanding.discard(xid)
        proc = self.procs.get(xid, -1)
        if self.drop_reply is not None and self.drop_reply(xid, proc):
            self.drop_reply = None
            self.dropped.append(xid)
            return []
        if self.flip_commit_verf and proc == COMMIT:
            self.flip_commit_verf = False
            rec = _flip_verf(rec)
        if self.restart_after_writes is not None and proc in (WRITE, COMMIT):
            if proc == WRITE:
                self._write_replies += 1
            if self._write_replies > self.restart_after_writes:
                rec = _flip_verf(rec)  # as from the restarted server
        if id(writer) in self._halted:
            return []
        self.replies += 1
        if self.cut_inside_reply is not None and self.replies >= self.cut_inside_reply:
            self.cut_inside_reply = None
            self.cuts += 1
            self._halted.add(id(writer))
            framed = frame_bytes(rec)
            writer.write(framed[: len(framed) // 2])
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, lambda: [w.transport.abort() for w in pair])
            return []
        if self.cut_after_replies is not None and self.replies >= self.cut_after_replies:
            self.cut_after_replies = None
            self.cuts += 1
            for w in pair:
                w.transport.abort()
            return []
        if self.reorder:
            return self._hold(rec, writer)
        return [rec]

    def _hold(self, rec: bytes, writer) -> list[bytes]:  # type: ignore[no-untyped-def]
        held: list[bytes] = getattr(writer, "_held", [])
        held.append(rec)
        writer._held = held
        if len(held) >= 3:
            writer._held = []
            self.reordered += 1
            return held[::-1]
        asyncio.get_running_loop().call_later(0.05, self._flush, writer, held)
        return []

    def _flush(self, writer, held: list[bytes]) -> None:  # type: ignore[no-untyped-def]
        if getattr(writer, "_held", None) is held and held and not writer.is_closing():
            writer._held = []
            for rec in held[::-1]:
                writer.write(frame_bytes(rec))


def _flip_verf(rec: bytes) -> bytes:
    """A WRITE or COMMIT reply with another verifier (its last 8 bytes, RFC 1813 3.3.7)."""
    return rec[:-8] + bytes(b ^ 0xFF for b in rec[-8:])


def url_for(port: int, root: object) -> str:
    """The URL of a Ferry export on loopback, MOUNT sharing the NFS port."""
    return f"nfs://127.0.0.1:{port}{root}"


async def through_proxy(port: int, root: object, body, **kw):  # type: ignore[no-untyped-def]
    """Run ``body(client, proxy)`` with an AsyncNfsClient connected through a fresh Proxy
    in front of the server on ``port``; both are closed afterwards."""
    from ferry.client import AsyncNfsClient

    proxy = Proxy(port)
    proxy_port = await proxy.start()
    client = await AsyncNfsClient.connect(url_for(proxy_port, root), **kw)
    try:
        return await body(client, proxy)
    finally:
        await client.close()
        await proxy.close()

#!/usr/bin/env python3
"""The echo ceiling: a pure-Python ONC RPC server that does no work, on uvloop.

It cuts the TCP stream into records (record marking, RFC 5531 section 11) and answers
each call with a fixed GETATTR-shaped reply (accepted, NFS3_OK, a zeroed fattr3: the size
of a real GETATTR reply) carrying the call's XID. What it reaches at 32 calls in flight
is what a Python server on this machine could do if answering cost nothing: the gap
between it and ``ferry serve`` is Ferry's own work (``ferry bench server`` measures both
in the same run, with the same load generator). Three modes:

* ``batched``: the replies to everything one read brought go out in one write;
* ``per-call``: one write per reply (a server that answers each call on its own);
* ``thread-hop``: each call goes to a worker thread and its reply comes back to the loop
  with ``call_soon_threadsafe``, one write per reply: the hand-off Ferry's async server
  makes for every call, with nothing else.

    python benchmarks/echo_server.py [--port N] [--mode batched|per-call|thread-hop]
    # prints "echo: serving on 127.0.0.1:N"
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import signal
import struct
import threading
from collections.abc import Callable

LAST = 0x80000000
# xid | REPLY, MSG_ACCEPTED, AUTH_NONE verifier (flavor, length), SUCCESS | NFS3_OK, fattr3
BODY = struct.pack(">5I", 1, 0, 0, 0, 0) + struct.pack(">I", 0) + bytes(84)
MARK = struct.pack(">I", LAST | (4 + len(BODY)))
MODES = ("batched", "per-call", "thread-hop")


def answer(call: bytes) -> bytes:
    """The framed reply to one call record."""
    return MARK + call[:4] + BODY


class Echo(asyncio.Protocol):
    """One connection: records in, one canned reply per record out."""

    mode = "batched"
    jobs: queue.SimpleQueue[tuple[bytes, Callable[[bytes], None]]] = queue.SimpleQueue()

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        records = []
        at = 0
        while len(buf) - at >= 4:
            n = int.from_bytes(buf[at : at + 4], "big") & ~LAST
            if len(buf) - at - 4 < n:
                break
            records.append(bytes(buf[at + 4 : at + 4 + n]))  # single-fragment calls
            at += 4 + n
        del buf[:at]
        if not records or self.transport is None:
            return
        if self.mode == "batched":
            self.transport.write(b"".join(answer(r) for r in records))
        elif self.mode == "per-call":
            for r in records:
                self.transport.write(answer(r))
        else:
            for r in records:
                self.jobs.put((r, self._done))

    def _done(self, reply: bytes) -> None:  # in a worker thread
        self.loop.call_soon_threadsafe(self._write, reply)

    def _write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)


def worker() -> None:
    while True:
        call, done = Echo.jobs.get()
        done(answer(call))


async def serve(port: int, threads: int) -> None:
    loop = asyncio.get_running_loop()
    for _ in range(threads if Echo.mode == "thread-hop" else 0):
        threading.Thread(target=worker, daemon=True).start()
    server = await loop.create_server(Echo, "127.0.0.1", port, reuse_address=True)
    print(f"echo: serving on 127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--mode", choices=MODES, default="batched")
    p.add_argument("--threads", type=int, default=8, help="worker threads (thread-hop)")
    args = p.parse_args()
    Echo.mode = args.mode
    try:
        import uvloop
    except ImportError:  # the ceiling of plain asyncio, then (said in the banner)
        print("echo: uvloop missing, using asyncio's default loop", flush=True)
        asyncio.run(serve(args.port, args.threads))
    else:
        uvloop.run(serve(args.port, args.threads))


if __name__ == "__main__":
    main()

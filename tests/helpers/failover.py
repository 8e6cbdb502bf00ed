"""Two ``ferry serve`` processes over one directory with one handle key, for failover tests.

A handle from one server works on the other (``handle.key`` copied into both state
directories), so a client can move between them mid-transfer; ``kill`` ends (or stops) one.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path

from ferry.client import AsyncNfsClient
from helpers import peers


@contextlib.contextmanager
def server_pair(export: Path, base: Path) -> Iterator[list[peers.FerryServer]]:
    """Servers A and B on ``export`` (state and logs under ``base``); afterwards both are
    stopped (resumed first if SIGSTOPped) and neither may have written a traceback."""
    key = os.urandom(32)
    servers = []
    for name in "ab":
        state = base / f"state-{name}"
        state.mkdir()
        (state / "handle.key").write_bytes(key)
        servers.append(
            peers.FerryServer(export, state, base / f"logs-{name}",
                              extra_args=["--no-root-squash"])
        )  # fmt: skip
    try:
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            if s.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(s.proc.pid, signal.SIGCONT)
            s.stop()
        for s in servers:
            assert not s.tracebacks(), s.tracebacks()


def kill(server: peers.FerryServer, sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to a server's process group; after SIGKILL, reap it (not a 'problem')."""
    assert server.proc is not None
    os.killpg(server.proc.pid, sig)
    if sig == signal.SIGKILL:
        server.proc.wait(timeout=30)
        server.proc = None


def url_of(servers: Sequence[peers.FerryServer], export: str | Path) -> str:
    """``nfs://a:pa,b:pb/export``: every server of the list, in order."""
    netloc = ",".join(f"{s.host}:{s.port}" for s in servers)
    return f"nfs://{netloc}{export}"


async def read_killing(
    client: AsyncNfsClient, name: str, victim: peers.FerryServer, after: int, chunk: int = 1 << 20
) -> bytes:
    """All of ``name``, read through ``client`` in ``chunk`` pieces; once ``after`` bytes
    have arrived, ``victim`` (the server the client is talking to) is SIGKILLed."""
    got = bytearray()
    async with await client.open(name, "rb") as f:
        for _ in range(1 << 20):  # bounded: each round reads at least a byte
            piece = await f.read(chunk)
            if not piece:
                break
            got += piece
            if len(got) == after:
                assert victim.proc is not None and client.rpc.port == victim.port
                kill(victim)
    return bytes(got)

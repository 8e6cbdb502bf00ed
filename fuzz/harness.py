"""Shared pieces of the fuzz targets: a memory-backed server, call builders, the oracles.

The oracles are deliberately independent of the code under test: call records are built
with plain ``int.to_bytes`` and replies are read by ``fuzz.replies``. A broken invariant
raises ``Finding`` (an AssertionError), which atheris reports as a crash.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import struct
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ferry.rpc.dispatch import Dispatcher
from ferry.server.app import App, build_app
from ferry.server.config import ExportConfig, ServerConfig
from fuzz import replies

# -- findings and logging --------------------------------------------------------------------


class Finding(AssertionError):
    """An invariant of the code under test does not hold for this input."""


class _Capture(logging.Handler):
    """Keeps the last ERROR record: the dispatcher logs the exception behind SYSTEM_ERR."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.last: logging.LogRecord | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record


CAPTURE = _Capture()
_ferry_log = logging.getLogger("ferry")
_ferry_log.addHandler(CAPTURE)
_ferry_log.setLevel(logging.ERROR)  # no formatting cost for the INFO lines garbage causes
_ferry_log.propagate = False


def captured_exception() -> str:
    rec = CAPTURE.last
    if rec is None:
        return "(nothing logged)"
    text = rec.getMessage()
    if rec.exc_info and rec.exc_info[1] is not None:
        text += f": {rec.exc_info[1]!r}"
    return text


# -- XDR building (independent of ferry.xdr) -------------------------------------------------


def u32(v: int) -> bytes:
    return (v & 0xFFFFFFFF).to_bytes(4, "big")


def u64(v: int) -> bytes:
    return (v & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big")


def opaque(data: bytes) -> bytes:
    return u32(len(data)) + data + b"\0" * ((4 - len(data) % 4) % 4)


def auth_sys(uid: int, gid: int, gids: tuple[int, ...] = (), machine: bytes = b"fuzz") -> bytes:
    body = u32(0) + opaque(machine) + u32(uid) + u32(gid) + u32(len(gids))
    return u32(1) + opaque(body + b"".join(u32(g) for g in gids))


AUTH_NONE = u32(0) + opaque(b"")
# Credential choices for structured calls: (credential, rpcvers).
CREDS: tuple[tuple[bytes, int], ...] = (
    (AUTH_NONE, 2),
    (auth_sys(0, 0), 2),
    (auth_sys(1000, 1000, (1000, 0, 27)), 2),
    (auth_sys(65534, 65534), 2),
    (u32(6) + opaque(b"gss"), 2),  # RPCSEC_GSS: AUTH_TOOWEAK
    (u32(1) + opaque(b"\0\0\0\0\xff\xff\xff\xff"), 2),  # AUTH_SYS that does not decode
    (auth_sys(0, 0, machine=b"\xff" * 300), 2),  # machine name over 255
    (AUTH_NONE, 3),  # RPC_MISMATCH
    (u32(1) + opaque(b"\0" * 404), 2),  # body over 400 bytes
)


def call(xid: int, prog: int, vers: int, proc: int, args: bytes = b"", cred: int = 0) -> bytes:
    """An RPC call record (no record mark)."""
    credential, rpcvers = CREDS[cred % len(CREDS)]
    return (
        u32(xid)
        + u32(0)
        + u32(rpcvers)
        + u32(prog)
        + u32(vers)
        + u32(proc)
        + credential
        + (AUTH_NONE + args)
    )


# -- the server under test -------------------------------------------------------------------

_STATE = Path(tempfile.gettempdir()) / "ferry-fuzz-state"  # stays empty: the key is given
CAPACITY = 1 << 20
MAX_FILES = 64
RW_EXPORT, RO_EXPORT = "/mem", "/ro"


def new_app() -> App:
    """Two memory exports: /mem read-write without root squash, /ro read-only and limited
    to 10.0.0.0/8; small capacities so state stays small."""
    opts = {"capacity": CAPACITY, "max_files": MAX_FILES}
    config = ServerConfig(
        exports=[
            ExportConfig(path=RW_EXPORT, backend="memory", options=opts, root_squash=False),
            ExportConfig(
                path=RO_EXPORT,
                backend="memory",
                options=dict(opts),
                read_only=True,
                clients=("10.0.0.0/8",),
            ),
        ],
        state_dir=_STATE,
        handle_key=bytes(32),
    )
    return build_app(config)


HANDLE_TOKEN = re.compile(rb"@FH(.)", re.S)
"""In structured calls, ``@FH`` + k stands for a complete nfs_fh3 (length + handle): file id
``1 + k % 16`` of export ``k // 16 % 2``, with that export's generation, so the fuzzer
reaches past handle checks; seeds put the token wherever a handle goes."""


@dataclasses.dataclass
class Server:
    app: App
    dispatcher: Dispatcher
    handles: list[list[bytes]]

    @classmethod
    def create(cls) -> Server:
        app = new_app()
        handles = []
        for export in app.exports:
            gen = export.backend.getattr(export.backend.root()).generation
            codec = app.nfs.handles
            handles.append([codec.encode(export.export_id, fid, gen) for fid in range(1, 17)])
        return cls(app, app.dispatcher(2049), handles)

    def expand(self, args: bytes) -> bytes:
        def sub(m: re.Match[bytes]) -> bytes:
            k = m.group(1)[0]
            return opaque(self.handles[k // 16 % 2][k % 16])

        return HANDLE_TOKEN.sub(sub, args)


# -- the dispatch oracle ---------------------------------------------------------------------

_HEAD = struct.Struct(">6I")


def check_exchange(record: bytes, reply: list[bytes | bytearray | memoryview] | None) -> None:
    """Everything ``Dispatcher.handle(record)`` must satisfy, decided from the bytes alone."""
    if len(record) < 4:
        if reply is not None:
            raise Finding("a record without an xid got a reply")
        return
    if len(record) >= 8 and int.from_bytes(record[4:8], "big") != 0:
        if reply is not None:
            raise Finding("a non-CALL message got a reply")
        return
    if reply is None:
        raise Finding("a CALL got no reply")
    data = b"".join(bytes(b) for b in reply)
    try:
        r = replies.parse_reply(data)
    except replies.Malformed as exc:
        raise Finding(f"malformed RPC reply: {exc}; reply={data[:200].hex()}") from exc
    xid = int.from_bytes(record[:4], "big")
    if r.xid != xid:
        raise Finding(f"reply xid {r.xid:#x} for call xid {xid:#x}")
    if r.accepted and r.stat == replies.SYSTEM_ERR:
        raise Finding(f"SYSTEM_ERR: a handler raised: {captured_exception()}")
    rpcvers = int.from_bytes(record[8:12], "big") if len(record) >= 12 else None
    if rpcvers is not None and rpcvers != 2:  # nothing after rpcvers can be trusted
        if r.accepted or r.stat != replies.RPC_MISMATCH or r.mismatch != (2, 2):
            raise Finding(f"rpcvers {rpcvers} answered with {r}")
        return
    if len(record) < 24:
        if not (r.accepted and r.stat == replies.GARBAGE_ARGS):
            raise Finding(f"truncated header answered with {r}")
        return
    _, _, _, prog, vers, proc = _HEAD.unpack_from(record)
    if not r.accepted:
        return  # AUTH_ERROR: the credential is judged by the rpc_header target
    if r.stat == replies.GARBAGE_ARGS:
        return
    expected = _expected_stat(prog, vers, proc)
    if r.stat != expected:
        raise Finding(f"prog={prog} vers={vers} proc={proc}: accept_stat {r.stat}, not {expected}")
    if r.stat == replies.PROG_MISMATCH and r.mismatch != replies.VERSIONS[prog]:
        raise Finding(f"PROG_MISMATCH range {r.mismatch} for program {prog}")
    if r.stat == replies.SUCCESS:
        _, parse = replies.PROGRAMS[(prog, vers)]
        try:
            parse(proc, r.results)
        except replies.Malformed as exc:
            raise Finding(
                f"prog={prog} proc={proc}: malformed results: {exc}; "
                f"results={r.results[:300].hex()}"
            ) from exc


def _expected_stat(prog: int, vers: int, proc: int) -> int:
    if prog not in replies.VERSIONS:
        return replies.PROG_UNAVAIL
    if (prog, vers) not in replies.PROGRAMS:
        return replies.PROG_MISMATCH
    procs, _ = replies.PROGRAMS[(prog, vers)]
    return replies.SUCCESS if proc in procs else replies.PROC_UNAVAIL


# -- memory bounds ---------------------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class MemoryGuard:
    """Every ``every`` inputs: the input runs under tracemalloc and its peak allocation must
    stay under ``bound(len(data))``; and resident memory must stay within ``rss_growth`` of
    what it was after the first sampled input (state leaking across inputs)."""

    def __init__(self, bound: Callable[[int], int], every: int = 64) -> None:
        self.bound = bound
        self.every = int(os.environ.get("FUZZ_MEMCHECK_EVERY", every))
        self.rss_growth = int(os.environ.get("FUZZ_RSS_GROWTH_MB", "512")) << 20
        self.count = 0
        self.baseline: int | None = None

    @contextmanager
    def watch(self, size: int) -> Iterator[None]:
        self.count += 1
        if self.every <= 0 or self.count % self.every:
            yield
            return
        tracemalloc.start()
        try:
            yield
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        limit = self.bound(size)
        if peak > limit:
            raise Finding(f"peak allocation {peak} bytes for a {size}-byte input (limit {limit})")
        rss = rss_bytes()
        if self.baseline is None:
            self.baseline = rss
        elif rss > self.baseline + self.rss_growth:
            raise Finding(f"RSS grew from {self.baseline} to {rss} bytes")

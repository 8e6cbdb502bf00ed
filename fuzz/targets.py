"""The fuzz targets: each takes one input (bytes) and raises only on a real finding.

========== ===============================================================================
record     RecordReader fed arbitrary (or generated well-formed) streams in arbitrary
           chunks, both feeding APIs; compared with a reference parser; bounded memory
rpc_header call header and credentials: only XdrError, re-encoding round-trips
nfs3_args  each NFSv3 procedure's argument decoder (first byte picks it): only XdrError
mount_args each MOUNT procedure handler (decoding plus work): only XdrError
pmap_args  each portmap procedure handler: only XdrError
dispatch   Dispatcher.handle on raw records, or on sequences of valid calls with fuzzed
           arguments against memory exports: no exception, every reply well-formed,
           same xid, right accept_stat, bounded memory
========== ===============================================================================
"""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import Callable

from ferry.errors import RecordError, XdrError
from ferry.nfs3.const import MOUNT_PROGRAM, MOUNT_V3, NFS_PROGRAM, NFS_V3
from ferry.nfs3.procedures import PROCEDURES
from ferry.rpc.auth import Credentials, decode_credentials, encode_auth_sys
from ferry.rpc.dispatch import Address, CallContext, Handler
from ferry.rpc.message import NULL_AUTH, AuthFlavor, CallHeader, read_xid, unpack_call
from ferry.rpc.portmap import PMAP_PROGRAM, PMAP_V2
from ferry.rpc.record import DEFAULT_MAX_RECORD, RecordReader
from ferry.xdr import Packer, Unpacker
from fuzz import harness, replies
from fuzz.harness import Finding

Target = Callable[[bytes], None]

# -- record marking ----------------------------------------------------------------------------

MAX_RECORDS = (0, 1, 7, 100, 4096, 70_000, DEFAULT_MAX_RECORD)
_MARK = struct.Struct(">I")


def reference_records(stream: bytes, max_record: int) -> tuple[list[bytes], bool, bool]:
    """RFC 5531 section 11 record marking, the obvious way: (records, error, incomplete).

    The size rule matches Ferry's: a record is refused as soon as a fragment header makes
    (earlier fragments + 4 bytes per earlier header + this fragment) exceed the limit."""
    records: list[bytes] = []
    frags: list[bytes] = []
    size = pos = 0
    while len(stream) - pos >= 4:
        (mark,) = _MARK.unpack_from(stream, pos)
        length, last = mark & 0x7FFFFFFF, bool(mark >> 31)
        if size + length > max_record:
            return records, True, True
        if len(stream) - pos - 4 < length:
            break
        frag = stream[pos + 4 : pos + 4 + length]
        pos += 4 + length
        if last:
            records.append(b"".join([*frags, frag]))
            frags, size = [], 0
        else:
            frags.append(frag)
            size += length + 4
    return records, False, pos < len(stream) or bool(frags)


def _generated_stream(spec: bytes, rng: random.Random) -> bytes:
    """Well-formed records described by ``spec``: per fragment a 3-byte length (scaled so
    large fragments occur) and a last flag; contents are filled deterministically."""
    out = bytearray()
    for i in range(0, len(spec) - 2, 3):
        raw = int.from_bytes(spec[i : i + 3], "big")
        last = bool(raw & 1)
        length = raw >> 1
        if raw & 2:
            length &= 0xFF  # mostly small fragments
        length = min(length, 300_000)
        if len(out) + length > 1 << 19:
            break
        out += _MARK.pack((0x80000000 if last else 0) | length)
        out += rng.randbytes(length)
    return bytes(out)


def record(data: bytes) -> None:
    if len(data) < 4:
        return
    flags, max_record = data[0], MAX_RECORDS[data[1] % len(MAX_RECORDS)]
    rng = random.Random(int.from_bytes(data[2:4], "big"))
    payload = data[4:]
    stream = _generated_stream(payload, rng) if flags & 1 else payload
    expected, error, incomplete = reference_records(stream, max_record)
    max_chunk = (1, 3, 17, 4096, 70_000, 1 << 21)[(flags >> 2) % 6]
    max_chunk = max(max_chunk, len(stream) // 500)  # at most ~1000 feeds per input
    with _record_memory.watch(len(stream) + max_record):
        _feed(stream, max_record, flags, rng, max_chunk, expected, error, incomplete)


def _feed(
    stream: bytes,
    max_record: int,
    flags: int,
    rng: random.Random,
    max_chunk: int,
    expected: list[bytes],
    error: bool,
    incomplete: bool,
) -> None:
    reader = RecordReader(max_record)
    view = memoryview(stream)
    got = 0
    raised = False
    use_buffer = bool(flags & 2)
    while view and not raised:
        n = rng.randint(1, max_chunk)
        chunk = view[:n]
        if use_buffer:  # the recv_into / BufferedProtocol path
            buf = reader.get_buffer()
            if not len(buf):
                raise Finding("get_buffer() returned an empty buffer")
            n = min(len(buf), len(chunk))
            buf[:n] = chunk[:n]
            reader.buffer_updated(n)
        else:
            n = len(chunk)
            reader.receive_data(chunk)
        view = view[n:]
        # Held before this chunk: at most the record so far (max_record, plus 4 bytes per
        # non-last header, which count towards the limit) and 3 bytes of the next header.
        if reader.buffered > max_record + 7 + n:
            raise Finding(f"{reader.buffered} bytes buffered, limit {max_record} + chunk {n}")
        while True:
            try:
                rec = reader.next_record()
            except RecordError:
                raised = True
                break
            if rec is None:
                break
            if got >= len(expected) or bytes(rec) != expected[got]:
                raise Finding(f"record {got} differs from the reference ({len(rec)} bytes)")
            got += 1
    if raised:
        try:
            reader.next_record()
        except RecordError:
            pass
        else:
            raise Finding("RecordError is not sticky")
    if raised != error:
        raise Finding(f"RecordError raised: {raised}, expected: {error}")
    if got != len(expected):
        raise Finding(f"{got} records delivered, {len(expected)} expected")
    if not error:
        if flags & 0x80:
            reader.eof_received()
        else:
            reader.receive_data(b"")
        if not reader.eof or reader.incomplete != incomplete:
            raise Finding(f"after EOF: incomplete={reader.incomplete}, expected {incomplete}")


# One input may hold a record of max_record bytes three times over (fragments, the joined
# record, the copy compared) plus the 64 KiB assembly buffer and the chunk in flight.
_record_memory = harness.MemoryGuard(lambda n: 4 * n + (1 << 20), every=32)

# -- RPC call header and credentials -----------------------------------------------------------


def _decode_header(data: bytes | bytearray) -> tuple[CallHeader, int]:
    u = Unpacker(data)
    xid = read_xid(u)
    return unpack_call(u, xid), u.position


def rpc_header(data: bytes) -> None:
    try:
        header, used = _decode_header(data)
    except XdrError:
        return
    try:  # a proper prefix of what decoded must not decode
        _decode_header(data[: used - 1])
    except XdrError:
        pass
    else:
        raise Finding(f"header decodes from {used - 1} of its {used} bytes")
    if header.rpcvers != 2:
        return
    p = Packer()
    header.pack(p)
    again, _ = _decode_header(p.get_buffer())
    if again != header:
        raise Finding(f"re-encoded header decodes differently: {header} -> {again}")
    try:
        cred = decode_credentials(header.cred)
    except XdrError:
        return
    _check_credentials(header, cred)


def _check_credentials(header: CallHeader, cred: Credentials) -> None:
    if header.cred.flavor == AuthFlavor.AUTH_NONE:
        return
    if header.cred.flavor != AuthFlavor.AUTH_SYS:
        raise Finding(f"flavor {header.cred.flavor} accepted")
    if len(cred.gids) > 16 or len(cred.machine.encode()) > 3 * 255:
        raise Finding(f"credential bounds exceeded: {cred}")
    if len(cred.machine.encode()) <= 255:
        auth = encode_auth_sys(cred.uid, cred.gid, cred.gids, cred.machine, cred.stamp)
        if decode_credentials(auth) != cred:
            raise Finding(f"AUTH_SYS does not round-trip: {cred}")


# -- per-procedure argument decoders -------------------------------------------------------------


def nfs3_args(data: bytes) -> None:
    if not data:
        return
    proc = PROCEDURES[data[0] % len(PROCEDURES)]
    body = data[1:]
    u = Unpacker(body)
    try:
        args = proc.args(u)
    except XdrError:
        return
    used = u.position
    if used == 0:
        raise Finding(f"{proc.number.name} arguments decoded from no bytes")
    try:
        proc.args(Unpacker(body[: used - 1]))
    except XdrError:
        pass
    else:
        raise Finding(f"{proc.number.name} arguments decode from {used - 1} of {used} bytes")
    for name in ("object", "file", "dir"):
        fh = getattr(args, name, None)
        if isinstance(fh, bytes) and len(fh) > 64:
            raise Finding(f"{proc.number.name}: a {len(fh)}-byte handle decoded")


_CTX_HEADER = CallHeader(1, 2, 0, 0, 0, NULL_AUTH, NULL_AUTH)


def _context(client: Address) -> CallContext:
    return CallContext(_CTX_HEADER, Credentials(AuthFlavor.AUTH_SYS, 0, 0), client)


def _program_args(prog: int, vers: int) -> Target:
    def target(data: bytes) -> None:
        if not data:
            return
        server = harness.Server.create()
        table: dict[int, Handler] = dict(server.dispatcher.programs[prog].versions[vers])
        procs = sorted(table)
        handler = table[procs[data[0] % len(procs)]]
        client: Address = ("127.0.0.1", 800) if data[0] & 0x80 else None
        with contextlib.suppress(XdrError):
            handler(Unpacker(server.expand(data[1:])), _context(client), Packer())

    return target


mount_args = _program_args(MOUNT_PROGRAM, MOUNT_V3)
pmap_args = _program_args(PMAP_PROGRAM, PMAP_V2)

# -- whole dispatch ------------------------------------------------------------------------------

# Structured call selector -> (program, version).
_PROGRAMS = (
    (NFS_PROGRAM, NFS_V3),
    (NFS_PROGRAM, NFS_V3),
    (NFS_PROGRAM, NFS_V3),
    (MOUNT_PROGRAM, MOUNT_V3),
    (PMAP_PROGRAM, PMAP_V2),
    (NFS_PROGRAM, 4),  # PROG_MISMATCH
    (MOUNT_PROGRAM, 1),
    (100021, 4),  # NLM: PROG_UNAVAIL
)
_CLIENTS: tuple[Address, ...] = (None, ("127.0.0.1", 800), ("10.1.2.3", 700), ("::1", 900, 0, 0))
_CALL = struct.Struct(">BBBBH")
MAX_CALLS = 64


def split_calls(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """Structured input: repeated [selector, proc, cred, flags, u16 length, arguments]."""
    calls = []
    pos = 0
    while pos + _CALL.size <= len(data) and len(calls) < MAX_CALLS:
        sel, proc, cred, flags, n = _CALL.unpack_from(data, pos)
        pos += _CALL.size
        calls.append((sel, proc, cred, flags, data[pos : pos + n]))
        pos += n
    return calls


def join_calls(calls: list[tuple[int, int, int, int, bytes]]) -> bytes:
    return b"".join(_CALL.pack(s, p, c, f, len(a)) + a for s, p, c, f, a in calls)


def dispatch(data: bytes) -> None:
    if not data:
        return
    with _dispatch_memory.watch(len(data)):
        if data[0] & 1:
            _dispatch_calls(data[1:])
        else:
            server = harness.Server.create()
            record: bytes | bytearray = bytearray(data[1:]) if data[0] & 2 else data[1:]
            _exchange(server, record, _CLIENTS[data[0] >> 2 & 3])


def _exchange(server: harness.Server, record: bytes | bytearray, client: Address) -> bytes:
    harness.CAPTURE.last = None
    try:
        reply = server.dispatcher.handle(record, client)
    except Exception as exc:
        raise Finding(f"Dispatcher.handle raised {exc!r}") from exc
    harness.check_exchange(bytes(record), reply)
    return b"".join(bytes(b) for b in reply or ())


def _dispatch_calls(data: bytes) -> None:
    server = harness.Server.create()
    for xid, (sel, proc, cred, flags, raw) in enumerate(split_calls(data), 1):
        prog, vers = _PROGRAMS[sel % len(_PROGRAMS)]
        args = server.expand(raw)
        record = harness.call(xid, prog, vers, proc, args, cred)
        reply = _exchange(server, record, _CLIENTS[flags & 3])
        if (prog, vers) == (NFS_PROGRAM, NFS_V3) and proc in (6, 16, 17):
            _check_sizes(proc, args, reply)


def _check_sizes(proc: int, args: bytes, reply: bytes) -> None:
    """READ returns at most count bytes; READDIR(PLUS) resok fits count (maxcount)."""
    r = replies.parse_reply(reply)
    if not r.accepted or r.stat != replies.SUCCESS or r.results[:4] != b"\0\0\0\0":
        return
    a = replies.Reader(args)
    try:  # the arguments decoded (status OK), but the oracle's reader is stricter
        a.take(a.u32() + 3 & ~3)
        a.u64()
        if proc != 6:
            a.fixed(8)
        count = a.u32()
        if proc == 17:
            count = a.u32()
    except replies.Malformed:
        return
    if proc == 6:
        res = replies.Reader(r.results[4:])
        replies.post_op_attr(res)
        if res.u32() > count:
            raise Finding(f"READ returned more than the {count} bytes asked for")
        return
    size = len(r.results) - 4
    if size > count:
        name = "READDIRPLUS maxcount" if proc == 17 else "READDIR count"
        raise Finding(f"{name} {count} but the resok is {size} bytes")


_dispatch_memory = harness.MemoryGuard(lambda n: (16 << 20) + 64 * n, every=64)

TARGETS: dict[str, Target] = {
    "record": record,
    "rpc_header": rpc_header,
    "nfs3_args": nfs3_args,
    "mount_args": mount_args,
    "pmap_args": pmap_args,
    "dispatch": dispatch,
}

"""An independent parser of RPC replies and NFSv3/MOUNT/portmap results, for fuzz oracles.

It shares no code with Ferry's encoders on purpose: it reads RFC 5531 replies and the
RFC 1813 / RFC 1833 result types from the wire with its own cursor, insists on zero
padding, known enum values and exact lengths, and raises ``Malformed`` on anything else.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

NFS_PROGRAM, MOUNT_PROGRAM, PMAP_PROGRAM = 100003, 100005, 100000
SUCCESS, PROG_UNAVAIL, PROG_MISMATCH, PROC_UNAVAIL, GARBAGE_ARGS, SYSTEM_ERR = range(6)
RPC_MISMATCH, AUTH_ERROR = 0, 1

NFSSTAT3 = frozenset(
    {0, 1, 2, 5, 6, 13, 17, 18, 19, 20, 21, 22, 27, 28, 30, 31, 63, 66, 69, 70, 71}
    | set(range(10001, 10009))
)
MOUNTSTAT3 = frozenset({0, 1, 2, 5, 13, 20, 22, 63, 10004, 10006})
FHSIZE = 64


class Malformed(AssertionError):
    """A reply that is not well-formed XDR for what was called."""


class Reader:
    """A strict XDR cursor."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Malformed(f"truncated at {self.pos}: need {n}, have {len(self.data) - self.pos}")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def u64(self) -> int:
        return int.from_bytes(self.take(8), "big")

    def boolean(self) -> bool:
        v = self.u32()
        if v > 1:
            raise Malformed(f"bool {v} at {self.pos - 4}")
        return v == 1

    def enum(self, allowed: frozenset[int] | range, what: str) -> int:
        v = self.u32()
        if v not in allowed:
            raise Malformed(f"{what} {v} is not a known value")
        return v

    def opaque(self, max_len: int, what: str = "opaque") -> bytes:
        n = self.u32()
        if n > max_len:
            raise Malformed(f"{what} of {n} bytes exceeds {max_len}")
        data = self.take(n)
        pad = self.take((4 - n % 4) % 4)
        if pad.strip(b"\0"):
            raise Malformed(f"non-zero padding after {what}")
        return data

    def fixed(self, n: int) -> bytes:
        return self.take(n)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise Malformed(f"{len(self.data) - self.pos} trailing bytes after the reply")

    def items(self, item: Callable[[Reader], object], limit: int = 1 << 20) -> int:
        """A linked list (``*entry``): bool-follows, item, ...; returns the count."""
        n = 0
        while self.boolean():
            item(self)
            n += 1
            if n > limit:
                raise Malformed("list too long")
        return n


@dataclasses.dataclass
class Reply:
    xid: int
    accepted: bool
    stat: int  # accept_stat when accepted, reject_stat when denied
    results: bytes = b""
    mismatch: tuple[int, int] | None = None
    auth_stat: int | None = None


def parse_reply(data: bytes) -> Reply:
    """The RPC layer of a reply (RFC 5531 section 9); results are returned raw."""
    r = Reader(data)
    xid = r.u32()
    if r.u32() != 1:
        raise Malformed("msg_type is not REPLY")
    reply_stat = r.enum(range(2), "reply_stat")
    if reply_stat == 0:
        r.u32()  # verifier flavor
        r.opaque(400, "verifier body")
        stat = r.enum(range(6), "accept_stat")
        if stat == PROG_MISMATCH:
            low, high = r.u32(), r.u32()
            if low > high:
                raise Malformed(f"prog mismatch low {low} > high {high}")
            r.end()
            return Reply(xid, True, stat, mismatch=(low, high))
        if stat != SUCCESS:
            r.end()
            return Reply(xid, True, stat)
        return Reply(xid, True, stat, results=r.take(len(data) - r.pos))
    stat = r.enum(range(2), "reject_stat")
    if stat == RPC_MISMATCH:
        low, high = r.u32(), r.u32()
        r.end()
        return Reply(xid, False, stat, mismatch=(low, high))
    auth = r.enum(range(1, 8), "auth_stat")
    r.end()
    return Reply(xid, False, stat, auth_stat=auth)


# -- NFSv3 results (RFC 1813 section 3.3) ----------------------------------------------------


def nfstime(r: Reader) -> None:
    r.u32()
    if r.u32() >= 1_000_000_000:
        raise Malformed("nfstime3 nseconds >= 10^9")


def fattr3(r: Reader) -> None:
    r.enum(range(1, 8), "ftype3")
    mode = r.u32()
    if mode > 0o7777:
        raise Malformed(f"mode {mode:o} has bits above 07777")
    r.take(4 * 3)  # nlink uid gid
    r.take(8 * 2)  # size used
    r.take(4 * 2)  # rdev
    r.take(8 * 2)  # fsid fileid
    for _ in range(3):
        nfstime(r)


def post_op_attr(r: Reader) -> None:
    if r.boolean():
        fattr3(r)


def pre_op_attr(r: Reader) -> None:
    if r.boolean():
        r.u64()
        nfstime(r)
        nfstime(r)


def wcc(r: Reader) -> None:
    pre_op_attr(r)
    post_op_attr(r)


def fh(r: Reader) -> bytes:
    return r.opaque(FHSIZE, "nfs_fh3")


def post_op_fh(r: Reader) -> None:
    if r.boolean():
        fh(r)


def _lookup_ok(r: Reader) -> None:
    fh(r)
    post_op_attr(r)
    post_op_attr(r)


def _access_ok(r: Reader) -> None:
    post_op_attr(r)
    r.u32()


def _readlink_ok(r: Reader) -> None:
    post_op_attr(r)
    r.opaque(1 << 20, "nfspath3")


def _read_ok(r: Reader) -> None:
    post_op_attr(r)
    count = r.u32()
    r.boolean()
    data = r.opaque(1 << 30, "read data")
    if len(data) != count:
        raise Malformed(f"READ count {count} but {len(data)} data bytes")


def _write_ok(r: Reader) -> None:
    wcc(r)
    r.u32()
    r.enum(range(3), "stable_how")
    r.fixed(8)


def _create_ok(r: Reader) -> None:
    post_op_fh(r)
    post_op_attr(r)
    wcc(r)


def _entry(r: Reader) -> None:
    r.u64()
    r.opaque(1 << 16, "filename3")
    r.u64()


def _entry_plus(r: Reader) -> None:
    _entry(r)
    post_op_attr(r)
    post_op_fh(r)


def _readdir_ok(entry: Callable[[Reader], None]) -> Callable[[Reader], None]:
    def parse(r: Reader) -> None:
        post_op_attr(r)
        r.fixed(8)
        r.items(entry)
        r.boolean()

    return parse


def _fsstat_ok(r: Reader) -> None:
    post_op_attr(r)
    r.take(6 * 8 + 4)


def _fsinfo_ok(r: Reader) -> None:
    post_op_attr(r)
    r.take(7 * 4 + 8)
    nfstime(r)
    r.u32()


def _pathconf_ok(r: Reader) -> None:
    post_op_attr(r)
    r.take(8)
    for _ in range(4):
        r.boolean()


def _commit_ok(r: Reader) -> None:
    wcc(r)
    r.fixed(8)


def _nothing(r: Reader) -> None:
    pass


def _two_wcc(r: Reader) -> None:
    wcc(r)
    wcc(r)


def _link(r: Reader) -> None:
    post_op_attr(r)
    wcc(r)


# procedure -> (resok parser, resfail parser)
NFS3_RESULTS: dict[int, tuple[Callable[[Reader], None], Callable[[Reader], None]]] = {
    1: (fattr3, _nothing),  # GETATTR
    2: (wcc, wcc),  # SETATTR
    3: (_lookup_ok, post_op_attr),  # LOOKUP
    4: (_access_ok, post_op_attr),  # ACCESS
    5: (_readlink_ok, post_op_attr),  # READLINK
    6: (_read_ok, post_op_attr),  # READ
    7: (_write_ok, wcc),  # WRITE
    8: (_create_ok, wcc),  # CREATE
    9: (_create_ok, wcc),  # MKDIR
    10: (_create_ok, wcc),  # SYMLINK
    11: (_create_ok, wcc),  # MKNOD
    12: (wcc, wcc),  # REMOVE
    13: (wcc, wcc),  # RMDIR
    14: (_two_wcc, _two_wcc),  # RENAME
    15: (_link, _link),  # LINK
    16: (_readdir_ok(_entry), post_op_attr),  # READDIR
    17: (_readdir_ok(_entry_plus), post_op_attr),  # READDIRPLUS
    18: (_fsstat_ok, post_op_attr),  # FSSTAT
    19: (_fsinfo_ok, post_op_attr),  # FSINFO
    20: (_pathconf_ok, post_op_attr),  # PATHCONF
    21: (_commit_ok, wcc),  # COMMIT
}


def parse_nfs3(proc: int, results: bytes) -> int:
    """Check an NFSv3 result; returns its nfsstat3 (NULL returns 0)."""
    r = Reader(results)
    if proc == 0:
        r.end()
        return 0
    status = r.enum(NFSSTAT3, "nfsstat3")
    ok, fail = NFS3_RESULTS[proc]
    (ok if status == 0 else fail)(r)
    r.end()
    return status


# -- MOUNT v3 (RFC 1813 section 5.2) and portmap v2 (RFC 1833 section 3) ---------------------


def _dump_entry(r: Reader) -> None:
    r.opaque(255, "hostname")
    r.opaque(1024, "dirpath")


def _export_entry(r: Reader) -> None:
    r.opaque(1024, "dirpath")
    r.items(lambda g: g.opaque(255, "group name"))


def parse_mount(proc: int, results: bytes) -> int:
    r = Reader(results)
    status = 0
    if proc == 1:  # MNT
        status = r.enum(MOUNTSTAT3, "mountstat3")
        if status == 0:
            fh(r)
            n = r.u32()
            if n > 64:
                raise Malformed(f"{n} auth flavors")
            r.take(4 * n)
    elif proc == 2:  # DUMP
        r.items(_dump_entry)
    elif proc == 5:  # EXPORT
        r.items(_export_entry)
    r.end()
    return status


def parse_portmap(proc: int, results: bytes) -> int:
    r = Reader(results)
    if proc in (1, 2):  # SET, UNSET
        r.boolean()
    elif proc == 3:  # GETPORT
        if r.u32() > 65535:
            raise Malformed("port above 65535")
    elif proc == 4:  # DUMP
        r.items(lambda m: m.take(16))
    r.end()
    return 0


# (program, version) -> (procedures served, result checker)
PROGRAMS: dict[tuple[int, int], tuple[range, Callable[[int, bytes], int]]] = {
    (NFS_PROGRAM, 3): (range(22), parse_nfs3),
    (MOUNT_PROGRAM, 3): (range(6), parse_mount),
    (PMAP_PROGRAM, 2): (range(5), parse_portmap),
}
VERSIONS = {NFS_PROGRAM: (3, 3), MOUNT_PROGRAM: (3, 3), PMAP_PROGRAM: (2, 2)}

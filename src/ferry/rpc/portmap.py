"""A minimal portmapper, version 2 (RFC 1833 section 3): NULL, GETPORT, DUMP.

It answers from a fixed table of the programs this server runs, so clients that insist
on asking portmap work without rpcbind. SET and UNSET are refused (return false): nobody
else registers with us.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from ferry.rpc.dispatch import CallContext, Handler, Program
from ferry.xdr import Packer, Unpacker

PMAP_PROGRAM = 100000
PMAP_V2 = 2
PMAP_PORT = 111
IPPROTO_TCP = 6
IPPROTO_UDP = 17


class PmapProc(enum.IntEnum):
    NULL = 0
    SET = 1
    UNSET = 2
    GETPORT = 3
    DUMP = 4
    CALLIT = 5


@dataclasses.dataclass(frozen=True, slots=True)
class Mapping:
    """``mapping``: program, version, protocol, port."""

    prog: int
    vers: int
    prot: int
    port: int

    def pack(self, p: Packer) -> None:
        for v in (self.prog, self.vers, self.prot, self.port):
            p.pack_uint(v)

    @classmethod
    def unpack(cls, u: Unpacker) -> Mapping:
        return cls(u.unpack_uint(), u.unpack_uint(), u.unpack_uint(), u.unpack_uint())


def portmap_program(mappings: Sequence[Mapping]) -> Program:
    """The portmap program answering from ``mappings`` (the PMAP entry itself is added)."""
    table = list(mappings)

    def null(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        pass

    def refuse(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        Mapping.unpack(u)
        p.pack_bool(False)

    def getport(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        want = Mapping.unpack(u)
        port = next(
            (
                m.port
                for m in table
                if (m.prog, m.vers, m.prot) == (want.prog, want.vers, want.prot)
            ),
            0,
        )
        p.pack_uint(port)

    def dump(u: Unpacker, ctx: CallContext, p: Packer) -> None:
        for m in table:
            p.pack_bool(True)
            m.pack(p)
        p.pack_bool(False)

    procs: dict[int, Handler] = {
        PmapProc.NULL: null,
        PmapProc.SET: refuse,
        PmapProc.UNSET: refuse,
        PmapProc.GETPORT: getport,
        PmapProc.DUMP: dump,
    }
    return Program(PMAP_PROGRAM, "portmap", {PMAP_V2: procs})

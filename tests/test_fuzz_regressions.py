"""Inputs on which a fuzz target found a bug (docs/fuzzing.md, "Findings").

Each test replays the input through its target; each was marked xfail(strict=True)
until its bug was fixed. A plain reproduction through the public API sits next to each
input.
"""

from __future__ import annotations

import base64
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz import harness, targets  # noqa: E402
from fuzz import make_corpus as mc  # noqa: E402
from fuzz.harness import u32, u64  # noqa: E402

from ferry.rpc.record import RecordReader  # noqa: E402


def _big_directory_listing() -> bytes:
    """20 CREATEs in the root, then READDIRPLUS with maxcount 2980: 18 entries fit the
    server's estimate (172 + 18 * 156 bytes) but the resok is 104 + 18 * 160 = 2984 bytes."""
    calls = [
        (mc.NFS, 8, mc.ROOT_CRED, 1, mc.diropargs(mc.ROOT, b"file-%02d" % i) + u32(0) + mc.sattr())
        for i in range(20)
    ]
    calls.append(
        (mc.NFS, 17, mc.ROOT_CRED, 1, mc.ROOT + u64(0) + bytes(8) + u32(1 << 20) + u32(2980))
    )
    return b"\x01" + targets.join_calls(calls)


def test_f1_readdirplus_empty_page_exceeds_maxcount() -> None:
    data = base64.b64decode("AQARAQEAHEBGSAABAAAAAAAAAAAA/////wAAAAAABAAAACAA")
    targets.dispatch(data)


def test_f2_record_buffered_counts_large_fragments_twice() -> None:
    data = bytes.fromhex("0121068d0106010200010131010131010901090111010101")
    targets.record(data)


def test_f2_buffered_is_zero_after_delivery() -> None:
    reader = RecordReader(1 << 20)
    reader.receive_data(struct.pack(">I", 0x80000000 | 70_000) + bytes(70_000))
    assert len(reader.next_record() or b"") == 70_000
    assert reader.buffered == 0


def test_f3_readdirplus_page_exceeds_maxcount() -> None:
    targets.dispatch(_big_directory_listing())


def test_f3_input_is_well_formed() -> None:
    """The F3 input itself is valid: every call before the listing succeeds."""
    server = harness.Server.create()
    for xid, (sel, proc, cred, _, raw) in enumerate(
        targets.split_calls(_big_directory_listing()[1:])
    ):
        prog, vers = targets._PROGRAMS[sel]
        reply = server.dispatcher.handle(
            harness.call(xid, prog, vers, proc, server.expand(raw), cred)
        )
        assert reply is not None
        body = b"".join(bytes(b) for b in reply)
        assert body[20:28] == bytes(8), f"call {xid} failed"  # SUCCESS, NFS3_OK

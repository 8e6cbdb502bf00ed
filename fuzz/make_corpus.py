"""Write the seed corpora, fuzz/corpus/<target>/, from valid calls.

    python fuzz/make_corpus.py        # rewrites every seed file (deterministic)

Seeds are small: one valid instance per procedure (and a few scenarios for dispatch),
so the fuzzer starts past the header checks. In structured dispatch seeds, ``@FH`` + k
stands for a file handle (see fuzz.harness.HANDLE_TOKEN): @FH\\0 is the root of /mem,
@FH\\x10 the root of /ro; created files get ids 2, 3, ... in order.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "src")]

from fuzz.harness import auth_sys, call, opaque, u32, u64  # noqa: E402
from fuzz.targets import MAX_RECORDS, join_calls  # noqa: E402

ROOT, RO_ROOT = b"@FH\x00", b"@FH\x10"


def fh(k: int) -> bytes:
    """Token for file id k + 1 of /mem."""
    return b"@FH" + bytes([k])


def sattr(mode: int | None = 0o644, size: int | None = None, times: int = 0) -> bytes:
    out = u32(1) + u32(mode) if mode is not None else u32(0)
    out += u32(0) + u32(0)  # uid, gid: don't set
    out += u32(1) + u64(size) if size is not None else u32(0)
    for _ in range(2):
        out += u32(times) + (u32(1_700_000_000) + u32(5) if times == 2 else b"")
    return out


def diropargs(d: bytes, name: bytes) -> bytes:
    return d + opaque(name)


# NFSv3 arguments per procedure (RFC 1813 section 3.3), handles as tokens.
NFS3_ARGS: dict[int, list[bytes]] = {
    0: [b""],
    1: [ROOT, fh(1)],
    2: [ROOT + sattr(0o700, times=1) + u32(0), fh(1) + sattr(None, 3, 2) + u32(1) + u64(0)],
    3: [diropargs(ROOT, b"a"), diropargs(ROOT, b".."), diropargs(RO_ROOT, b"x")],
    4: [ROOT + u32(0x3F)],
    5: [fh(3)],
    6: [fh(1) + u64(0) + u32(4096), fh(1) + u64(1 << 40) + u32(1 << 21)],
    7: [
        fh(1) + u64(0) + u32(5) + u32(2) + opaque(b"hello"),
        fh(1) + u64(3) + u32(3) + u32(0) + opaque(b"xyzzy"),
    ],
    8: [
        diropargs(ROOT, b"a") + u32(0) + sattr(),
        diropargs(ROOT, b"b") + u32(1) + sattr(0o600, 0),
        diropargs(ROOT, b"c") + u32(2) + b"verifier",
    ],
    9: [diropargs(ROOT, b"d") + sattr(0o755)],
    10: [diropargs(ROOT, b"l") + sattr(None) + opaque(b"a")],
    11: [
        diropargs(ROOT, b"f") + u32(7) + sattr(0o644),
        diropargs(ROOT, b"k") + u32(4) + sattr(0o600) + u32(1) + u32(3),
        diropargs(ROOT, b"r") + u32(1),
    ],
    12: [diropargs(ROOT, b"a")],
    13: [diropargs(ROOT, b"d")],
    14: [diropargs(ROOT, b"a") + diropargs(fh(4), b"z")],
    15: [fh(1) + diropargs(ROOT, b"hard")],
    16: [ROOT + u64(0) + b"\0" * 8 + u32(4096), ROOT + u64(0) + b"\0" * 8 + u32(200)],
    17: [ROOT + u64(0) + b"\0" * 8 + u32(1024) + u32(8192)],
    18: [ROOT],
    19: [ROOT],
    20: [ROOT],
    21: [fh(1) + u64(0) + u32(0)],
}

MOUNT_ARGS: dict[int, list[bytes]] = {
    0: [b""],
    1: [opaque(b"/mem"), opaque(b"/mem/d"), opaque(b"/ro"), opaque(b"/")],
    2: [b""],
    3: [opaque(b"/mem")],
    4: [b""],
    5: [b""],
}
PMAP_ARGS: dict[int, list[bytes]] = {
    0: [b""],
    1: [u32(100003) + u32(3) + u32(6) + u32(2049)],
    2: [u32(100003) + u32(3) + u32(6) + u32(2049)],
    3: [u32(100005) + u32(3) + u32(6) + u32(0), u32(100003) + u32(3) + u32(17) + u32(0)],
    4: [b""],
}

NFS, MOUNT, PMAP = 0, 3, 4  # structured-call program selectors (fuzz.targets._PROGRAMS)
AUTH_NONE, ROOT_CRED, USER_CRED = 0, 1, 2


def scenarios() -> dict[str, list[tuple[int, int, int, int, bytes]]]:
    """Multi-call dispatch seeds: what a client does after MNT."""
    mnt = (MOUNT, 1, ROOT_CRED, 1, opaque(b"/mem"))
    create = [(NFS, 8, ROOT_CRED, 1, a) for a in NFS3_ARGS[8][:1]]
    write = [(NFS, 7, ROOT_CRED, 1, a) for a in NFS3_ARGS[7]]
    many = [
        (NFS, 8, ROOT_CRED, 1, diropargs(ROOT, b"file-%02d" % i) + u32(0) + sattr())
        for i in range(20)
    ]
    return {
        "mount-create-write-read": [
            mnt,
            *create,
            *write,
            (NFS, 6, ROOT_CRED, 1, fh(1) + u64(0) + u32(100)),
            (NFS, 21, ROOT_CRED, 1, fh(1) + u64(0) + u32(0)),
            (NFS, 1, ROOT_CRED, 1, fh(1)),
        ],
        "tree": [
            (NFS, 9, ROOT_CRED, 1, diropargs(ROOT, b"d") + sattr(0o755)),
            (NFS, 8, ROOT_CRED, 1, diropargs(fh(1), b"f") + u32(0) + sattr()),
            (NFS, 10, ROOT_CRED, 1, diropargs(ROOT, b"l") + sattr(None) + opaque(b"d/f")),
            (NFS, 5, ROOT_CRED, 1, fh(3)),
            (NFS, 15, ROOT_CRED, 1, fh(2) + diropargs(ROOT, b"hard")),
            (NFS, 14, ROOT_CRED, 1, diropargs(fh(1), b"f") + diropargs(ROOT, b"g")),
            (NFS, 12, ROOT_CRED, 1, diropargs(ROOT, b"g")),
            (NFS, 13, ROOT_CRED, 1, diropargs(ROOT, b"d")),
            (NFS, 17, ROOT_CRED, 1, NFS3_ARGS[17][0]),
        ],
        "big-directory-paging": [
            *many,
            (NFS, 16, ROOT_CRED, 1, ROOT + u64(0) + b"\0" * 8 + u32(600)),
            (NFS, 17, ROOT_CRED, 1, ROOT + u64(0) + b"\0" * 8 + u32(600) + u32(2400)),
        ],
        "user-and-readonly": [
            (NFS, 8, USER_CRED, 1, diropargs(ROOT, b"u") + u32(1) + sattr()),
            (NFS, 8, ROOT_CRED, 1, diropargs(RO_ROOT, b"u") + u32(0) + sattr()),
            (NFS, 1, ROOT_CRED, 2, RO_ROOT),
            (MOUNT, 1, AUTH_NONE, 2, opaque(b"/ro")),
            (MOUNT, 2, AUTH_NONE, 1, b""),
            (MOUNT, 5, AUTH_NONE, 1, b""),
        ],
    }


def frame(record: bytes, split: int = 0) -> bytes:
    if split and len(record) > split:
        return u32(split) + record[:split] + u32(0x80000000 | len(record) - split) + record[split:]
    return u32(0x80000000 | len(record)) + record


def seeds() -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {t: [] for t in ("record", "rpc_header", "nfs3_args")}
    sample = [call(7, 100003, 3, 1, opaque(b"\1" * 31)), call(8, 100005, 3, 0)]
    stream = b"".join(frame(r, 12) for r in sample)
    default_max = MAX_RECORDS.index(max(MAX_RECORDS))
    for flags in (0, 2, 0x84, 0x16):
        out["record"].append(bytes([flags, default_max, 0, flags]) + stream)
    # generated mode: (3-byte length << 1 | last) per fragment
    gen = [(5 << 1 | 1), (300 << 1), (2 << 1 | 1), (70_000 << 1 | 1)]
    out["record"].append(
        bytes([1, default_max, 1, 2]) + b"".join(g.to_bytes(3, "big") for g in gen)
    )
    out["record"].append(
        bytes([3, MAX_RECORDS.index(100), 9, 9]) + b"".join(g.to_bytes(3, "big") for g in gen)
    )
    for cred in range(9):
        out["rpc_header"].append(call(cred, 100003, 3, 0, b"", cred))
    out["rpc_header"].append(call(1, 100003, 3, 0, b"", 0)[:8] + u32(1))  # a reply
    out["rpc_header"].append(
        call(2, 100003, 3, 0)[:24] + auth_sys(1, 2, tuple(range(16)), b"m" * 255) + u32(0) * 2
    )
    for proc, variants in NFS3_ARGS.items():
        if proc:
            for a in variants:
                out["nfs3_args"].append(bytes([proc - 1]) + a.replace(b"@FH", b"\0\0\0\x03FH_"))
    out["mount_args"] = [bytes([p]) + a for p, v in MOUNT_ARGS.items() for a in v]
    out["pmap_args"] = [bytes([p]) + a for p, v in PMAP_ARGS.items() for a in v]
    dispatch: list[bytes] = []
    for proc, variants in NFS3_ARGS.items():  # single structured calls
        dispatch += [b"\x01" + join_calls([(NFS, proc, ROOT_CRED, 1, a)]) for a in variants]
    for proc, variants in MOUNT_ARGS.items():
        dispatch += [b"\x01" + join_calls([(MOUNT, proc, AUTH_NONE, 1, a)]) for a in variants]
    for proc, variants in PMAP_ARGS.items():
        dispatch += [b"\x01" + join_calls([(PMAP, proc, AUTH_NONE, 1, a)]) for a in variants]
    dispatch += [b"\x01" + join_calls(calls) for calls in scenarios().values()]
    dispatch += [b"\x00" + r for r in sample] + [b"\x02" + call(9, 100000, 2, 4)]
    out["dispatch"] = dispatch
    return out


def main() -> None:
    for target, items in seeds().items():
        d = HERE / "corpus" / target
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for item in items:
            (d / hashlib.sha1(item).hexdigest()).write_bytes(item)
        print(f"{target}: {len(items)} seeds")


if __name__ == "__main__":
    main()

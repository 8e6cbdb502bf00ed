#!/usr/bin/env python3
"""A small-request third-party client: libnfs (C, the library behind ``nfs-cp``) reading or
writing a file in BLOCK-byte ``nfs_pread``/``nfs_pwrite`` calls, one at a time.

This is the pattern of libnfs's FUSE client, fuse-nfs, which hands each FUSE request (4 KiB
for writes without big_writes) to ``nfs_pread``/``nfs_pwrite`` synchronously: one NFS READ
or WRITE per request, one in flight. fuse-nfs is not packaged in Debian 12, so the same
calls are made here through ctypes on Debian's libnfs (``libnfs13``, installed with
``libnfs-utils``). ``nfs-cp`` honours no rsize/wsize URL option (libnfs 4.0 has none), so
this is how ``ferry bench server`` sends a third-party 4 KiB-request stream.

    python benchmarks/libnfs_io.py read  URL SIZE [BLOCK]   # URL: nfs://127.0.0.1/EXPORT/FILE
    python benchmarks/libnfs_io.py write URL SIZE [BLOCK]   #  ?version=3&nfsport=N&mountport=N

Prints one line: ``<bytes> <seconds>``, timed from mount to close (a write then
``nfs_fsync``: COMMIT, so the data is stable before the clock stops).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import time

O_RDONLY, O_WRONLY, O_CREAT, O_TRUNC = os.O_RDONLY, os.O_WRONLY, os.O_CREAT, os.O_TRUNC


class NfsUrl(ctypes.Structure):
    """``struct nfs_url`` of libnfs.h: server, path, file."""

    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p), ("file", ctypes.c_char_p)]


def load() -> ctypes.CDLL:
    name = ctypes.util.find_library("nfs") or "libnfs.so.13"
    lib = ctypes.CDLL(name)
    p, u64 = ctypes.c_void_p, ctypes.c_uint64
    sigs = {
        "nfs_init_context": ([], p),
        "nfs_destroy_context": ([p], None),
        "nfs_get_error": ([p], ctypes.c_char_p),
        "nfs_parse_url_full": ([p, ctypes.c_char_p], ctypes.POINTER(NfsUrl)),
        "nfs_destroy_url": ([ctypes.POINTER(NfsUrl)], None),
        "nfs_mount": ([p, ctypes.c_char_p, ctypes.c_char_p], ctypes.c_int),
        "nfs_open": ([p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(p)], ctypes.c_int),
        "nfs_creat": ([p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(p)], ctypes.c_int),
        "nfs_pread": ([p, p, u64, u64, p], ctypes.c_int),
        "nfs_pwrite": ([p, p, u64, u64, p], ctypes.c_int),
        "nfs_fsync": ([p, p], ctypes.c_int),
        "nfs_close": ([p, p], ctypes.c_int),
    }
    for fn, (args, res) in sigs.items():
        f = getattr(lib, fn)
        f.argtypes, f.restype = args, res
    return lib


def transfer(op: str, url: str, size: int, block: int) -> float:
    lib = load()
    ctx = lib.nfs_init_context()
    if not ctx:
        raise OSError("nfs_init_context failed")

    def check(rc: int, what: str) -> int:
        if rc < 0:
            raise OSError(f"{what}: {lib.nfs_get_error(ctx).decode(errors='replace')}")
        return rc

    buf = ctypes.create_string_buffer(os.urandom(block) if op == "write" else block, block)
    t0 = time.perf_counter()
    parsed = lib.nfs_parse_url_full(ctx, url.encode())
    if not parsed:
        raise OSError(f"bad URL {url}: {lib.nfs_get_error(ctx).decode(errors='replace')}")
    try:
        u = parsed.contents
        check(lib.nfs_mount(ctx, u.server, u.path), "mount")
        fh = ctypes.c_void_p()
        if op == "read":
            check(lib.nfs_open(ctx, u.file, O_RDONLY, ctypes.byref(fh)), "open")
        else:
            check(lib.nfs_creat(ctx, u.file, 0o644, ctypes.byref(fh)), "creat")
        offset = 0
        while offset < size:
            if op == "read":
                got = check(lib.nfs_pread(ctx, fh, offset, block, buf), "pread")
                if got == 0:
                    break
            else:
                got = check(
                    lib.nfs_pwrite(ctx, fh, offset, min(block, size - offset), buf), "pwrite"
                )
            offset += got
        if op == "write":
            check(lib.nfs_fsync(ctx, fh), "fsync")
        check(lib.nfs_close(ctx, fh), "close")
    finally:
        lib.nfs_destroy_url(parsed)
        lib.nfs_destroy_context(ctx)
    seconds = time.perf_counter() - t0
    print(offset, f"{seconds:.6f}", flush=True)
    return seconds


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4) or argv[0] not in ("read", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    transfer(argv[0], argv[1], int(argv[2]), int(argv[3]) if len(argv) == 4 else 4096)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

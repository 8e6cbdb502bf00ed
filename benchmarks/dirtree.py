"""Directories for the metadata workloads of ``ferry bench server``: a deterministic source
tree as a tar file, a directory of N empty files, the READDIRPLUS listing of it paged as
Linux's client pages it, and the tar/find/du/rm -r workload done through Ferry's client API.

Why generated: a tree made from a seed is the same on every machine and every run (no
dependence on what Python version or source checkout is installed), shaped like a source
tree: about 20 files and 2 subdirectories per directory, names of 6-20 characters, file
sizes log-normal around 4 KiB (most a few KiB, a few tens of KiB).
"""

from __future__ import annotations

import io
import math
import random
import socket
import struct
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from loadgen import LAST, _recv_record, nfs_status

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
WORDS = [
    *("core", "util", "net", "io", "fs", "proto", "parse", "codec", "cache", "store", "index"),
    *("log", "test", "main", "api", "conf", "buffer", "queue", "pool", "thread", "event"),
    *("loop", "client", "server", "handle", "record", "reader", "writer"),
]
SUFFIXES = (".py", ".c", ".h", ".txt", ".md", ".json", ".rs", ".go")


# -- the source tree ----------------------------------------------------------------------


def tree_members(files: int, seed: int = 20) -> Iterator[tuple[str, bytes | None]]:
    """(path, content) of a tree of ``files`` files, directories first (content None),
    in an order tar extracts: every directory before what it holds."""
    rng = random.Random(f"ferry-tree-{seed}-{files}")
    dirs = [""]
    made = 0
    at = 0
    while made < files:
        parent = dirs[at % len(dirs)]
        at += 1
        for _ in range(2 if len(dirs) < files // 20 else 0):
            name = f"{parent}/{_name(rng)}-{len(dirs)}".lstrip("/")
            dirs.append(name)
            yield name, None
        for _ in range(min(20, files - made)):
            name = f"{parent}/{_name(rng)}-{made}{rng.choice(SUFFIXES)}".lstrip("/")
            size = min(64 << 10, int(math.exp(rng.gauss(math.log(4096), 1.0))))
            yield name, _text(rng, size)
            made += 1


def _name(rng: random.Random) -> str:
    return "_".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def _text(rng: random.Random, size: int) -> bytes:
    line = " ".join(rng.choice(WORDS) for _ in range(12)).encode() + b"\n"
    return (line * (size // len(line) + 1))[:size]


def write_tar(path: Path, files: int) -> tuple[int, int, int]:
    """The tree as an uncompressed tar file; returns (files, directories, bytes)."""
    counts = [0, 0, 0]
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in tree_members(files):
            info = tarfile.TarInfo(name)
            info.mtime = 1_700_000_000
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                counts[1] += 1
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
                counts[0] += 1
                counts[2] += len(data)
    return counts[0], counts[1], counts[2]


def make_flat_dir(path: Path, entries: int) -> None:
    """``entries`` empty files, named like a build directory's (``obj-000001.o``)."""
    path.mkdir(parents=True)
    for i in range(entries):
        (path / f"obj-{i:06d}.o").touch()


# -- READDIRPLUS, paged as Linux pages it ---------------------------------------------------


def readdirplus_call(header: bytes, fh: bytes, cookie: int, verf: bytes, maxcount: int) -> bytes:
    """One READDIRPLUS call after ``header`` (an RPC call header for NFS procedure 17):
    dircount is maxcount / 8, as Linux's client sends it (fs/nfs/nfs3xdr.c)."""
    pad = bytes(-len(fh) % 4)
    return b"".join(
        (header, _U32.pack(len(fh)), fh, pad, _U64.pack(cookie), verf,
         _U32.pack(maxcount >> 3), _U32.pack(maxcount))
    )  # fmt: skip


def parse_page(record: memoryview) -> tuple[int, int, bytes, bool]:
    """(entries other than . and .., last cookie, cookie verifier, eof) of a reply."""
    status, at = nfs_status(record)
    if status != 0:
        raise OSError(f"READDIRPLUS failed: NFS status {status}")
    u32, u64 = _U32.unpack_from, _U64.unpack_from
    at += 4 + (84 if u32(record, at)[0] else 0)  # dir_attributes
    verf = bytes(record[at : at + 8])
    at += 8
    entries = cookie = 0
    while u32(record, at)[0]:  # value_follows
        n = u32(record, at + 12)[0]  # after fileid
        name = record[at + 16 : at + 16 + n]
        at += 16 + ((n + 3) & ~3)
        cookie = u64(record, at)[0]
        at += 8
        at += 4 + (84 if u32(record, at)[0] else 0)  # name_attributes
        if u32(record, at)[0]:  # name_handle
            at += 8 + ((u32(record, at + 4)[0] + 3) & ~3)
        else:
            at += 4
        entries += name not in (b".", b"..")
    return entries, cookie, verf, bool(u32(record, at + 4)[0])


class Lister:
    """One connection listing directories with READDIRPLUS, one page at a time, each call
    sent when the previous reply is in. Listing twice on one connection lets a benchmark
    time a listing the server has made before: Ferry's workers each keep their own
    listings (a new connection may reach another worker), Ganesha its directory cache."""

    def __init__(self, addr: tuple[str, int]) -> None:
        self.sock = socket.create_connection(addr, timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.xid = 1

    def __enter__(self) -> Lister:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def list(self, header: bytes, fh: bytes, maxcount: int) -> tuple[int, int]:
        """The whole listing of directory ``fh``: (entries, calls)."""
        view = memoryview(bytearray(maxcount + (1 << 16)))
        entries = calls = cookie = 0
        verf = bytes(8)
        while True:
            call = bytearray(readdirplus_call(header, fh, cookie, verf, maxcount))
            _U32.pack_into(call, 0, self.xid)
            self.sock.sendall(_U32.pack(LAST | len(call)) + call)
            n = _recv_record(self.sock, view)
            got, cookie, verf, eof = parse_page(view[:n])
            entries, calls, self.xid = entries + got, calls + 1, self.xid + 1
            if eof:
                return entries, calls
            if got == 0 and calls > 1:
                raise OSError("READDIRPLUS page with no entries before eof")


def list_dir(addr: tuple[str, int], header: bytes, fh: bytes, maxcount: int) -> tuple[int, int]:
    """The whole listing of directory ``fh`` on a new connection: (entries, calls)."""
    with Lister(addr) as lister:
        return lister.list(header, fh, maxcount)


# -- tar -x, find, du, rm -r through Ferry's client API ---------------------------------------


def api_extract(client: Any, tar_path: Path, top: str) -> int:
    """``tar -x`` as a user of the sync client writes it: files written whole; returns the
    number of members made."""
    client.mkdir(top)
    made = 0
    with tarfile.open(tar_path) as tar:
        for m in tar:
            path = f"{top}/{m.name}"
            if m.isdir():
                client.mkdir(path, m.mode)
            else:
                f = tar.extractfile(m)
                assert f is not None
                client.write_file(path, f.read(), m.mode)
            made += 1
    return made


def api_find(client: Any, top: str) -> int:
    """``find TOP | wc -l``: every name under ``top`` (itself included)."""
    return 1 + sum(len(dirs) + len(files) for _, dirs, files in client.walk(top))


def api_du(client: Any, top: str) -> int:
    """``du -s``: bytes used under ``top``, from READDIRPLUS attributes."""
    used = 0
    todo = [top]
    while todo:
        path = todo.pop()
        for e in client.scandir(path):
            if e.attr is None:
                used += client.stat(f"{path}/{e.name}").st_blocks * 512
            else:
                used += e.attr.used
            if e.is_dir():
                todo.append(f"{path}/{e.name}")
    return used


def api_rmtree(client: Any, top: str) -> int:
    """``rm -r``: files removed bottom-up, then each directory; returns names removed."""
    removed = 0
    for path, dirs, files in client.walk(top, topdown=False):
        for name in files:
            client.unlink(f"{path}/{name}")
        for name in dirs:
            client.rmdir(f"{path}/{name}")
        removed += len(files) + len(dirs)
    client.rmdir(top)
    return removed + 1

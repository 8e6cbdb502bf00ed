"""Ferry's client moving one whole file, the two ways the benchmarks time it.

``open()`` streams BLOCK-sized pieces (readinto a reused buffer, write of views), as any
client with Python file objects does (``read_blocks``/``write_blocks`` serve nfs-rs too),
or 1 MiB pieces with ``read(1 MiB)`` (new bytes each), or moves the whole file in one
``read()``/``write()`` (the most common Python idiom);
``read_file``/``write_file`` move the file in one call.
"""

from __future__ import annotations

from typing import Any

import ferry

MiB = 1 << 20
BLOCK = 8 * MiB


def read_blocks(f: Any, size: int) -> int:
    """Bytes ``readinto`` a reused BLOCK buffer gives to end of file (bounded by ``size``)."""
    buf, total = bytearray(BLOCK), 0
    for _ in range(size // BLOCK + 2):
        n = f.readinto(buf)
        if not n:
            break
        total += n
    return int(total)


def write_blocks(f: Any, data: bytes) -> None:
    view = memoryview(data)
    for off in range(0, len(view), BLOCK):
        f.write(view[off : off + BLOCK])


def open_read(url: str, name: str, size: int) -> int:
    with ferry.connect(url) as client, client.open(name, "rb") as f:
        return read_blocks(f, size)


def open_write(url: str, name: str, data: bytes) -> None:
    with ferry.connect(url) as client, client.open(name, "wb") as f:
        write_blocks(f, data)


def open_pieces_read(url: str, name: str) -> int:
    """A loop of ``f.read(1 MiB)`` to end of file, each piece dropped: the chunked loop
    issue 17 compares the whole-file ``read()`` with."""
    total = 0
    with ferry.connect(url) as client, client.open(name, "rb") as f:
        while piece := f.read(MiB):
            total += len(piece)
    return total


def open_pieces_write(url: str, name: str, data: bytes) -> None:
    """``f.write`` of 1 MiB views, the write side of ``open_pieces_read``."""
    view = memoryview(data)
    with ferry.connect(url) as client, client.open(name, "wb") as f:
        for off in range(0, len(view), MiB):
            f.write(view[off : off + MiB])


def open_whole_read(url: str, name: str) -> int:
    with ferry.connect(url) as client, client.open(name, "rb") as f:
        return len(f.read())


def open_whole_write(url: str, name: str, data: bytes) -> None:
    with ferry.connect(url) as client, client.open(name, "wb") as f:
        f.write(data)


def file_read(url: str, name: str) -> int:
    with ferry.connect(url) as client:
        return len(client.read_file(name))


def file_write(url: str, name: str, data: bytes) -> None:
    with ferry.connect(url) as client:
        client.write_file(name, data)

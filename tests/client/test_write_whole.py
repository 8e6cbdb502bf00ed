"""``f.write(data)`` of a big ``bytes`` object (issue 17): sent from the object itself.

``io.BufferedWriter`` hands a piece larger than its buffer to the raw file through a
temporary view of the caller's memory, which the engine had to copy (it keeps written
data until COMMIT, to write it again after a server restart): a whole-file write of
256 MiB cost 256 MiB of fresh memory and was 0.6x of writing the same file in 8 MiB
pieces. A ``bytes`` object is immutable, so our buffered classes pass it through as it
is and the engine keeps a reference instead of a copy. Position, order and content must
stay as the buffered object promises.
"""

from __future__ import annotations

import io
import os
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_proxy import url_for
from rawclient import RunningServer

import ferry
from ferry.client import Client

WS = 65536


@pytest.fixture
def client(ferry_srv: RunningServer, export_root: Path) -> Iterator[Client]:
    with ferry.connect(url_for(ferry_srv.port, export_root), rsize=WS, wsize=WS) as c:
        yield c


def test_big_bytes_are_not_copied(client: Client, export_root: Path) -> None:
    big = os.urandom(256 * WS)  # 16 MiB
    with client.open("f", "wb") as f:
        f.write(b"x")  # queued in the buffer first: must land before ``big``
        tracemalloc.start()
        try:
            f.write(big)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # the server runs in this process too: its record buffers count here
        assert peak < len(big) // 4, f"{peak} bytes allocated to write {len(big)}"
    assert (export_root / "f").read_bytes() == b"x" + big


def test_position_and_order_around_a_passed_through_write(
    client: Client, export_root: Path
) -> None:
    big = os.urandom(3 * WS + 11)
    with client.open("f", "wb") as f:
        f.write(b"head")
        assert f.write(big) == len(big)
        assert f.tell() == 4 + len(big)
        f.write(b"tail")
        f.seek(2)
        f.write(b"HE")
        f.seek(4 + WS)
        f.write(big[:WS])  # a passed-through write over earlier bytes
        assert f.tell() == 4 + 2 * WS
    expect = bytearray(b"head" + big + b"tail")
    expect[2:4] = b"HE"
    expect[4 + WS : 4 + 2 * WS] = big[:WS]
    assert (export_root / "f").read_bytes() == bytes(expect)


def test_read_write_file_passes_through_and_reads_back(client: Client, export_root: Path) -> None:
    base = os.urandom(4 * WS)
    (export_root / "f").write_bytes(base)
    big = os.urandom(2 * WS)
    with client.open("f", "r+b") as f:
        assert f.read(5) == base[:5]
        assert f.write(big) == len(big)
        assert f.tell() == 5 + len(big)
        assert f.read(7) == base[5 + len(big) : 12 + len(big)]  # what follows, not stale
        f.seek(0)
        assert f.read() == base[:5] + big + base[5 + len(big) :]


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_mutable_buffers_are_still_copied(client: Client, export_root: Path, kind: type) -> None:
    """The caller may change a bytearray after ``write`` returns: the engine's copy must
    hold what it was at the call."""
    buf = bytearray(os.urandom(3 * WS))
    want = bytes(buf)
    with client.open("f", "wb") as f:
        f.write(kind(buf))
        buf[:] = bytes(len(buf))  # changed before the file is flushed
    assert (export_root / "f").read_bytes() == want


def test_text_and_unbuffered_files_unchanged(client: Client, export_root: Path) -> None:
    big = os.urandom(2 * WS)
    with client.open("f", "wb", buffering=0) as raw:
        assert raw.write(big) == len(big)
    assert (export_root / "f").read_bytes() == big
    with client.open("t", "w") as t:
        assert isinstance(t, io.TextIOWrapper)
        t.write("é" * WS)
    assert (export_root / "t").read_text() == "é" * WS

"""``f.read()`` of a whole file (issue 17): one pipelined transfer straight into the result,
not 8 KiB at a time.

``io.BufferedReader.read()`` asks the raw file for ``readall()``; ``RawIOBase``'s default
loops over 8 KiB ``read`` calls, each a round trip to the client's event loop thread and
a READ-sized copy (10-20x slower than reading 1 MiB pieces). ``NfsRawFile.readall`` is one
engine call, ``AsyncFile.read()`` one ``read_all`` transfer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_proxy import url_for
from rawclient import RunningServer

import ferry
from ferry.client import Client

RS = 65536


@pytest.fixture
def client(ferry_srv: RunningServer, export_root: Path) -> Iterator[Client]:
    with ferry.connect(url_for(ferry_srv.port, export_root), rsize=RS, wsize=RS) as c:
        yield c


def _count_engine_calls(raw: Any, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The coroutines ``raw`` (an ``NfsRawFile``) runs on the event loop from now on."""
    calls: list[Any] = []
    run = raw._run

    def counted(coro: Any) -> Any:
        calls.append(coro)
        return run(coro)

    monkeypatch.setattr(raw, "_run", counted)
    return calls


def test_whole_file_read_is_one_engine_call(
    client: Client, export_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(40 * RS + 123)
    (export_root / "f").write_bytes(data)
    with client.open("f", "rb") as f:
        calls = _count_engine_calls(f.raw, monkeypatch)
        assert f.read() == data
        assert len(calls) == 1  # was 322: one per 8 KiB


@pytest.mark.parametrize("size", [0, 1, RS - 1, RS, RS + 1, 7 * RS + 5])
def test_read_to_end_gives_the_rest(client: Client, export_root: Path, size: int) -> None:
    data = os.urandom(size)
    (export_root / "f").write_bytes(data)
    with client.open("f", "rb") as f:
        assert f.read() == data and f.read() == b""
    with client.open("f", "rb") as f:
        head = f.read(3)
        assert head + f.read() == data  # the rest, from where the reader is
        assert f.tell() == size
    with client.open("f", "rb", buffering=0) as raw:
        raw.seek(size // 2)
        assert raw.readall() == data[size // 2 :]


def test_read_to_end_sees_own_writes_and_growth(client: Client, export_root: Path) -> None:
    """Queued writes are sent before the transfer; a file that grew since it was opened is
    read to its new end (the size is asked afresh, the tail read until EOF)."""
    base = os.urandom(5 * RS)
    (export_root / "f").write_bytes(base)
    with client.open("f", "r+b") as f:
        f.seek(2 * RS + 7)
        f.write(b"new bytes")
        f.seek(0)
        want = bytearray(base)
        want[2 * RS + 7 : 2 * RS + 16] = b"new bytes"
        assert f.read() == want
        with open(export_root / "f", "ab") as grow:
            grow.write(b"grown")
        f.seek(4 * RS)
        assert f.read() == bytes(want[4 * RS :]) + b"grown"


def test_text_read_to_end(client: Client, export_root: Path) -> None:
    text = "ligne é\n" * 50_000
    (export_root / "t.txt").write_text(text, encoding="utf-8")
    with client.open("t.txt", "r") as f:
        assert f.read() == text

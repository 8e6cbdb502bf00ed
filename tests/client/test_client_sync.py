"""The blocking Client is a thin shell: same method names as the engine, usable from threads."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path

import uvloop
from client_proxy import url_for
from rawclient import RunningServer

import ferry
from ferry.client import AsyncNfsClient, Client


def _public(cls: type, coroutines: bool) -> set[str]:
    return {
        n
        for n, f in inspect.getmembers(cls, inspect.isfunction)
        if not n.startswith("_") and inspect.iscoroutinefunction(f) == coroutines
    }


def test_same_method_names_as_the_engine() -> None:
    engine = _public(AsyncNfsClient, True) - {"connect", "close", "iter_scandir"}
    assert engine <= set(dir(Client)), engine - set(dir(Client))


def test_connect_and_threads(ferry_srv: RunningServer, export_root: Path) -> None:
    (export_root / "a").write_bytes(b"abc")
    with ferry.connect(url_for(ferry_srv.port, export_root)) as c:
        results: list[bytes] = []
        threads = [
            threading.Thread(target=lambda: results.append(c.read_file("a"))) for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == [b"abc"] * 8
        c.write_file("b", b"xyz")
        assert [e.name for e in c.scandir()] in (["a", "b"], ["b", "a"])
        assert c.stats.calls > 8
        assert isinstance(c._loop, uvloop.Loop)  # the blocking client's calls run on uvloop
    assert (export_root / "b").read_bytes() == b"xyz"

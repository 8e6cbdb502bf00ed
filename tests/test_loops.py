"""Every event loop Ferry makes is uvloop's where uvloop is installed (it is a dependency
off Windows), asyncio's where it is not."""

from __future__ import annotations

import asyncio
import sys

import pytest
import uvloop

from ferry import loops


async def _loop_type() -> type:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_loops_are_uvloops_where_it_is_installed() -> None:
    loop = loops.new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert loops.run(_loop_type()) is uvloop.Loop


def test_loops_are_asyncios_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop now fails
    loop = loops.new_event_loop()
    try:
        assert not isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.BaseEventLoop)
    finally:
        loop.close()
    assert not issubclass(loops.run(_loop_type()), uvloop.Loop)

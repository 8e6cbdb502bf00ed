"""A private event loop in a daemon thread, for the blocking client.

``LoopThread`` runs coroutines of the asyncio engine on its own loop and waits for them
from any thread; the blocking methods (``client.sync_calls``, generated) are one
``run`` of the engine's coroutine of the same name each.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from ferry import loops

T = TypeVar("T")


class LoopThread:
    """One event loop (uvloop where available, ``ferry.loops``) running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = loops.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="ferry-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (or exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Step an async iterator on the loop, one item per ``run``."""
        for _ in range(1 << 40):  # bounded by the iterator
            try:
                yield self.run(_next(agen))
            except StopAsyncIteration:
                return

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def stop(self) -> None:
        """Stop the loop, wait for its thread (bounded) and close it."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def _next(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()

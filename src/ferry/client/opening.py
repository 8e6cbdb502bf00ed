"""``Opening``: what ``connect_async`` and ``AsyncNfsClient.open`` return, so that both
``x = await connect_async(url)`` and ``async with connect_async(url) as x`` work (the
shape of aiohttp's ``session.get`` and aiofiles' ``open``).

Awaited, it gives the opened object and the caller closes it. Entered, it opens on entry
and hands the exit to the object's own ``__aexit__`` (which closes it), whatever happened
inside. Nothing runs until it is awaited or entered, so an Opening never used leaves no
coroutine un-awaited behind.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Generator
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=AbstractAsyncContextManager[Any])


class Opening(Generic[T]):
    """An open in waiting: ``await`` it, or use it in ``async with`` (once)."""

    __slots__ = ("_open", "_opened")

    def __init__(self, open: Callable[[], Coroutine[Any, Any, T]]) -> None:
        self._open = open
        self._opened: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._open().__await__()

    async def __aenter__(self) -> T:
        if self._opened is not None:
            raise RuntimeError("this Opening was entered already: call the function again")
        self._opened = opened = await self._open()
        await opened.__aenter__()
        return opened

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._opened is not None
        return await self._opened.__aexit__(exc_type, exc, tb)

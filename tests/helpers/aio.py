"""Running a test's coroutine under a time bound, and comparing byte strings by digest
(a failed assertion on two 64 MiB objects would print them)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
    """``asyncio.run(coro)``, failing with TimeoutError after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def sha(data: bytes | bytearray | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()

"""Standard ``io`` objects over an ``AsyncFile``, for the blocking client.

``NfsRawFile`` is an ``io.RawIOBase`` whose every method runs the ``AsyncFile`` method of
the same name on the client's event loop (through the ``run`` callable the sync client
passes in) and waits; read-ahead, write-behind and COMMIT all happen in the engine.
``wrap`` stacks the usual layers on it, as ``open()`` does for local files: a buffered
reader, writer or random-access object of one rsize/wsize, and a ``TextIOWrapper`` for
text modes. Our buffered classes also flush the raw file on ``flush()``, so that
``f.flush()`` means "COMMITted" and not merely "handed to the engine".
"""

from __future__ import annotations

import io
from collections.abc import Callable, Coroutine
from typing import IO, Any, TypeVar, cast

from .files import AsyncFile, OpenMode

T = TypeVar("T")
Runner = Callable[[Coroutine[Any, Any, Any]], Any]
Buffer = Any  # what io passes to readinto/write: anything with the buffer protocol


class NfsRawFile(io.RawIOBase):
    """The unbuffered binary file (``buffering=0``); one engine call per method."""

    def __init__(self, run: Runner, file: AsyncFile, mode: str) -> None:
        super().__init__()
        self._run, self._file = run, file
        self.name, self.mode = file.path, mode

    @property
    def engine(self) -> AsyncFile:
        return self._file

    def readable(self) -> bool:
        return self._file.mode.readable

    def writable(self) -> bool:
        return self._file.mode.writable

    def seekable(self) -> bool:
        return True

    def readinto(self, b: Buffer) -> int:
        self._checkClosed()
        n: int = self._run(self._file.readinto(memoryview(b).cast("B")))
        return n

    def readall(self) -> bytes:
        """To end of file in one engine call (``BufferedReader.read()`` comes here; the
        default loops over 8 KiB reads, each a round trip to the event loop's thread)."""
        self._checkClosed()
        data: bytes = self._run(self._file.read())
        return data

    def write(self, b: Buffer) -> int:
        self._checkClosed()
        # No copy here: ``write`` queues (copies) the bytes before it returns, and the
        # caller's buffer cannot change until then (we wait for it). A ``bytes`` object
        # goes as it is: immutable, the engine keeps it until COMMIT without a copy.
        data = b if type(b) is bytes else memoryview(b).cast("B")
        n: int = self._run(self._file.write(data))
        return n

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        n: int = self._run(self._file.seek(pos, whence))
        return n

    def tell(self) -> int:
        self._checkClosed()
        return self._file.tell()

    def truncate(self, size: int | None = None) -> int:
        self._checkClosed()
        n: int = self._run(self._file.truncate(size))
        return n

    def flush(self) -> None:
        super().flush()  # raises on a closed file
        if not self._file.closed:
            self._run(self._file.flush())

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._file.closed:
                self._run(self._file.close())
        finally:
            super().close()


B = TypeVar("B", io.BufferedWriter, io.BufferedRandom)


def _write_past_buffer(buffered: B, base: type[B], b: bytes) -> int:
    """Hand a ``bytes`` object at least the buffer's size to the raw file as it is.

    ``BufferedWriter`` writes such a piece straight to the raw file anyway, but through a
    temporary view of its memory, which the engine must copy to keep until COMMIT: for a
    whole-file ``f.write(data)`` of 256 MiB that is 256 MiB of fresh memory to map, zero
    and fill. The object itself needs no copy. The buffer's own bytes go first; then the
    buffered object relearns the raw position (``seek(0, SEEK_CUR)`` asks the raw file)."""
    base.flush(buffered)  # the io class's: no COMMIT here
    n = buffered.raw.write(b) or 0  # NfsRawFile.write never returns None
    base.seek(buffered, 0, io.SEEK_CUR)
    return n


class _FlushingWriter(io.BufferedWriter):
    def __init__(self, raw: NfsRawFile, buffer_size: int) -> None:
        super().__init__(raw, buffer_size)
        self._passthrough = buffer_size

    def write(self, b: Buffer) -> int:
        if type(b) is bytes and len(b) >= self._passthrough and not self.closed:
            return _write_past_buffer(self, io.BufferedWriter, b)
        return super().write(b)

    def flush(self) -> None:
        super().flush()
        self.raw.flush()


class _FlushingRandom(io.BufferedRandom):
    def __init__(self, raw: NfsRawFile, buffer_size: int) -> None:
        super().__init__(raw, buffer_size)
        self._passthrough = buffer_size

    def write(self, b: Buffer) -> int:
        if type(b) is bytes and len(b) >= self._passthrough and not self.closed:
            return _write_past_buffer(self, io.BufferedRandom, b)
        return super().write(b)

    def flush(self) -> None:
        super().flush()
        self.raw.flush()


def wrap(
    run: Runner,
    file: AsyncFile,
    mode: str,
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
) -> IO[Any]:
    """The io stack ``open(path, mode, buffering, ...)`` returns, over ``file`` (opened in
    the binary form of ``mode``: whether it is text is ``mode``'s to say)."""
    how, is_text = file.mode, OpenMode.parse(mode).text
    if not is_text and (encoding or errors or newline is not None):
        raise ValueError("binary mode doesn't take an encoding, errors or newline argument")
    if buffering == 0 and is_text:
        raise ValueError("can't have unbuffered text I/O")
    raw = NfsRawFile(run, file, mode.replace("t", "").replace("b", "") + "b")
    if buffering == 0:
        return cast(IO[Any], raw)
    size = buffering if buffering > 1 else max(file.nfs.rsize, file.nfs.wsize)
    buffered: io.BufferedIOBase
    if how.readable and how.writable:
        buffered = _FlushingRandom(raw, size)
    elif how.writable:
        buffered = _FlushingWriter(raw, size)
    else:
        buffered = io.BufferedReader(raw, size)
    if not is_text:
        return cast(IO[Any], buffered)
    text = io.TextIOWrapper(
        buffered, encoding or "utf-8", errors, newline, line_buffering=buffering == 1
    )
    text.mode = mode  # type: ignore[misc]
    return text

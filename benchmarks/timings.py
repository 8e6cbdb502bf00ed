"""Timing one transfer (checked outside the clock), repeated timings and how a report
prints them, and where it is kept."""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from helpers import peers  # the benchmarks put tests/ on sys.path


@dataclass
class Result:
    """The seconds each repeat took (or why it failed), for ``size`` bytes moved."""

    seconds: list[float] = field(default_factory=list)
    error: str | None = None
    cpu: dict[str, list[float]] = field(default_factory=dict)  # CPU seconds per side, if metered

    def rate(self, size: int) -> float:
        """Megabytes per second of the median repeat (0 if none ran)."""
        return size / 1e6 / statistics.median(self.seconds) if self.seconds else 0.0

    def cell(self, size: int) -> str:
        if self.error:
            return f"failed: {self.error}"
        if not self.seconds:
            return "not run"
        lo, mid, hi = min(self.seconds), statistics.median(self.seconds), max(self.seconds)
        return f"{self.rate(size):,.1f} MB/s ({mid:.3f} s, {lo:.3f}–{hi:.3f})"


class TransferError(RuntimeError):
    """A timed transfer moved other bytes than it should have."""


Around = AbstractContextManager[object]
UNMETERED: Around = nullcontext()  # reusable: it keeps no state


def timed_read(read: Callable[[], int], size: int, around: Around = UNMETERED) -> float:
    """Seconds ``read()`` took (inside ``around``: a meter, say); it must report ``size``
    bytes read."""
    with around:
        t0 = time.perf_counter()
        got = read()
        secs = time.perf_counter() - t0
    if got != size:
        raise TransferError(f"read {got} bytes, not {size}")
    return secs


def timed_write(
    write: Callable[[], None], target: Path, size: int, digest: str | None,
    around: Around = UNMETERED,
) -> float:  # fmt: skip
    """Seconds ``write()`` took to make ``target`` (inside ``around``); then, untimed, its
    size and (unless ``digest`` is None) its sha256 are checked, and it is removed."""
    with around:
        t0 = time.perf_counter()
        write()
        secs = time.perf_counter() - t0
    if (got := target.stat().st_size) != size:
        raise TransferError(f"wrote {got} bytes, not {size}")
    if digest is not None and peers.sha256_file(target) != digest:
        raise TransferError("written file differs from the source")
    target.unlink()
    return secs


def write_docs(text: str, path: Path) -> None:
    """Append a report to ``path`` (docs/benchmarks.md: newest last), made if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("# Benchmarks\n\nNewest last.\n\n")
    with open(path, "a") as f:
        f.write("\n" + text)


def local_dir(given: Path | None, size: int, workdir: Path, prefix: str) -> Path:
    """Where the local side of the transfers lives: ``given``, else a new directory on
    tmpfs (/dev/shm) when it has room for them, else ``workdir/local``; made if need be."""
    if given is not None:
        local = given
    elif Path("/dev/shm").is_dir() and shutil.disk_usage("/dev/shm").free > 3 * size:
        local = Path(tempfile.mkdtemp(prefix=prefix, dir="/dev/shm"))
    else:
        local = workdir / "local"
    local.mkdir(parents=True, exist_ok=True)
    return local

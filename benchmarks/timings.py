"""Repeated timings of one transfer, how a report prints them, and where it is kept."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Result:
    """The seconds each repeat took (or why it failed), for ``size`` bytes moved."""

    seconds: list[float] = field(default_factory=list)
    error: str | None = None

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


def write_docs(text: str, path: Path) -> None:
    """Append a report to ``path`` (docs/benchmarks.md: newest last), made if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("# Benchmarks\n\nNewest last.\n\n")
    with open(path, "a") as f:
        f.write("\n" + text)

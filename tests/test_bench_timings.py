"""The benchmarks' timed transfers check what moved, outside the clock."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from timings import TransferError, timed_read, timed_write  # noqa: E402


def test_a_read_must_report_the_whole_size() -> None:
    assert timed_read(lambda: 10, 10) >= 0
    with pytest.raises(TransferError, match="read 9 bytes, not 10"):
        timed_read(lambda: 9, 10)


def test_a_write_is_checked_then_removed(tmp_path: Path) -> None:
    target, data = tmp_path / "out.bin", b"ferry" * 100
    digest = hashlib.sha256(data).hexdigest()

    def writing(content: bytes) -> Callable[[], None]:
        def write() -> None:
            target.write_bytes(content)

        return write

    assert timed_write(writing(data), target, len(data), digest) >= 0
    assert not target.exists()
    with pytest.raises(TransferError, match="differs from the source"):
        timed_write(writing(data[::-1]), target, len(data), digest)
    with pytest.raises(TransferError, match="wrote 499 bytes, not 500"):
        timed_write(writing(data[1:]), target, len(data), None)
    target.write_bytes(data[::-1])  # unchecked content: only the size counts
    assert timed_write(lambda: None, target, len(data), None) >= 0

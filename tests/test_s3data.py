"""The S3 backend's local data path without a store: the edit log a merge replays, and
spool directories that outlive a killed server only until the next one starts."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from ferry.backends._s3data import Edits, Spools, remove_abandoned

Op = tuple[str, int, int]  # ("w", offset, length) or ("t", size, 0)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("w"), st.integers(0, 300), st.integers(0, 120)),
        st.tuples(st.just("t"), st.integers(0, 400), st.just(0)),
    ),
    max_size=25,
)


def _apply(data: bytearray, op: Op, payload: bytes) -> None:
    kind, a, n = op
    if kind == "t":
        del data[a:]
        data.extend(bytes(a - len(data)))
    elif n:  # an empty write changes nothing (not even the size)
        data.extend(bytes(max(0, a + n - len(data))))
        data[a : a + n] = payload


@settings(max_examples=200, deadline=None)
@given(ops=ops, base=st.binary(max_size=300), theirs=st.binary(max_size=300))
def test_replay_puts_exactly_our_changes_over_another_version(
    tmp_path_factory: object, ops: list[Op], base: bytes, theirs: bytes
) -> None:
    """Replaying our ops over ``theirs`` equals applying them to ``theirs`` directly: our
    bytes where we wrote last, theirs elsewhere, our sizes where we set them."""
    tmp = Path(tmp_path_factory.mktemp("replay"))  # type: ignore[attr-defined]
    rng = random.Random(len(ops))
    spool, expected, edits = bytearray(base), bytearray(theirs), Edits()
    for op in ops:
        payload = bytes(rng.randrange(256) for _ in range(op[2])) if op[0] == "w" else b""
        _apply(spool, op, payload)
        _apply(expected, op, payload)
        if op[0] == "w":
            edits.write(op[1], op[2])
        else:
            edits.resize(op[1])
    (tmp / "spool").write_bytes(spool)
    (tmp / "target").write_bytes(theirs)
    edits.replay(str(tmp / "spool"), str(tmp / "target"))
    assert (tmp / "target").read_bytes() == bytes(expected)


def test_writes_between_size_changes_are_merged_into_few_ranges() -> None:
    edits = Edits()
    for off in range(0, 1 << 20, 4096):  # a sequential stream
        edits.write(off, 4096)
    edits.write(10, 5)
    edits.resize(100)
    edits.write(200, 1)
    edits.write(50, 10)
    assert [s if isinstance(s, int) else list(zip(s.starts, s.ends, strict=True))
            for s in edits.steps] == [[(0, 1 << 20)], 100, [(50, 60), (200, 201)]]  # fmt: skip


def test_spool_directories_of_dead_owners_are_removed_live_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    mine = Spools(str(root))
    mine.write(7, lambda path: '"etag"', 0, memoryview(b"uncommitted"))
    # A process that makes a spool and is SIGKILLed (os._exit: no cleanup runs).
    code = (
        "import os, sys; from ferry.backends._s3data import Spools\n"
        "s = Spools(sys.argv[1]); s.write(1, lambda p: '', 0, memoryview(b'x' * 1000))\n"
        "print(s.directory, flush=True); os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True,
                         env=env, timeout=60, check=False)  # fmt: skip
    dead = Path(out.stdout.decode().strip())
    assert out.returncode == -9 and dead.is_dir() and any(dead.glob("spool-*"))
    other = Spools(str(root))  # the next server to start
    assert other.removed == [str(dead)] and not dead.exists()
    assert Path(mine.directory).is_dir() and mine.read(7, 0, 100) == (b"uncommitted", 11)
    assert remove_abandoned(root) == []
    mine.close()
    other.close()
    assert list(root.iterdir()) == []

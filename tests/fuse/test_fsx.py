"""fsx-style random reads, writes, truncates and fsyncs through ``ferry mount`` (issue
17): with plain system calls, and mixed with mapped (mmap) reads and writes, against a
Ferry server of every model and NFS-Ganesha. Every read (and the size then) is checked
against a local reference as it happens; at the end (after fsync
and close) the file in the server's export directory must be the reference, byte for
byte.

Overlapping writes through the mount are the mount's own WRITEs: the kernel hands them
over one by one and the mount sends them behind the writer, so before the client ordered
them, the last to be written could land first (the async model and NFS-Ganesha run
concurrent calls in any order). The seed is printed; ``FERRY_FSX_SEED`` replays it.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fusetest import check_stopped, mount_or_fail
from mounthelp import Mount

from helpers import fsx
from helpers.ferry_fixture import EVERY_SERVER, running_server

OPS = 2500  # per run, or until its time is up: the async model and NFS-Ganesha, which run
SECONDS = {"async": 4.0, "ganesha": 4.0}  # calls in any order, ran into the bug within
SECONDS_IN_ORDER = 1.5  # 100-2,400 ops; the models running one connection's calls one by
# one cannot reorder them (a short run checks the rest)


@pytest.fixture(scope="module", params=EVERY_SERVER)
def any_mount(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Mount]]:
    """``ferry mount`` of a Ferry server of each model, then of NFS-Ganesha."""
    base = tmp_path_factory.mktemp(f"fsx-{request.param}")
    with running_server(request.param, base) as server:
        m = mount_or_fail(server, base / "mnt")
        try:
            yield request.param, m
        finally:
            check_stopped(m, m.stop())


def _mapped(fd: int, size: int, op: fsx.Op, ref: fsx.Reference) -> None:
    """A mapped write or read of ``op``'s range (as fsx does: a write past the end first
    extends the file); every other mapped write is msync'ed at once, the rest left for
    the kernel to write back."""
    if op.kind == "mapwrite" and op.offset + op.length > size:
        os.ftruncate(fd, op.offset + op.length)
        ref.truncate(op.offset + op.length)
        size = op.offset + op.length
    if size == 0:
        return
    with mmap.mmap(fd, size) as mm:
        if op.kind == "mapwrite":
            mm[op.offset : op.offset + op.length] = op.data
            ref.write(op.offset, op.data)
            if op.length % 2:
                mm.flush()
        else:
            got, want = mm[op.offset : op.offset + op.length], ref.read(op.offset, op.length)
            assert got == want, f"mapped read {op.length} at {op.offset}: " + (
                fsx.first_difference(got, want)
            )


def _run(
    path: Path, seed: int, weights: dict[str, int], seconds: float
) -> tuple[fsx.Reference, int]:
    """The operations of ``seed`` on ``path``; the reference and how many were done."""
    ref, done, deadline = fsx.Reference(), 0, time.monotonic() + seconds
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for done, op in enumerate(fsx.operations(seed, OPS, weights), 1):
            try:
                if op.kind == "write":
                    assert os.pwrite(fd, op.data, op.offset) == op.length
                    ref.write(op.offset, op.data)
                elif op.kind == "read":
                    got, want = os.pread(fd, op.length, op.offset), ref.read(op.offset, op.length)
                    assert got == want, f"read {op.length} at {op.offset}: " + (
                        fsx.first_difference(got, want)
                    )
                    # not after every operation: a GETATTR between two writes lets the
                    # first complete before the second is sent
                    assert os.fstat(fd).st_size == len(ref.data), "size"
                elif op.kind == "truncate":
                    os.ftruncate(fd, op.length)
                    ref.truncate(op.length)
                elif op.kind == "fsync":
                    os.fsync(fd)
                else:
                    _mapped(fd, len(ref.data), op, ref)
            except AssertionError as exc:
                raise AssertionError(f"seed {seed}, op {done}: {exc}") from None
            if time.monotonic() > deadline:
                break
        os.fsync(fd)
    finally:
        os.close(fd)
    return ref, done


@pytest.mark.parametrize("weights", [fsx.PLAIN, fsx.MAPPED], ids=["plain", "mmap"])
def test_fsx(any_mount: tuple[str, Mount], weights: dict[str, int]) -> None:
    kind, mount = any_mount
    seed = fsx.seed_from_env()
    print(f"fsx seed {seed} (FERRY_FSX_SEED={seed} to replay)")
    name = f"fsx-{'mmap' if 'mapwrite' in weights else 'plain'}.bin"
    ref, done = _run(mount.path / name, seed, weights, SECONDS.get(kind, SECONDS_IN_ORDER))
    got = (mount.server.export / name).read_bytes()
    assert got == ref.data, f"seed {seed}, {done} ops: {fsx.first_difference(got, ref.data)}"
    assert (mount.path / name).read_bytes() == ref.data  # and read back through the mount
    print(f"{done} operations")
    assert done >= 50  # enough to mean something (a busy machine does fewer)

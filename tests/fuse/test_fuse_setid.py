"""Set-ID bits through ``ferry mount``, against a Ferry server and NFS-Ganesha: a process
that may write a set-user-ID file but does not own it writes it as on a local file system
(the bits go, the write succeeds), and what it may not do (chmod) stays refused.

Before writing, the kernel clears the bits itself with a SETATTR of the mode, sent as the
caller; the server refuses that of a caller who does not own the file, so the mount leaves
it to the server, which clears them on WRITE (the Linux NFS client does the same).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fusetest import check_stopped, mount_or_fail
from mounthelp import Mount

from helpers import peers

NOBODY = 65534


def run_as(uid: int, gid: int, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, user=uid, group=gid, extra_groups=[], capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shared(nfs_mount: Mount) -> Iterator[Mount]:
    """A second mount of the module's server that other users may enter (allow_other)."""
    if os.geteuid() != 0:
        pytest.fail("needs root: runs programs as other users and mounts with allow_other")
    where = Path(tempfile.mkdtemp(prefix="ferry-setid-"))
    where.chmod(0o755)
    m = mount_or_fail(nfs_mount.server, where / "mnt", "--allow-other")
    try:
        yield m
    finally:
        check_stopped(m, m.stop())
        shutil.rmtree(where)


def server_file(m: Mount, name: str, mode: int, owner: tuple[int, int] = (0, 0)) -> Path:
    """``name`` in a world-enterable directory of the export: ``b"x"``, ``mode``, ``owner``."""
    d = m.server.export / "setid"
    d.mkdir(exist_ok=True)
    d.chmod(0o777)
    f = d / name
    f.write_bytes(b"x")
    os.chown(f, *owner)
    f.chmod(mode)
    return f


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize(
    ("name", "bits", "after"),
    [("u", 0o4777, 0o777), ("g", 0o2777, 0o777), ("ug", 0o6777, 0o777)],
    ids=["suid", "sgid", "both"],
)
def test_a_non_owner_writes_a_setid_file_and_the_bits_go(
    shared: Mount, name: str, bits: int, after: int
) -> None:
    f = server_file(shared, name, bits)
    res = run_as(NOBODY, NOBODY, "sh", "-c", f'printf more >> "{shared.path}/setid/{name}"')
    assert res.returncode == 0, res.stderr
    assert f.read_bytes() == b"xmore"
    assert mode(f) == after
    assert mode(shared.path / "setid" / name) == after  # once the cached attributes expire


def test_the_owner_writes_a_setid_file_and_the_bits_go(shared: Mount) -> None:
    f = server_file(shared, "own", 0o4755, owner=(4321, 4321))
    res = run_as(4321, 4321, "sh", "-c", f'printf more >> "{shared.path}/setid/own"')
    assert res.returncode == 0, res.stderr
    assert (f.read_bytes(), mode(f)) == (b"xmore", 0o755)


def test_root_writes_a_setid_file_and_the_bits_stay(shared: Mount) -> None:
    f = server_file(shared, "root", 0o6777)
    with open(shared.path / "setid" / "root", "ab") as out:
        out.write(b"more")
    assert (f.read_bytes(), mode(f)) == (b"xmore", 0o6777)


def test_a_non_owner_truncates_a_setid_file(shared: Mount) -> None:
    """truncate(2) succeeds as on a local file system; Ferry clears the bits, NFS-Ganesha
    (whose SETATTR of the size keeps them, as knfsd's does) does not."""
    f = server_file(shared, "trunc", 0o6777)
    res = run_as(NOBODY, NOBODY, "truncate", "-s", "0", f"{shared.path}/setid/trunc")
    assert res.returncode == 0, res.stderr
    assert f.stat().st_size == 0
    ganesha = isinstance(shared.server, peers.GaneshaServer)
    assert mode(f) == (0o6777 if ganesha else 0o777)


def test_a_non_owner_still_may_not_clear_the_bits_with_chmod(shared: Mount) -> None:
    f = server_file(shared, "chmod", 0o4777)
    res = run_as(NOBODY, NOBODY, "chmod", "u-s", f"{shared.path}/setid/chmod")
    assert res.returncode != 0 and "Operation not permitted" in res.stderr, res.stderr
    assert mode(f) == 0o4777


def test_a_non_owner_writes_many_blocks_to_a_setid_file(shared: Mount) -> None:
    """Only the first writes meet the bits (the kernel asks again until it sees them go)."""
    f = server_file(shared, "blocks", 0o4777)
    where = f"{shared.path}/setid/blocks"
    res = run_as(NOBODY, NOBODY, "dd", "if=/dev/zero", f"of={where}", "bs=4k", "count=256")
    assert res.returncode == 0, res.stderr
    assert (f.stat().st_size, mode(f)) == (1 << 20, 0o777)

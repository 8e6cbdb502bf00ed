"""Path and permission attacks, one table: each row is an attempt and the exact status the
server must answer, followed by a check that nothing outside the export (or inside a
read-only one) changed.

The rows cover what issue 8 names: ``..`` and names with ``/`` or NUL, symlinks swapped in
between LOOKUP and use, hard links to outside files made locally, handles replayed across
exports, stale handles after rename and delete, uid 0 under root_squash and writes to a
read-only export. The narrative tests beside this file (test_security.py) probe some of
these more deeply; this table is the checklist, and docs/hardening.md prints it.

Each row gets a fresh tree and server: a ``World`` with three exports of one server:
``rw`` (no squashing), ``sq`` (root_squash) and ``ro`` (read-only), plus an ``outside``
directory next to them that no attack may read or change.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nfs3wire import Nfs3
from rawclient import RawClient, mount_status, serve_in_thread

from ferry.backends.base import SetAttr
from ferry.nfs3.const import CreateMode, Mountstat3, Nfsstat3
from ferry.nfs3.filehandle import HandleCodec
from ferry.server.config import ExportConfig, ServerConfig

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="sets ownership; needs root")

SECRET = b"outside: never served"
NOBODY = 65534
IDS = {"rw": 1, "sq": 2, "ro": 3}


@dataclasses.dataclass
class World:
    tmp: Path
    outside: Path
    paths: dict[str, Path]
    roots: dict[str, bytes]
    nfs: Nfs3
    raw: RawClient

    def fh(self, export: str, *names: str) -> bytes:
        fh = self.roots[export]
        for name in names:
            fh = self.nfs.fh_of(fh, name.encode())
        return fh

    def reseal(self, fh: bytes, export_id: int) -> bytes:
        """``fh``'s file, correctly sealed with the server's key, claiming ``export_id``."""
        codec = HandleCodec((self.tmp / "state" / "handle.key").read_bytes())
        _, fileid, generation = codec.decode(fh)
        return codec.encode(export_id, fileid, generation)


def build_tree(tmp: Path) -> tuple[Path, dict[str, Path]]:
    outside = tmp / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "secret").write_bytes(SECRET)
    (outside / "dir" / "secret").write_bytes(SECRET)
    paths = {name: tmp / name for name in IDS}
    for root in paths.values():
        (root / "d" / "sub").mkdir(parents=True)
        (root / "d" / "sub" / "victim").write_bytes(b"victim")
        (root / "data").write_bytes(b"data")
        (root / "root-only").write_bytes(b"root only")
        (root / "root-only").chmod(0o600)
        (root / "users-file").write_bytes(b"user 1000's")
        os.chown(root / "users-file", 1000, 1000)
        os.symlink(str(outside), root / "out-link")
        root.chmod(0o777)
    return outside, paths


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    outside, paths = build_tree(tmp_path)
    exports = [
        ExportConfig(path=str(paths["rw"]), id=IDS["rw"], root_squash=False),
        ExportConfig(path=str(paths["sq"]), id=IDS["sq"], root_squash=True),
        ExportConfig(path=str(paths["ro"]), id=IDS["ro"], root_squash=False, read_only=True),
    ]
    with serve_in_thread(ServerConfig(exports=exports, state_dir=tmp_path / "state")) as srv:
        raw = srv.client()
        roots = {name: raw.mount(str(path)) for name, path in paths.items()}
        try:
            yield World(tmp_path, outside, paths, roots, Nfs3(raw, roots["rw"]), raw)
        finally:
            raw.close()


# -- the attacks: each returns the status the server answered -------------------------------


def dotdot_at_root(w: World) -> enum.IntEnum:
    res = w.nfs.lookup(w.roots["rw"], b"..")
    assert not res.ok or res.fh == w.roots["rw"], ".. of the root must be the root"
    return res.status


def name_with_slash(w: World) -> enum.IntEnum:
    return w.nfs.lookup(w.roots["rw"], b"../outside/secret").status


def name_with_nul(w: World) -> enum.IntEnum:
    return w.nfs.lookup(w.roots["rw"], b"data\0/../../outside").status


def create_name_with_slash(w: World) -> enum.IntEnum:
    return w.nfs.create(w.roots["rw"], b"../outside/planted", CreateMode.UNCHECKED).status


def mnt_dotdot(w: World) -> enum.IntEnum:
    return Mountstat3(mount_status(w.raw, f"{w.paths['rw']}/../outside")[0])


def mnt_through_symlink(w: World) -> enum.IntEnum:
    return Mountstat3(mount_status(w.raw, f"{w.paths['rw']}/out-link")[0])


def lookup_through_symlink(w: World) -> enum.IntEnum:
    return w.nfs.lookup(w.fh("rw", "out-link"), b"secret").status


def read_symlink_handle(w: World) -> enum.IntEnum:
    return w.nfs.read(w.fh("rw", "out-link"), 0, 100).status


def create_through_symlink(w: World) -> enum.IntEnum:
    return w.nfs.create(w.fh("rw", "out-link"), b"planted", CreateMode.UNCHECKED).status


def _swap_for_symlink(w: World, rel: str) -> None:
    """Behind the server's back: move ``rel`` outside, leave a symlink to it in its place."""
    shutil.move(str(w.paths["rw"] / rel), str(w.outside / "moved"))
    os.symlink(str(w.outside / "moved"), w.paths["rw"] / rel)


def dir_swapped_after_lookup(w: World) -> enum.IntEnum:
    d = w.fh("rw", "d")
    _swap_for_symlink(w, "d")
    return w.nfs.create(d, b"planted", CreateMode.UNCHECKED).status


def parent_swapped_after_lookup(w: World) -> enum.IntEnum:
    sub = w.fh("rw", "d", "sub")
    _swap_for_symlink(w, "d")
    return w.nfs.remove(sub, b"victim").status


def file_of_swapped_dir_read(w: World) -> enum.IntEnum:
    victim = w.fh("rw", "d", "sub", "victim")
    _swap_for_symlink(w, "d")
    return w.nfs.read(victim, 0, 100).status


def local_hard_link_read(w: World) -> enum.IntEnum:
    """A name made inside the export is served, as by any NFS server: it is that file."""
    os.link(w.outside / "secret", w.paths["rw"] / "hl")
    res = w.nfs.read(w.fh("rw", "hl"), 0, 100)
    assert not res.ok or res.data == SECRET
    return res.status


def local_hard_link_removed(w: World) -> enum.IntEnum:
    """Once the last name inside the export is gone, its handle reaches nothing."""
    os.link(w.outside / "secret", w.paths["rw"] / "hl")
    fh = w.fh("rw", "hl")
    os.unlink(w.paths["rw"] / "hl")
    w.nfs.write(fh, 0, b"overwritten")
    return w.nfs.read(fh, 0, 100).status


def nfs_link_to_other_export(w: World) -> enum.IntEnum:
    return w.nfs.link(w.fh("sq", "data"), w.roots["rw"], b"stolen").status


def handle_replayed_across_exports(w: World) -> enum.IntEnum:
    return w.nfs.read(w.reseal(w.fh("rw", "data"), IDS["sq"]), 0, 100).status


def handle_of_unknown_export(w: World) -> enum.IntEnum:
    return w.nfs.getattr(w.reseal(w.fh("rw", "data"), 99)).status


def handle_with_flipped_byte(w: World) -> enum.IntEnum:
    fh = w.fh("rw", "data")
    return w.nfs.getattr(fh[:10] + bytes([fh[10] ^ 1]) + fh[11:]).status


def stale_after_delete(w: World) -> enum.IntEnum:
    fh = w.fh("rw", "data")
    os.unlink(w.paths["rw"] / "data")
    (w.paths["rw"] / "data").write_bytes(b"a new file, maybe the same inode")
    return w.nfs.read(fh, 0, 100).status


def survives_rename(w: World) -> enum.IntEnum:
    fh = w.fh("rw", "data")
    os.rename(w.paths["rw"] / "data", w.paths["rw"] / "d" / "renamed")
    res = w.nfs.read(fh, 0, 100)
    assert not res.ok or res.data == b"data"
    return res.status


def stale_after_rename_over(w: World) -> enum.IntEnum:
    victim = w.fh("rw", "d", "sub", "victim")
    os.rename(w.paths["rw"] / "data", w.paths["rw"] / "d" / "sub" / "victim")
    return w.nfs.getattr(victim).status


def squashed_root_reads_root_file(w: World) -> enum.IntEnum:
    return w.nfs.read(w.fh("sq", "root-only"), 0, 100).status


def squashed_root_chowns(w: World) -> enum.IntEnum:
    return w.nfs.setattr(w.fh("sq", "users-file"), SetAttr(uid=0)).status


def squashed_root_creates(w: World) -> enum.IntEnum:
    res = w.nfs.create(w.roots["sq"], b"new", CreateMode.GUARDED)
    assert not res.ok or (w.paths["sq"] / "new").stat().st_uid == NOBODY
    return res.status


def read_only_write(w: World) -> enum.IntEnum:
    return w.nfs.write(w.fh("ro", "data"), 0, b"changed").status


def read_only_create(w: World) -> enum.IntEnum:
    return w.nfs.create(w.roots["ro"], b"new", CreateMode.UNCHECKED).status


def read_only_remove(w: World) -> enum.IntEnum:
    return w.nfs.remove(w.roots["ro"], b"data").status


def read_only_setattr(w: World) -> enum.IntEnum:
    return w.nfs.setattr(w.fh("ro", "data"), SetAttr(mode=0o777)).status


def read_only_handle_resealed_as_rw(w: World) -> enum.IntEnum:
    """A read-only export's handle claiming the writable export does not make it writable."""
    return w.nfs.write(w.reseal(w.fh("ro", "data"), IDS["rw"]), 0, b"changed").status


Attack = Callable[[World], enum.IntEnum]
TABLE: list[tuple[Attack, enum.IntEnum]] = [
    (dotdot_at_root, Nfsstat3.OK),
    (name_with_slash, Nfsstat3.ACCES),
    (name_with_nul, Nfsstat3.ACCES),
    (create_name_with_slash, Nfsstat3.ACCES),
    (mnt_dotdot, Mountstat3.NOENT),
    (mnt_through_symlink, Mountstat3.NOTDIR),
    (lookup_through_symlink, Nfsstat3.NOTDIR),
    (read_symlink_handle, Nfsstat3.INVAL),
    (create_through_symlink, Nfsstat3.NOTDIR),
    (dir_swapped_after_lookup, Nfsstat3.STALE),
    (parent_swapped_after_lookup, Nfsstat3.STALE),
    (file_of_swapped_dir_read, Nfsstat3.STALE),
    (local_hard_link_read, Nfsstat3.OK),
    (local_hard_link_removed, Nfsstat3.STALE),
    (nfs_link_to_other_export, Nfsstat3.XDEV),
    (handle_replayed_across_exports, Nfsstat3.STALE),
    (handle_of_unknown_export, Nfsstat3.STALE),
    (handle_with_flipped_byte, Nfsstat3.BADHANDLE),
    (stale_after_delete, Nfsstat3.STALE),
    (survives_rename, Nfsstat3.OK),
    (stale_after_rename_over, Nfsstat3.STALE),
    (squashed_root_reads_root_file, Nfsstat3.ACCES),
    (squashed_root_chowns, Nfsstat3.PERM),
    (squashed_root_creates, Nfsstat3.OK),
    (read_only_write, Nfsstat3.ROFS),
    (read_only_create, Nfsstat3.ROFS),
    (read_only_remove, Nfsstat3.ROFS),
    (read_only_setattr, Nfsstat3.ROFS),
    (read_only_handle_resealed_as_rw, Nfsstat3.STALE),
]


def snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``root`` (symlinks not followed): mode and content."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        data = p.read_bytes() if p.is_file() and not p.is_symlink() else b""
        out[str(p.relative_to(root))] = (st.st_mode, data)
    return out


@pytest.mark.parametrize(("attack", "expected"), TABLE, ids=[a.__name__ for a, _ in TABLE])
def test_attack(world: World, attack: Attack, expected: enum.IntEnum) -> None:
    outside_before = snapshot(world.outside)
    swapped_before = snapshot(world.paths["rw"] / "d")  # what a swap moves outside
    ro_before = snapshot(world.paths["ro"])
    status = attack(world)
    assert (type(status), status) == (type(expected), expected), (
        f"{attack.__name__}: got {status!r}, expected {expected!r}"
    )
    moved = world.outside / "moved"
    if moved.exists():
        assert snapshot(moved) == swapped_before, "a directory swapped outside changed"
        shutil.rmtree(moved)
    assert snapshot(world.outside) == outside_before, "something outside the exports changed"
    assert snapshot(world.paths["ro"]) == ro_before, "the read-only export changed"


def table_markdown() -> str:
    """The table as docs/hardening.md shows it (``python -c`` from tests/protocol)."""
    rows = [f"| `{a.__name__}` | {type(e).__name__}.{e.name} |" for a, e in TABLE]
    return "\n".join(["| attack | expected |", "| --- | --- |", *rows])


def test_docs_show_this_table() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "hardening.md"
    assert table_markdown() in docs.read_text(), "docs/hardening.md's attack table is stale"

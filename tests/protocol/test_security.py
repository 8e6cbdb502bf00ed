"""Security properties of the real server on loopback: no path escapes, unforgeable and
export-bound handles, read-only exports, and root/all squashing (exports(5) semantics).

The tests run as root (like the rest of the suite), so on-disk ownership can be checked.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from rawclient import (
    RawClient,
    RunningServer,
    local_config,
    mount_status,
    nfs_commit,
    nfs_create,
    nfs_getattr,
    nfs_lookup,
    nfs_mkdir,
    nfs_read,
    nfs_remove,
    nfs_rename,
    nfs_setattr,
    nfs_write,
    serve_in_thread,
)

from ferry.nfs3.const import NFS_PROGRAM, Mountstat3, Nfsstat3
from ferry.nfs3.filehandle import HANDLE_SIZE, HandleCodec
from ferry.server.config import ExportConfig, ServerConfig
from ferry.xdr import Packer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="checks ownership; needs root")

LNK, DIR, REG = 5, 2, 1
NOBODY = 65534


@pytest.fixture
def export(tmp_path: Path) -> Path:
    root = tmp_path / "export"
    (root / "a" / "b").mkdir(parents=True)
    (root / "d").mkdir()
    (root / "d" / "victim").write_bytes(b"keep me")
    (root / "p" / "sub").mkdir(parents=True)
    (root / "p" / "sub" / "victim").write_bytes(b"keep me too")
    (root / "data.txt").write_bytes(b"public data\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "outside-file").write_bytes(b"not exported")
    os.symlink("/etc", root / "etc-link")
    os.symlink(str(outside), root / "out-link")
    return root


@pytest.fixture
def server(export: Path, tmp_path: Path) -> Iterator[RunningServer]:
    with serve_in_thread(local_config(export, tmp_path / "state", root_squash=False)) as srv:
        yield srv


def lookup_ok(c: RawClient, dirfh: bytes, name: str) -> bytes:
    status, fh, _ = nfs_lookup(c, dirfh, name)
    assert status == Nfsstat3.OK, f"LOOKUP {name} -> {status.name}"
    assert fh is not None
    return fh


def getattr_status(c: RawClient, fh: bytes) -> int:
    """GETATTR's nfsstat3, or -1 if the call itself was refused at the RPC level."""
    p = Packer()
    p.pack_opaque(fh)
    reply = c.call(NFS_PROGRAM, 3, 1, p.get_buffer())
    if (reply.reply_stat, reply.stat) != (0, 0):
        return -1
    return reply.body.unpack_uint()


# -- path escapes -------------------------------------------------------------------------


def test_dotdot_at_export_root_is_the_root(client: RawClient, export: Path) -> None:
    root = client.mount(str(export))
    status, fh, attr = nfs_lookup(client, root, "..")
    assert status == Nfsstat3.OK
    assert fh == root
    assert attr is not None and attr.fileid == os.stat(export).st_ino
    # Climbing from a subdirectory stops at the root too.
    a = lookup_ok(client, root, "a")
    b = lookup_ok(client, a, "b")
    assert lookup_ok(client, b, "..") == a
    assert lookup_ok(client, lookup_ok(client, a, ".."), "..") == root


def test_dotdot_at_root_of_a_subdirectory_mount_stays_in_the_export(
    client: RawClient, export: Path
) -> None:
    root = client.mount(str(export))
    sub = client.mount(f"{export}/a")
    assert lookup_ok(client, sub, "..") == root


@pytest.mark.parametrize(
    "name",
    [
        b"../../etc",
        b"a/b",
        b"/etc",
        b"/",
        b"a/",
        b"./a",
        b"../export",
        b"etc-link/passwd",
        b"a\0",
        b"\0",
        b"data.txt\0.bak",
        b"",
    ],
)
def test_lookup_of_names_with_slash_or_nul_is_acces(
    client: RawClient, export: Path, name: bytes
) -> None:
    root = client.mount(str(export))
    status, fh, attr = nfs_lookup(client, root, name)
    assert status == Nfsstat3.ACCES
    assert fh is None and attr is None
    # Also from a subdirectory.
    a = lookup_ok(client, root, "a")
    assert nfs_lookup(client, a, name)[0] == Nfsstat3.ACCES


def test_symlink_out_of_the_export_is_returned_as_a_symlink(
    client: RawClient, export: Path
) -> None:
    root = client.mount(str(export))
    status, link, attr = nfs_lookup(client, root, "etc-link")
    assert status == Nfsstat3.OK and link is not None
    assert attr is not None and attr.type == LNK
    assert attr.fileid == os.lstat(export / "etc-link").st_ino != os.stat("/etc").st_ino
    status, attr = nfs_getattr(client, link)
    assert status == Nfsstat3.OK and attr is not None and attr.type == LNK
    # Using the link's handle as a directory never reaches /etc.
    assert nfs_lookup(client, link, "passwd")[0] == Nfsstat3.NOTDIR
    assert nfs_lookup(client, link, "..")[0] == Nfsstat3.NOTDIR
    assert nfs_read(client, link)[0] == Nfsstat3.INVAL
    p = Packer()
    p.pack_opaque(link)
    p.pack_uhyper(0)
    p.pack_uhyper(0)
    p.pack_uint(4096)
    reply = client.call(NFS_PROGRAM, 3, 16, p.get_buffer())  # READDIR
    assert reply.ok().unpack_uint() == Nfsstat3.NOTDIR


def test_changes_through_a_symlink_handle_are_refused(
    client: RawClient, export: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    root = client.mount(str(export))
    link = lookup_ok(client, root, "out-link")
    assert nfs_create(client, link, "planted")[0] == Nfsstat3.NOTDIR
    assert nfs_mkdir(client, link, "planted-dir")[0] == Nfsstat3.NOTDIR
    assert nfs_remove(client, link, "outside-file") == Nfsstat3.NOTDIR
    assert nfs_rename(client, link, "outside-file", root, "stolen") == Nfsstat3.NOTDIR
    assert nfs_rename(client, root, "data.txt", link, "leaked") == Nfsstat3.NOTDIR
    assert sorted(os.listdir(outside)) == ["outside-file"]
    assert (export / "data.txt").exists()


def test_directory_swapped_for_a_symlink_is_not_followed(
    client: RawClient, export: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    root = client.mount(str(export))
    d = lookup_ok(client, root, "d")
    # Behind the server's back: move d out of the export and put a symlink to it in its
    # place. The handle of d must not reach the directory through that symlink.
    shutil.move(str(export / "d"), str(outside / "d"))
    os.symlink(str(outside / "d"), export / "d")
    assert nfs_create(client, d, "planted")[0] == Nfsstat3.STALE
    assert nfs_remove(client, d, "victim") == Nfsstat3.STALE
    assert nfs_mkdir(client, d, "planted-dir")[0] == Nfsstat3.STALE
    assert sorted(os.listdir(outside / "d")) == ["victim"]
    # A fresh LOOKUP of the name now finds the symlink, not a directory.
    status, _, attr = nfs_lookup(client, root, "d")
    assert status == Nfsstat3.OK and attr is not None and attr.type == LNK


def test_parent_swapped_for_a_symlink_is_not_followed(
    client: RawClient, export: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    root = client.mount(str(export))
    p = lookup_ok(client, root, "p")
    sub = lookup_ok(client, p, "sub")
    # Replace the *parent* p with a symlink to the same directory moved outside: the
    # path p/sub still leads to sub's inode, but only through a symlink.
    shutil.move(str(export / "p"), str(outside / "p"))
    os.symlink(str(outside / "p"), export / "p")
    assert nfs_create(client, sub, "planted")[0] == Nfsstat3.STALE
    assert nfs_remove(client, sub, "victim") == Nfsstat3.STALE
    assert nfs_rename(client, sub, "victim", root, "stolen") == Nfsstat3.STALE
    assert sorted(os.listdir(outside / "p" / "sub")) == ["victim"]
    assert (outside / "p" / "sub" / "victim").read_bytes() == b"keep me too"
    assert not (export / "stolen").exists()
    # Even if a handle for the moved-out file is obtained, its data stays unreachable.
    status, victim, _ = nfs_lookup(client, sub, "victim")
    if status == Nfsstat3.OK:
        assert victim is not None
        assert nfs_read(client, victim)[0] == Nfsstat3.STALE
        assert nfs_write(client, victim, b"x")[0] == Nfsstat3.STALE
    assert (outside / "p" / "sub" / "victim").read_bytes() == b"keep me too"


def test_lookup_through_a_swapped_parent_reveals_nothing(
    client: RawClient, export: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    root = client.mount(str(export))
    sub = lookup_ok(client, lookup_ok(client, root, "p"), "sub")
    shutil.move(str(export / "p"), str(outside / "p"))
    os.symlink(str(outside / "p"), export / "p")
    status, fh, attr = nfs_lookup(client, sub, "victim")
    assert (status, fh, attr) == (Nfsstat3.STALE, None, None)


@pytest.mark.parametrize(
    "suffix", ["/..", "/../..", "/a/../..", "/../../etc", "/./..", "/a/../../outside"]
)
def test_mnt_with_dotdot_does_not_escape(client: RawClient, export: Path, suffix: str) -> None:
    status, fh = mount_status(client, f"{export}{suffix}")
    assert status == Mountstat3.NOENT
    assert fh is None


@pytest.mark.parametrize("path", ["/..", "/../..", "/../../etc", "//..//.."])
def test_mnt_of_dotdot_above_slash_does_not_escape(client: RawClient, path: str) -> None:
    assert mount_status(client, path) == (Mountstat3.NOENT, None)


def test_mnt_through_a_symlink_is_refused(client: RawClient, export: Path) -> None:
    assert mount_status(client, f"{export}/etc-link")[0] == Mountstat3.NOTDIR
    assert mount_status(client, f"{export}/out-link")[0] == Mountstat3.NOTDIR
    assert mount_status(client, f"{export}/out-link/x")[0] in (Mountstat3.NOTDIR, Mountstat3.NOENT)


# -- forged handles -----------------------------------------------------------------------


def test_every_flipped_byte_is_badhandle(client: RawClient, export: Path) -> None:
    root = client.mount(str(export))
    fh = lookup_ok(client, root, "data.txt")
    assert len(fh) == HANDLE_SIZE
    for i in range(len(fh)):
        for mask in (0x01, 0x80, 0xFF):
            forged = fh[:i] + bytes([fh[i] ^ mask]) + fh[i + 1 :]
            status = getattr_status(client, forged)
            assert status == Nfsstat3.BADHANDLE, f"byte {i} ^ {mask:#x} -> {status}"
            assert nfs_read(client, forged)[0] == Nfsstat3.BADHANDLE
    assert getattr_status(client, fh) == Nfsstat3.OK  # the original is still fine


def test_truncated_and_extended_handles_are_badhandle(client: RawClient, export: Path) -> None:
    root = client.mount(str(export))
    fh = lookup_ok(client, root, "data.txt")
    for n in range(len(fh)):
        assert getattr_status(client, fh[:n]) == Nfsstat3.BADHANDLE, n
    for extra in (b"\0", b"\0" * 4, b"x" * (64 - len(fh))):
        assert getattr_status(client, fh + extra) == Nfsstat3.BADHANDLE
    assert getattr_status(client, fh + b"x" * (65 - len(fh))) == -1  # over NFS3_FHSIZE
    assert getattr_status(client, b"\0" * HANDLE_SIZE) == Nfsstat3.BADHANDLE


def test_handle_sealed_with_another_key_is_badhandle(
    client: RawClient, export: Path, server: RunningServer
) -> None:
    root = client.mount(str(export))
    fh = lookup_ok(client, root, "data.txt")
    export_id = server.app.exports[0].export_id
    fileid = os.stat(export / "data.txt").st_ino
    generation = server.app.exports[0].backend.getattr(fileid).generation
    other = HandleCodec(b"k" * 32)
    forged = other.encode(export_id, fileid, generation)
    assert len(forged) == len(fh) and forged != fh
    assert getattr_status(client, forged) == Nfsstat3.BADHANDLE
    assert nfs_write(client, forged, b"pwned")[0] == Nfsstat3.BADHANDLE
    assert (export / "data.txt").read_bytes() == b"public data\n"


def two_export_config(tmp_path: Path, with_b: bool = True) -> ServerConfig:
    a, b = tmp_path / "ea", tmp_path / "eb"
    exports = [ExportConfig(path=str(a), id=11, root_squash=False)]
    if with_b:
        exports.append(ExportConfig(path=str(b), id=22, root_squash=False))
    return ServerConfig(exports=exports, state_dir=tmp_path / "state2")


def test_handles_are_bound_to_their_export(tmp_path: Path) -> None:
    a, b = tmp_path / "ea", tmp_path / "eb"
    a.mkdir()
    b.mkdir()
    (a / "only-in-a").write_bytes(b"A")
    (b / "only-in-b").write_bytes(b"B")
    with serve_in_thread(two_export_config(tmp_path)) as srv:
        c = srv.client()
        try:
            root_a, root_b = c.mount(str(a)), c.mount(str(b))
            file_a = lookup_ok(c, root_a, "only-in-a")
            file_b = lookup_ok(c, root_b, "only-in-b")
            assert nfs_read(c, file_a) == (Nfsstat3.OK, b"A")
            assert nfs_read(c, file_b) == (Nfsstat3.OK, b"B")
            attr_a, attr_b = nfs_getattr(c, root_a)[1], nfs_getattr(c, root_b)[1]
            assert attr_a is not None and attr_b is not None
            assert (attr_a.fsid, attr_b.fsid) == (11, 22)  # fsid is the export id
            # Names resolve only inside the export of the directory handle.
            assert nfs_lookup(c, root_b, "only-in-a")[0] == Nfsstat3.NOENT
            assert nfs_lookup(c, root_a, "only-in-b")[0] == Nfsstat3.NOENT
            # A correctly sealed handle claiming A's file in export B (made with the key
            # the server persisted) does not reach A's file.
            codec = HandleCodec((tmp_path / "state2" / "handle.key").read_bytes())
            a_ino = os.stat(a / "only-in-a").st_ino
            a_gen = srv.app.exports[0].backend.getattr(a_ino).generation
            assert codec.encode(11, a_ino, a_gen) == file_a
            cross = codec.encode(22, a_ino, a_gen)
            assert getattr_status(c, cross) == Nfsstat3.STALE
            assert nfs_read(c, cross)[0] == Nfsstat3.STALE
            assert nfs_write(c, cross, b"x")[0] == Nfsstat3.STALE
            # An export id nobody serves is STALE too.
            assert getattr_status(c, codec.encode(33, a_ino, a_gen)) == Nfsstat3.STALE
            # Cross-export changes are refused.
            assert nfs_rename(c, root_a, "only-in-a", root_b, "moved") == Nfsstat3.XDEV
            assert (a / "only-in-a").read_bytes() == b"A"
        finally:
            c.close()
    # Restart on the same state directory without export B.
    with serve_in_thread(two_export_config(tmp_path, with_b=False)) as srv:
        c = srv.client()
        try:
            assert nfs_read(c, file_a) == (Nfsstat3.OK, b"A")
            assert getattr_status(c, file_b) == Nfsstat3.STALE
            assert getattr_status(c, root_b) == Nfsstat3.STALE
            assert nfs_lookup(c, root_b, "only-in-b")[0] == Nfsstat3.STALE
            assert mount_status(c, str(b))[0] == Mountstat3.NOENT
        finally:
            c.close()


# -- read-only exports --------------------------------------------------------------------


def test_read_only_export(tmp_path: Path, export: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in export.rglob("*") if not p.is_symlink()}
    with serve_in_thread(
        local_config(export, tmp_path / "state", read_only=True, root_squash=False)
    ) as srv:
        c = srv.client()
        try:
            root = c.mount(str(export))
            f = lookup_ok(c, root, "data.txt")
            a = lookup_ok(c, root, "a")
            assert nfs_read(c, f) == (Nfsstat3.OK, b"public data\n")
            assert nfs_write(c, f, b"changed")[0] == Nfsstat3.ROFS
            assert nfs_create(c, root, "new")[0] == Nfsstat3.ROFS
            assert nfs_create(c, root, "data.txt")[0] == Nfsstat3.ROFS
            assert nfs_setattr(c, f, mode=0o777) == Nfsstat3.ROFS
            assert nfs_setattr(c, f, size=0) == Nfsstat3.ROFS
            assert nfs_remove(c, root, "data.txt") == Nfsstat3.ROFS
            assert nfs_rename(c, root, "data.txt", a, "moved") == Nfsstat3.ROFS
            assert nfs_mkdir(c, root, "newdir")[0] == Nfsstat3.ROFS
            assert nfs_commit(c, f)[0] == Nfsstat3.ROFS
            assert nfs_read(c, f) == (Nfsstat3.OK, b"public data\n")
        finally:
            c.close()
    after = {p: p.stat().st_mtime_ns for p in export.rglob("*") if not p.is_symlink()}
    assert after == before
    assert (export / "data.txt").read_bytes() == b"public data\n"
    assert oct((export / "data.txt").stat().st_mode & 0o777) == oct(0o644)


# -- squashing ----------------------------------------------------------------------------


@pytest.fixture
def squash_tree(tmp_path: Path) -> Path:
    root = tmp_path / "sq"
    root.mkdir()
    root.chmod(0o777)
    secret = root / "secret"
    secret.write_bytes(b"root only")
    secret.chmod(0o600)
    os.chown(secret, 0, 0)
    mine = root / "users-file"
    mine.write_bytes(b"user 1000 only")
    mine.chmod(0o600)
    os.chown(mine, 1000, 1000)
    return root


def serve_squash(tmp_path: Path, root: Path, **kw: object):  # type: ignore[no-untyped-def]
    return serve_in_thread(local_config(root, tmp_path / "state", **kw))


def test_root_squash_maps_root_to_anonuid(tmp_path: Path, squash_tree: Path) -> None:
    with serve_squash(tmp_path, squash_tree) as srv:  # root_squash is the default
        c = srv.client()
        try:
            c.as_user(0, 0)
            root = c.mount(str(squash_tree))
            status, fh, attr = nfs_create(c, root, "made-by-root", mode=0o644)
            assert status == Nfsstat3.OK and fh is not None
            assert attr is not None and (attr.uid, attr.gid) == (NOBODY, NOBODY)
            st = (squash_tree / "made-by-root").stat()
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
            status, _ = nfs_mkdir(c, root, "dir-by-root")
            assert status == Nfsstat3.OK
            assert (squash_tree / "dir-by-root").stat().st_uid == NOBODY
            # Root-owned 0600: squashed root may not read or write it.
            secret = lookup_ok(c, root, "secret")
            assert nfs_read(c, secret)[0] == Nfsstat3.ACCES
            assert nfs_write(c, secret, b"x")[0] == Nfsstat3.ACCES
            assert nfs_setattr(c, secret, mode=0o666) == Nfsstat3.PERM
            # A non-root user is not squashed: uid 1000 reads its own 0600 file.
            c.as_user(1000, 1000)
            assert nfs_read(c, lookup_ok(c, root, "users-file")) == (Nfsstat3.OK, b"user 1000 only")
            status, _, attr = nfs_create(c, root, "made-by-1000")
            assert status == Nfsstat3.OK and attr is not None and attr.uid == 1000
            assert (squash_tree / "made-by-1000").stat().st_uid == 1000
        finally:
            c.close()
    assert (squash_tree / "secret").read_bytes() == b"root only"
    assert (squash_tree / "secret").stat().st_mode & 0o777 == 0o600


def test_root_squash_with_custom_anonuid(tmp_path: Path, squash_tree: Path) -> None:
    with serve_squash(tmp_path, squash_tree, anonuid=4321, anongid=4322) as srv:
        c = srv.client()
        try:
            root = c.mount(str(squash_tree))
            status, _, attr = nfs_create(c, root, "anon")
            assert status == Nfsstat3.OK and attr is not None
            assert (attr.uid, attr.gid) == (4321, 4322)
            st = (squash_tree / "anon").stat()
            assert (st.st_uid, st.st_gid) == (4321, 4322)
        finally:
            c.close()


def test_root_squash_squashes_group_zero(tmp_path: Path, squash_tree: Path) -> None:
    group_file = squash_tree / "group-zero"
    group_file.write_bytes(b"gid 0 readable")
    group_file.chmod(0o640)
    os.chown(group_file, 1000, 0)
    with serve_squash(tmp_path, squash_tree) as srv:
        c = srv.client()
        try:
            root = c.mount(str(squash_tree))
            fh = lookup_ok(c, root, "group-zero")
            c.as_user(2000, 0)
            assert nfs_read(c, fh)[0] == Nfsstat3.ACCES
            c.as_user(2000, 2000, (0,))
            assert nfs_read(c, fh)[0] == Nfsstat3.ACCES
        finally:
            c.close()


@pytest.mark.parametrize("uid", [0, 1000, 4242])
def test_all_squash_maps_every_uid(tmp_path: Path, squash_tree: Path, uid: int) -> None:
    with serve_squash(tmp_path, squash_tree, all_squash=True, root_squash=False) as srv:
        c = srv.client()
        try:
            c.as_user(uid, uid)
            root = c.mount(str(squash_tree))
            status, _, attr = nfs_create(c, root, f"by-{uid}")
            assert status == Nfsstat3.OK and attr is not None
            assert (attr.uid, attr.gid) == (NOBODY, NOBODY)
            st = (squash_tree / f"by-{uid}").stat()
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
            # Not even uid 1000 may read its own 0600 file: it acts as nobody.
            assert nfs_read(c, lookup_ok(c, root, "users-file"))[0] == Nfsstat3.ACCES
            assert nfs_read(c, lookup_ok(c, root, "secret"))[0] == Nfsstat3.ACCES
        finally:
            c.close()


def test_without_root_squash_root_reads_root_files(tmp_path: Path, squash_tree: Path) -> None:
    with serve_squash(tmp_path, squash_tree, root_squash=False) as srv:
        c = srv.client()
        try:
            c.as_user(0, 0)
            root = c.mount(str(squash_tree))
            assert nfs_read(c, lookup_ok(c, root, "secret")) == (Nfsstat3.OK, b"root only")
            assert nfs_read(c, lookup_ok(c, root, "users-file")) == (Nfsstat3.OK, b"user 1000 only")
            status, _, attr = nfs_create(c, root, "by-root")
            assert status == Nfsstat3.OK and attr is not None and attr.uid == 0
            assert (squash_tree / "by-root").stat().st_uid == 0
        finally:
            c.close()


def test_out_of_range_anonuid_is_refused() -> None:
    # -1 would reach chown() as "leave unchanged": squashed files would stay root's.
    from ferry.backends import MemoryBackend
    from ferry.nfs3.exports import Export

    for kw in ({"anonuid": -1}, {"anongid": -1}, {"anonuid": 1 << 32}):
        with pytest.raises(ValueError, match="out of range"):
            Export("/x", MemoryBackend(), **kw)  # type: ignore[arg-type]

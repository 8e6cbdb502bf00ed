"""Real programs on a real FUSE mount (``ferry mount``) of a Ferry server and of NFS-Ganesha.

Each test runs once per server, in its own directory of that server's one mount (see
conftest.py), and checks what it did through the mount, against a local copy and, where it
matters, in the server's export directory.
"""

from __future__ import annotations

import ctypes
import errno
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fusetest import check_stopped, mount_or_fail
from mounthelp import Mount, mounted

from helpers import peers
from helpers.tools import require_tool

SRC_TREE = Path(__file__).resolve().parents[2] / "src" / "ferry"


def run(*argv: str | Path, cwd: Path | None = None) -> str:
    res = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert res.returncode == 0, (argv, res.stdout, res.stderr)
    return res.stdout


def workdir(m: Mount, name: str) -> Path:
    d = m.path / name
    d.mkdir()
    return d


def sample_tree(root: Path) -> Path:
    """A small tree with nested dirs, a symlink, a hard link, odd modes, times and owners."""
    src = root / "tree"
    shutil.copytree(SRC_TREE / "client", src / "client", ignore=shutil.ignore_patterns("*.pyc"))
    (src / "empty").mkdir()
    (src / "big.bin").write_bytes(random.Random(7).randbytes(3 * 1024 * 1024 + 17))
    (src / "script.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "script.sh").chmod(0o750)
    os.symlink("script.sh", src / "link")
    os.link(src / "script.sh", src / "hard")
    os.utime(src / "big.bin", (1_000_000_000, 1_000_000_000))
    if os.geteuid() == 0:  # only root can give files away (neither server squashes root)
        os.chown(src / "big.bin", 1234, 5678)
    os.utime(src / "empty", (1_100_000_000, 1_100_000_000))
    os.utime(src / "link", (1_150_000_000, 1_150_000_000), follow_symlinks=False)
    return src


def link_times_kept(m: Mount) -> bool:
    """NFS-Ganesha 4.3 (VFS) answers SETATTR of a symlink's times with NFS3_OK and changes
    nothing (seen with Ferry's client too, no FUSE involved): its copies keep the time they
    were created at, so comparisons leave symlink times out for it."""
    return not isinstance(m.server, peers.GaneshaServer)


def same_metadata(a: Path, b: Path, link_times: bool = True) -> None:
    """rsync's own verdict: a dry run from ``a`` to ``b`` has nothing to change (contents,
    modes, owners, times of files, directories and symlinks, hard links)."""
    out = run("rsync", "-aHn", "--delete", "--itemize-changes", f"{a}/", f"{b}/").splitlines()
    if not link_times:
        out = [ln for ln in out if not re.match(r"\.L\.\.t\.* ", ln)]
    assert out == []


def masked(lines: list[str], link_times: bool, *fields: int) -> list[str]:
    """``lines`` with the time ``fields`` of symlinks (lines starting with "l") as "-"
    unless ``link_times``."""
    if link_times:
        return lines
    out = []
    for ln in lines:
        words = ln.split()
        if ln.startswith("l"):
            words = ["-" if i in fields else w for i, w in enumerate(words)]
        out.append(" ".join(words))
    return out


def ls_lr(top: Path, link_times: bool = True) -> list[str]:
    """``ls -lR`` with full times and relative paths, minus the ``total`` (blocks) lines."""
    out = run("ls", "-lR", "--time-style=+%s.%N", ".", cwd=top).splitlines()
    return masked([ln for ln in out if not ln.startswith("total ")], link_times, 5)


def find_all(top: Path, link_times: bool = True) -> list[str]:
    """Every entry under ``top``: type, mode, owner, size, mtime, path, link target."""
    out = run("find", top, "-mindepth", "1", "-printf", "%y %m %U:%G %s %T@ %P %l\n")
    return sorted(masked(out.splitlines(), link_times, 4))


def du(top: Path, *how: str) -> int:
    return int(run("du", "-s", *how, top).split()[0])


# -- programs --------------------------------------------------------------------------------


def test_ls_and_stat_match_the_export(nfs_mount: Mount) -> None:
    d = workdir(nfs_mount, "ls")
    exported = nfs_mount.server.export / "ls"
    (exported / "f").write_bytes(b"x" * 5000)
    os.symlink("f", exported / "l")
    out = run("ls", "-la", d)
    assert " f\n" in out and "l -> f" in out
    st = os.stat(d / "f")
    assert (st.st_size, stat.S_ISREG(st.st_mode)) == (5000, True)
    assert st.st_ino == os.stat(exported / "f").st_ino  # inode = NFS fileid


def test_the_mount_runs_on_uvloop(nfs_mount: Mount) -> None:
    """Its loop comes from ``ferry.loops``: uvloop's extension is mapped into the process."""
    maps = Path(f"/proc/{nfs_mount.proc.pid}/maps").read_text()
    assert re.search(r"/uvloop/loop\.cpython-[^/]*\.so$", maps, re.M), "no uvloop in the mount"


def test_cp_a_round_trip_keeps_modes_times_links(nfs_mount: Mount, tmp_path: Path) -> None:
    d = workdir(nfs_mount, "cp")
    src = sample_tree(tmp_path)
    run("cp", "-a", src, d / "tree")
    run("diff", "-r", "--no-dereference", src, d / "tree")
    back = tmp_path / "back"
    run("cp", "-a", d / "tree", back)
    same_metadata(src, back, link_times_kept(nfs_mount))
    assert os.readlink(back / "link") == "script.sh"
    assert os.stat(d / "tree" / "hard").st_nlink == 2


def test_rsync_a_round_trip_keeps_modes_times_links(nfs_mount: Mount, tmp_path: Path) -> None:
    require_tool("rsync", "rsync")
    d = workdir(nfs_mount, "rsync")
    src = sample_tree(tmp_path)
    keep = link_times_kept(nfs_mount)
    run("rsync", "-aH", f"{src}/", f"{d}/")  # temporary files renamed into place
    same_metadata(src, d, keep)
    same_metadata(src, nfs_mount.server.export / "rsync", keep)
    (src / "script.sh").write_text("#!/bin/sh\necho changed\n")  # an update in place
    os.utime(src / "script.sh", (1_200_000_000, 1_200_000_000))
    shutil.rmtree(src / "client" / "__pycache__", ignore_errors=True)
    (src / "empty" / "new").write_bytes(b"n" * 70_000)
    run("rsync", "-aH", "--delete", f"{src}/", f"{d}/")
    same_metadata(src, d, keep)
    back = tmp_path / "back"
    run("rsync", "-aH", f"{d}/", f"{back}/")
    same_metadata(src, back, keep)
    assert os.stat(back / "hard").st_ino == os.stat(back / "script.sh").st_ino


def test_tar_round_trip_identical_content(nfs_mount: Mount, tmp_path: Path) -> None:
    d = workdir(nfs_mount, "tar")
    src = sample_tree(tmp_path)
    run("tar", "-cf", tmp_path / "in.tar", "-C", src, ".")
    run("tar", "-xf", tmp_path / "in.tar", "-C", d)
    run("tar", "-cf", tmp_path / "out.tar", "-C", d, ".")
    keep = link_times_kept(nfs_mount)
    tvf = ["tar", "-tvf"]  # directory order differs: compare sorted listings
    listed = [run(*tvf, tmp_path / t).splitlines() for t in ("in.tar", "out.tar")]
    assert sorted(masked(listed[0], keep, 3, 4)) == sorted(masked(listed[1], keep, 3, 4))
    (tmp_path / "x").mkdir()
    run("tar", "-xf", tmp_path / "out.tar", "-C", tmp_path / "x")
    run("diff", "-r", "--no-dereference", src, tmp_path / "x")
    same_metadata(src, tmp_path / "x", keep)


def test_find_du_ls_lr_match_a_local_copy(nfs_mount: Mount, tmp_path: Path) -> None:
    d = workdir(nfs_mount, "walk")
    src = sample_tree(tmp_path)
    run("cp", "-a", src, d / "tree")
    keep = link_times_kept(nfs_mount)
    assert find_all(d / "tree", keep) == find_all(src, keep)
    assert ls_lr(d / "tree", keep) == ls_lr(src, keep)
    assert du(d / "tree", "-b", "--apparent-size") == du(src, "-b", "--apparent-size")
    exported = nfs_mount.server.export / "walk" / "tree"
    assert du(d / "tree", "-k") == du(exported, "-k")  # blocks as the server counts them


def test_git_init_add_commit_log(nfs_mount: Mount) -> None:
    d = workdir(nfs_mount, "git")
    shutil.copytree(SRC_TREE / "nfs3", d / "nfs3", ignore=shutil.ignore_patterns("*.pyc"))
    git = ["git", "-c", "user.name=Ferry", "-c", "user.email=ferry@example.org"]
    run(*git, "init", "-q", cwd=d)
    run(*git, "add", ".", cwd=d)
    run(*git, "commit", "-qm", "first", cwd=d)
    (d / "nfs3" / "const.py").write_text("# changed\n")
    run(*git, "commit", "-qam", "second", cwd=d)
    assert run(*git, "log", "--format=%s", cwd=d).split() == ["second", "first"]
    run(*git, "fsck", "--no-progress", cwd=d)
    assert run(*git, "status", "--porcelain", cwd=d) == ""


C_FILES = {
    "greet.h": "void greet(const char *who);\n",
    "greet.c": '#include <stdio.h>\n#include "greet.h"\n'
    'void greet(const char *who) { printf("hello, %s\\n", who); }\n',
    "main.c": '#include "greet.h"\nint main(void) { greet("ferry"); return 0; }\n',
    "Makefile": "hello: main.o greet.o\n\t$(CC) -o $@ main.o greet.o\n"
    "%.o: %.c greet.h\n\t$(CC) -O2 -Wall -Werror -c $<\n",
}


def test_make_builds_a_c_program(nfs_mount: Mount) -> None:
    require_tool("make", "make")
    require_tool("gcc", "gcc")
    d = workdir(nfs_mount, "make")
    for name, text in C_FILES.items():
        (d / name).write_text(text)
    run("make", "-s", "CC=gcc", cwd=d)
    assert run(d / "hello") == "hello, ferry\n"
    assert os.access(nfs_mount.server.export / "make" / "hello", os.X_OK)
    assert "up to date" in run("make", "CC=gcc", cwd=d)  # mtimes through the mount agree
    (d / "greet.c").write_text(C_FILES["greet.c"].replace("hello", "hi"))
    built = run("make", "CC=gcc", cwd=d)
    assert "greet.c" in built and "main.c" not in built  # only what changed is rebuilt
    assert run(d / "hello") == "hi, ferry\n"


def test_compileall_and_a_large_directory(nfs_mount: Mount) -> None:
    d = workdir(nfs_mount, "big-dir")
    shutil.copytree(SRC_TREE / "client", d / "client", ignore=shutil.ignore_patterns("*.pyc"))
    run(sys.executable, "-m", "compileall", "-q", d / "client")
    assert list((d / "client" / "__pycache__").glob("*.pyc"))
    many = d / "many"
    many.mkdir()
    names = {f"entry-{i:05d}-{'x' * 40}" for i in range(1000)}  # several READDIRPLUS pages
    for name in names:
        os.close(os.open(many / name, os.O_CREAT | os.O_WRONLY, 0o644))
    assert set(os.listdir(many)) == names
    assert len(run("ls", "-la", many).splitlines()) >= 1000
    shutil.rmtree(many)
    assert not many.exists()


def test_special_files_links_rename_chmod_touch(nfs_mount: Mount) -> None:
    d = workdir(nfs_mount, "misc")
    exported = nfs_mount.server.export / "misc"
    run("mkfifo", d / "fifo")
    assert stat.S_ISFIFO(os.lstat(d / "fifo").st_mode)
    assert stat.S_ISFIFO(os.lstat(exported / "fifo").st_mode)
    (d / "a").write_text("old")
    run("ln", "-s", "a", d / "sym")
    run("ln", d / "a", d / "hard")
    assert (d / "sym").read_text() == "old" and os.readlink(d / "sym") == "a"
    assert os.stat(d / "a").st_nlink == 2
    (d / "b").write_text("new")
    run("mv", d / "b", d / "a")  # over an existing file
    assert (d / "a").read_text() == "new" and (d / "hard").read_text() == "old"
    assert sorted(os.listdir(d)) == ["a", "fifo", "hard", "sym"]
    run("chmod", "640", d / "a")
    assert stat.S_IMODE(os.stat(exported / "a").st_mode) == 0o640
    run("touch", "-d", "2001-02-03 04:05:06 UTC", d / "a")
    assert os.stat(d / "a").st_mtime == os.stat(exported / "a").st_mtime == 981173106
    (d / "sub").mkdir()
    (d / "sub" / "f").write_text("x")
    os.remove(d / "sub" / "f")
    os.rmdir(d / "sub")
    os.truncate(d / "a", 1)
    assert (exported / "a").read_text() == "n"
    st = os.statvfs(d)
    assert st.f_blocks > 0 and st.f_bavail <= st.f_blocks and st.f_namemax == 255


def errno_of(call: Callable[..., object], *args: object) -> int:
    with pytest.raises(OSError) as err:
        call(*args)
    return err.value.errno or 0


def ls_ai(d: Path) -> dict[str, int]:
    """``ls -ai``: every name readdir gives, with the inode number it gives."""
    pairs = (line.split(maxsplit=1) for line in run("ls", "-ai1", d).splitlines())
    return {name: int(ino) for ino, name in pairs}


def test_dot_and_dotdot_are_listed_with_their_inodes(nfs_mount: Mount) -> None:
    """readdir lists ``.`` and ``..`` (the server may not: Ferry's does not, Ganesha's does)
    with the inode numbers of the directory and of its parent, also after a directory moved
    elsewhere."""
    d = workdir(nfs_mount, "dots")
    (d / "a" / "b").mkdir(parents=True)
    (d / "c").mkdir()
    (d / "a" / "f").write_text("x")
    seen = ls_ai(d / "a")
    assert seen == {
        ".": (d / "a").stat().st_ino, "..": d.stat().st_ino,
        "b": (d / "a" / "b").stat().st_ino, "f": (d / "a" / "f").stat().st_ino,
    }  # fmt: skip
    assert ls_ai(d / "a" / "b")[".."] == (d / "a").stat().st_ino
    (d / "a" / "b").rename(d / "c" / "b2")
    assert ls_ai(d / "c" / "b2")[".."] == (d / "c").stat().st_ino
    root = ls_ai(nfs_mount.path)  # (ls shows the mount point's parent for its "..")
    assert root["."] == nfs_mount.path.stat().st_ino and ".." in root
    assert os.listdir(d / "a") == ["f"]  # readdir's callers that skip them still do


class _Dirent(ctypes.Structure):
    _fields_ = [  # glibc's struct dirent64 on Linux
        ("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256),
    ]  # fmt: skip


def test_seekdir_back_to_a_telldir_position_lists_the_same_rest(nfs_mount: Mount) -> None:
    """Directory offsets handed out by the mount can be returned to (telldir/seekdir, as
    ``ls`` never does but ``rm -r`` and Samba do): the rest of the listing comes again."""
    d = workdir(nfs_mount, "seek")
    for i in range(600):
        (d / f"entry-{i:04d}-{'x' * 40}").touch()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.readdir64.restype = ctypes.POINTER(_Dirent)
    libc.readdir64.argtypes = libc.telldir.argtypes = libc.closedir.argtypes = [ctypes.c_void_p]
    libc.telldir.restype = ctypes.c_long
    libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    dirp = libc.opendir(str(d).encode())
    assert dirp, os.strerror(ctypes.get_errno())

    def rest() -> list[bytes]:
        names = []
        while ent := libc.readdir64(dirp):
            names.append(ent.contents.d_name)
        return names

    try:
        first = [libc.readdir64(dirp).contents.d_name for _ in range(250)]
        mark = libc.telldir(dirp)
        after = rest()
        libc.seekdir(dirp, mark)
        again = rest()
    finally:
        libc.closedir(dirp)
    assert first[:2] == [b".", b".."]
    assert again == after and len(first) + len(after) == 602
    assert sorted(first[2:] + after) == sorted(n.encode() for n in os.listdir(d))


def test_server_errors_map_to_errno(nfs_mount: Mount) -> None:
    """Errors only the server can decide (the kernel's own checks come first otherwise)."""
    d = workdir(nfs_mount, "errno")
    (d / "dir").mkdir()
    (d / "dir" / "g").write_text("y")
    assert errno_of(os.stat, d / "missing") == errno.ENOENT  # NFS3ERR_NOENT
    assert errno_of(os.rmdir, d / "dir") == errno.ENOTEMPTY  # NFS3ERR_NOTEMPTY
    assert errno_of(os.stat, d / ("n" * 256)) == errno.ENAMETOOLONG  # NFS3ERR_NAMETOOLONG
    assert errno_of(os.mkdir, d / ("n" * 256)) == errno.ENAMETOOLONG


def test_uid_gid_options_set_the_identity_sent(nfs_mount: Mount, tmp_path: Path) -> None:
    """--uid/--gid: the server checks permissions for, and gives new files to, that identity
    (the kernel lets root through, so EACCES here comes from the server)."""
    if os.geteuid() != 0:
        pytest.fail("needs root: files owned by another user are set up in the export")
    exported = nfs_mount.server.export / "ids"
    (exported / "mine").mkdir(parents=True)
    os.chown(exported / "mine", 4321, 4322)
    (exported / "secret").write_text("root only")
    (exported / "secret").chmod(0o600)
    m = mount_or_fail(nfs_mount.server, tmp_path / "id-mnt", "--uid", "4321", "--gid", "4322")
    try:
        (m.path / "ids" / "mine" / "new").write_text("x")
        st = os.stat(exported / "mine" / "new")
        assert (st.st_uid, st.st_gid) == (4321, 4322)
        assert errno_of((m.path / "ids" / "secret").read_text) == errno.EACCES
        assert errno_of((m.path / "ids" / "other").write_text, "x") == errno.EACCES
    finally:
        check_stopped(m, m.stop())


def run_as(uid: int, gid: int, groups: list[int], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, user=uid, group=gid, extra_groups=groups, capture_output=True, text=True,
        timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_each_caller_acts_as_itself(nfs_mount: Mount) -> None:
    """Without --uid/--gid, each process's requests carry its own uid, gid and groups, as
    with the kernel NFS client: new files are its own, and the server grants what its
    groups allow (a file of group 4400, mode 0640, read by a member)."""
    if os.geteuid() != 0:
        pytest.fail("needs root: runs programs as other users and mounts with allow_other")
    exported = nfs_mount.server.export / "callers"
    exported.mkdir()
    exported.chmod(0o777)
    (exported / "grp").write_text("group data")
    os.chown(exported / "grp", 0, 4400)
    (exported / "grp").chmod(0o640)
    where = Path(tempfile.mkdtemp(prefix="ferry-callers-"))  # others can reach it
    where.chmod(0o755)
    m = mount_or_fail(nfs_mount.server, where / "mnt", "--allow-other")
    try:
        d = m.path / "callers"
        res = run_as(4321, 4321, [4400], "cat", str(d / "grp"))
        assert (res.returncode, res.stdout) == (0, "group data"), res.stderr
        for uid in (4321, 4322):
            res = run_as(uid, uid, [], "sh", "-c", f'echo x > "{d}/by{uid}"; cat "{d}/by{uid}"')
            assert (res.returncode, res.stdout) == (0, "x\n"), res.stderr
            st = os.stat(exported / f"by{uid}")
            assert (st.st_uid, st.st_gid) == (uid, uid)
        res = run_as(4322, 4322, [], "sh", "-c", f'echo y >> "{d}/by4321"')
        assert res.returncode != 0 and "Permission denied" in res.stderr
    finally:
        check_stopped(m, m.stop())
        shutil.rmtree(where)


def test_unlinked_open_file_stays_readable(nfs_mount: Mount) -> None:
    d = workdir(nfs_mount, "silly")
    (d / "f").write_bytes(b"keep me")
    with open(d / "f", "rb") as f:
        os.remove(d / "f")
        assert not (d / "f").exists()
        assert f.read() == b"keep me"
    exported = nfs_mount.server.export / "silly"
    for _ in range(100):  # release is asynchronous: bounded wait for the hidden file to go
        if not os.listdir(exported):
            break
        time.sleep(0.05)
    assert os.listdir(exported) == []


def test_open_file_renamed_over_stays_readable(nfs_mount: Mount) -> None:
    """A rename over a file that is open keeps the file until its last close (as NFS
    clients do), so reading it on goes on; the name shows the new file at once."""
    d = workdir(nfs_mount, "over")
    (d / "victim").write_bytes(b"old data")
    (d / "new").write_bytes(b"new data")
    exported = nfs_mount.server.export / "over"
    with open(d / "victim", "rb") as f:
        os.rename(d / "new", d / "victim")
        assert (d / "victim").read_bytes() == b"new data"
        assert sorted(os.listdir(exported))[0].startswith(".ferry")  # the old file, hidden
        assert f.read() == b"old data"
        os.rename(d / "victim", d / "victim")  # the same file: changes nothing
        assert errno_of(os.rename, d / "missing", d / "victim") == errno.ENOENT
    for _ in range(100):  # release is asynchronous: bounded wait for the hidden file to go
        if os.listdir(exported) == ["victim"]:
            break
        time.sleep(0.05)
    assert os.listdir(exported) == ["victim"]
    assert (exported / "victim").read_bytes() == b"new data"


def cached_bytes(path: Path) -> int:
    """How much of ``path`` is in the page cache (util-linux fincore; it opens the file)."""
    require_tool("fincore", "util-linux")
    return int(run("fincore", "--bytes", "--noheadings", "--output", "RES", path))


def test_open_keeps_cached_pages_of_an_unchanged_file(nfs_mount: Mount) -> None:
    """As with the kernel NFS client, an open keeps the pages read before if the file has
    not changed (same size, mtime and ctime), and drops them if it has."""
    d = workdir(nfs_mount, "keep")
    exported = nfs_mount.server.export / "keep" / "f"
    exported.write_bytes(os.urandom(1 << 20))
    assert (d / "f").read_bytes() == exported.read_bytes()
    assert cached_bytes(d / "f") == 1 << 20
    assert cached_bytes(d / "f") == 1 << 20
    before = os.stat(exported)
    with open(exported, "r+b") as f:
        f.write(b"changed")
    os.utime(exported, ns=(before.st_atime_ns, before.st_mtime_ns))  # only ctime moved
    assert cached_bytes(d / "f") == 0
    assert (d / "f").read_bytes()[:7] == b"changed"


def test_close_to_open_sees_changes_made_on_the_server(nfs_mount: Mount) -> None:
    """Each open revalidates, as with the kernel NFS client: a change made on the server
    shows at the next open even while the kernel holds the old pages and attributes that
    look current (same size and mtime)."""
    d = workdir(nfs_mount, "cto")
    exported = nfs_mount.server.export / "cto" / "f"
    exported.write_bytes(b"a" * 4096)
    for _ in range(2):  # pages and attributes now cached by the kernel
        assert (d / "f").read_bytes() == b"a" * 4096
    before = os.stat(exported)
    exported.write_bytes(b"b" * 4096)
    os.utime(exported, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (d / "f").read_bytes() == b"b" * 4096


# -- mount options and unmounting ---------------------------------------------------------------


@pytest.mark.parametrize("how", ["--read-only", "url"])
def test_read_only_mount_and_sigint_unmount(nfs_mount: Mount, tmp_path: Path, how: str) -> None:
    """``--read-only``, or libnfs's ``readonly`` in the URL."""
    ro = "ro" if how != "url" else "ro-url"  # one server for the module
    (nfs_mount.server.export / ro).mkdir()
    (nfs_mount.server.export / ro / "f").write_text("data")
    if how == "url":
        url = nfs_mount.server.url + "&readonly"
        m = mount_or_fail(nfs_mount.server, tmp_path / f"{ro}-mnt", url=url)
    else:
        m = mount_or_fail(nfs_mount.server, tmp_path / f"{ro}-mnt", how)
    try:
        assert (m.path / ro / "f").read_text() == "data"
        assert errno_of((m.path / ro / "g").write_text, "no") == errno.EROFS
        assert errno_of(os.chmod, m.path / ro / "f", 0o600) == errno.EROFS
    finally:
        check_stopped(m, m.stop(signal.SIGINT))


def test_zero_cache_times_show_server_changes_at_once(nfs_mount: Mount, tmp_path: Path) -> None:
    exported = nfs_mount.server.export / "ttl"
    exported.mkdir()
    opts = ("--attr-timeout", "0", "--entry-timeout", "0")
    m = mount_or_fail(nfs_mount.server, tmp_path / "ttl-mnt", *opts)
    try:
        (exported / "f").write_bytes(b"x")
        assert os.stat(m.path / "ttl" / "f").st_size == 1
        (exported / "f").write_bytes(b"xyz")
        assert os.stat(m.path / "ttl" / "f").st_size == 3  # no cached attributes
        (exported / "f").unlink()
        assert not (m.path / "ttl" / "f").exists()  # no cached name
    finally:
        check_stopped(m, m.stop())


def test_direct_io_mount_reads_writes_and_refuses_shared_mmap(
    nfs_mount: Mount, tmp_path: Path
) -> None:
    """``--direct-io``: no page cache; reads in and out of order, a write seen at once by
    the server, private mmap (exec, git) works, shared mmap is refused (ENODEV)."""
    import mmap

    exported = nfs_mount.server.export / "dio"
    exported.mkdir()
    data = random.Random(5).randbytes(5 << 20)
    (exported / "f").write_bytes(data)
    m = mount_or_fail(nfs_mount.server, tmp_path / "dio-mnt", "--direct-io")
    try:
        path = m.path / "dio" / "f"
        assert path.read_bytes() == data
        with open(path, "rb", buffering=0) as f:
            for off in (3 << 20, 1 << 20, (1 << 20) - 7, 4 << 20, 0):  # out of order, across
                assert os.pread(f.fileno(), 1 << 20, off) == data[off : off + (1 << 20)]
            with mmap.mmap(f.fileno(), 4096, prot=mmap.PROT_READ, flags=mmap.MAP_PRIVATE) as mm:
                assert mm[:4096] == data[:4096]
            shared = (f.fileno(), 4096, mmap.MAP_SHARED, mmap.PROT_READ)
            assert errno_of(mmap.mmap, *shared) == errno.ENODEV
        with open(path, "r+b") as f:
            f.seek(12345)
            f.write(b"direct")
        assert (exported / "f").read_bytes()[12345:12351] == b"direct"  # flushed at close
    finally:
        check_stopped(m, m.stop())


def test_fusermount_u_ends_the_mount_process(nfs_mount: Mount, tmp_path: Path) -> None:
    m = mount_or_fail(nfs_mount.server, tmp_path / "fu-mnt")
    try:
        (m.path / "written-before-unmount").write_text("x")
        run("fusermount3", "-u", m.path)
        assert m.proc.wait(15) == 0, m.text()
    finally:
        check_stopped(m, m.stop())
    assert (nfs_mount.server.export / "written-before-unmount").read_text() == "x"


def test_ferry_umount_ends_the_mount_or_says_why_not(nfs_mount: Mount, tmp_path: Path) -> None:
    """``ferry umount``: fusermount3 -u for a Ferry mount; one line and status 1 for a
    directory that is not mounted or holds another kind of mount."""
    m = mount_or_fail(nfs_mount.server, tmp_path / "um-mnt")
    try:
        (m.path / "written-before-umount").write_text("x")
        res = _ferry_cli("umount", m.path)
        assert (res.returncode, res.stdout, res.stderr) == (0, "", "")
        assert m.proc.wait(15) == 0, m.text()
    finally:
        check_stopped(m, m.stop())
    assert (nfs_mount.server.export / "written-before-umount").read_text() == "x"
    res = _ferry_cli("umount", m.path, "/proc")
    assert res.returncode == 1 and res.stderr.splitlines() == [
        f"ferry: umount: '{m.path}': not mounted",
        "ferry: umount: '/proc': not a ferry mount (type proc); use umount",
    ]


def _ferry_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", *map(str, args)], capture_output=True,
        text=True, timeout=60, stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(peers.SRC_DIR)),
    )  # fmt: skip


def _mount_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ferry", "mount", *map(str, args)], capture_output=True,
        text=True, timeout=60, stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONPATH=str(peers.SRC_DIR)),
    )  # fmt: skip


def _processes_naming(path: Path) -> list[int]:
    """Processes whose command line names ``path`` (a unique temporary directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def test_background_mode_returns_once_mounted(nfs_mount: Mount, tmp_path: Path) -> None:
    (nfs_mount.server.export / "bg").write_text("background")
    where = tmp_path / "bg-mnt"
    where.mkdir()
    res = _mount_cli(nfs_mount.server.url, where)
    try:
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("ferry: mounted ") and mounted(where)
        assert (where / "bg").read_text() == "background"
        assert _processes_naming(where), "no mount process left running"
        run("fusermount3", "-u", where)
        assert peers.wait_until(lambda: not _processes_naming(where), 30), "still running"
    finally:
        if mounted(where):
            subprocess.run(["fusermount3", "-u", "-z", str(where)], check=False)


def test_mount_errors_exit_nonzero(tmp_path: Path) -> None:
    url = f"nfs://127.0.0.1:{peers.free_port()}/nowhere"  # nothing listens there
    res = _mount_cli(url, tmp_path)
    assert res.returncode == 1 and "ferry: error: cannot mount" in res.stderr, res.stderr
    assert not mounted(tmp_path)
    res = _mount_cli(url, tmp_path / "missing")
    assert res.returncode == 2 and "not a directory" in res.stderr, res.stderr
    res = _mount_cli(url, tmp_path, "--timeout", "0")
    assert res.returncode == 2 and "--timeout" in res.stderr, res.stderr

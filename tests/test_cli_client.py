"""The client commands of ``ferry`` (ls, cat, get, put, cp, stat, df, mkdir, rm, mv,
exports), run as real subprocesses against a Ferry server, and against NFS-Ganesha where
the server matters (get/put/cp in detail: test_cli_transfer.py)."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import peers
from helpers.cli import ENV, SERVERS, Server, error, ferry, ok, serving


@pytest.fixture
def tree(ferry_server: peers.FerryServer) -> Path:
    root = ferry_server.export
    (root / "d/e").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "d/b.bin").write_bytes(os.urandom(3000))
    (root / "d/e/c").write_bytes(b"")
    return root


def test_ls(ferry_server: peers.FerryServer, tree: Path) -> None:
    assert ok("ls", ferry_server.url).split() == ["a.txt", "d"]
    long = ok("ls", "-l", ferry_server.url).splitlines()
    assert long[0].startswith("-rw") and long[0].split()[4] == "6" and long[1].startswith("d")
    recursive = ok("ls", "-R", ferry_server.file_url("d"))
    assert recursive.splitlines() == [
        f"{tree}/d:", "b.bin", "e", "", f"{tree}/d/e:", "c",
    ]  # fmt: skip
    assert ok("ls", ferry_server.file_url("a.txt")).strip() == f"{tree}/a.txt"


def test_cat_and_stat(ferry_server: peers.FerryServer, tree: Path) -> None:
    res = ferry("cat", ferry_server.file_url("a.txt"), ferry_server.file_url("d/b.bin"))
    assert res.returncode == 0 and res.stdout == b"alpha\n" + (tree / "d/b.bin").read_bytes()
    out = ok("stat", ferry_server.file_url("d/b.bin"))
    assert "Size: 3000" in out and "Type: regular file" in out
    assert f"Inode: {os.stat(tree / 'd/b.bin').st_ino}" in out


def test_cp_both_ways_recursive(
    ferry_server: peers.FerryServer, tree: Path, tmp_path: Path
) -> None:
    big = tmp_path / "big.bin"
    sha = peers.write_random_file(big, 5 * (1 << 20) + 1)
    ok("cp", "--no-progress", str(big), ferry_server.file_url("up.bin"))
    assert peers.sha256_file(tree / "up.bin") == sha
    ok("cp", ferry_server.file_url("up.bin"), str(tmp_path / "down.bin"))
    assert peers.sha256_file(tmp_path / "down.bin") == sha
    ok("cp", "-r", ferry_server.file_url("d"), str(tmp_path / "dl"))
    assert (tmp_path / "dl/b.bin").read_bytes() == (tree / "d/b.bin").read_bytes()
    assert (tmp_path / "dl/e/c").exists()
    ok("cp", "-r", str(tmp_path / "dl"), ferry_server.url)  # into an existing directory
    assert (tree / "dl/e/c").exists()
    ok("cp", ferry_server.file_url("a.txt"), ferry_server.file_url("d/e"))  # server side
    assert (tree / "d/e/a.txt").read_bytes() == b"alpha\n"


def test_cp_progress_shows_bytes_and_rate(
    ferry_server: peers.FerryServer, tree: Path, tmp_path: Path
) -> None:
    peers.write_random_file(tree / "big.bin", 48 << 20)  # a few CHUNKs: a rate to show
    res = ferry("cp", "--progress", ferry_server.file_url("big.bin"), str(tmp_path / "x"))
    assert res.returncode == 0
    err = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", res.stderr.decode())
    assert "big.bin" in err and "48.0/48.0 MiB" in err and re.search(r"[\d.]+ [KMG]?i?B/s", err)


def test_mkdir_rm_mv(ferry_server: peers.FerryServer, tree: Path) -> None:
    url = ferry_server.file_url
    ok("mkdir", "-p", url("p/q/r"))
    assert (tree / "p/q/r").is_dir()
    ok("mkdir", "-p", url("p/q/r"))  # -p: no error if it exists
    assert "File exists" in error(1, "mkdir", url("p"))
    assert "No such file" in error(1, "mkdir", url("x/y"))
    ok("mv", url("a.txt"), url("p/q/renamed"))
    assert (tree / "p/q/renamed").read_bytes() == b"alpha\n"
    assert "Is a directory" in error(1, "rm", url("p"))
    ok("rm", url("p/q/renamed"))
    ok("rm", "-r", url("p"))
    assert not (tree / "p").exists()


def test_errors_are_one_line(ferry_server: peers.FerryServer, tree: Path) -> None:
    missing = ferry_server.file_url("missing")
    assert error(1, "cat", missing) == f"ferry: cannot read '{missing}': No such file or directory"
    assert error(1, "ls", missing) == f"ferry: cannot access '{missing}': No such file or directory"
    assert error(1, "stat", missing).startswith(f"ferry: cannot stat '{missing}': No such file")
    assert error(1, "rm", missing).startswith(f"ferry: cannot remove '{missing}': No such file")
    assert "bad host or port" in error(2, "ls", "nfs://127.0.0.1:x/y")
    port = peers.free_port()
    assert "refused" in error(1, "ls", f"nfs://127.0.0.1:{port}/export").lower()
    res = ferry("ls")  # argparse: usage, status 2
    assert res.returncode == 2 and b"Traceback" not in res.stderr


@pytest.mark.interop
def test_ls_cat_cp_against_ganesha(ganesha_server: peers.GaneshaServer, tmp_path: Path) -> None:
    g = ganesha_server
    (g.export / "dir").mkdir()
    (g.export / "dir/hello.txt").write_bytes(b"hi ganesha\n")
    assert ok("ls", g.file_url("dir")).split() == ["hello.txt"]
    assert ok("cat", g.file_url("dir/hello.txt")) == "hi ganesha\n"
    big = tmp_path / "big.bin"
    sha = peers.write_random_file(big, 3 * (1 << 20) + 5)
    ok("cp", str(big), g.file_url("dir/big.bin"))
    ok("cp", "-r", g.file_url("dir"), str(tmp_path / "back"))
    assert peers.sha256_file(tmp_path / "back/big.bin") == sha
    assert peers.sha256_file(g.export / "dir/big.bin") == sha


@pytest.mark.interop
def test_get_put_df_globs_against_ganesha(
    ganesha_server: peers.GaneshaServer, tmp_path: Path
) -> None:
    g = ganesha_server
    src = tmp_path / "src.bin"
    sha = peers.write_random_file(src, 5 * (1 << 20) + 3)
    ok("put", str(src), g.file_url("up.bin"))
    ok("put", str(src), g.file_url("up2.bin"))
    assert peers.sha256_file(g.export / "up.bin") == sha
    (tmp_path / "down").mkdir()
    ok("get", g.file_url("up*.bin"), str(tmp_path / "down"))
    assert [peers.sha256_file(p) for p in sorted((tmp_path / "down").iterdir())] == [sha, sha]
    ok("get", g.file_url("up.bin"), cwd=tmp_path)
    assert peers.sha256_file(tmp_path / "up.bin") == sha
    lines = ok("df", g.url).splitlines()
    name, blocks, used, avail, pct, files, ifree = lines[1].split()
    vfs = os.statvfs(g.export)
    assert name == f"127.0.0.1:{g.export}" and int(files) == vfs.f_files
    assert int(blocks) == -(-vfs.f_blocks * vfs.f_frsize // 1024) and pct.endswith("%")
    assert ok("df", "-h", g.url).splitlines()[0].split()[1] == "Size"
    missing = g.file_url("missing")
    assert error(1, "get", missing, str(tmp_path)) == (
        f"ferry: cannot stat '{missing}': No such file or directory"
    )
    ok("rm", g.file_url("up?.bin"))
    assert sorted(p.name for p in g.export.iterdir()) == ["up.bin"]


def test_errors_do_not_stop_the_other_operands(ferry_server: peers.FerryServer, tree: Path) -> None:
    url = ferry_server.file_url
    res = ferry("cat", url("nope"), url("a.txt"), url("d"))  # like coreutils: go on, exit 1
    assert res.returncode == 1 and res.stdout == b"alpha\n"
    assert res.stderr.decode().splitlines() == [
        f"ferry: cannot read '{url('nope')}': No such file or directory",
        f"ferry: cannot read '{url('d')}': Is a directory",
    ]
    res = ferry("ls", url("nope"), url("a.txt"))
    assert res.returncode == 1 and res.stdout.decode() == f"{tree}/a.txt\n"
    assert "File exists" in error(1, "mkdir", url("d"), url("new"))
    assert (tree / "new").is_dir()
    ok("rm", "-rf", url("nope"), url("new*"), url("new"))  # -f: missing is fine
    assert not (tree / "new").exists()


def test_globs(ferry_server: peers.FerryServer, tree: Path, tmp_path: Path) -> None:
    url = ferry_server.file_url
    (tree / "a2.txt").write_bytes(b"two\n")
    (tree / "d/x.log").write_bytes(b"log\n")
    assert ok("ls", url("*.txt")).split() == [f"{tree}/a.txt", f"{tree}/a2.txt"]
    assert ok("ls", url("a?.txt")).split() == [f"{tree}/a2.txt"]  # a glob ?, then the query
    short = f"nfs://127.0.0.1:{ferry_server.port}{tree}/[a]?.txt"  # no query at all
    assert ok("ls", short).split() == [f"{tree}/a2.txt"]
    assert ok("ls", url("d/*.log")).split() == [f"{tree}/d/x.log"]
    assert ok("cat", url("a*.txt")) == "alpha\ntwo\n"
    line = error(1, "ls", url("*.none"))
    assert line == f"ferry: cannot access '{url('*.none')}': No such file or directory"
    ok("get", url("*.txt"), str(tmp_path))
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["a.txt", "a2.txt"]
    (tmp_path / "cp").mkdir()
    ok("cp", url("d/*"), url("a.txt"), str(tmp_path / "cp"), "-r")
    assert sorted(p.name for p in (tmp_path / "cp").iterdir()) == ["a.txt", "b.bin", "e", "x.log"]
    assert error(1, "cp", url("*.txt"), str(tmp_path / "nodir")) == (
        f"ferry: target '{tmp_path}/nodir': No such file or directory"
    )
    ok("rm", url("a*.txt"), url("d/*.log"))
    assert sorted(p.name for p in tree.iterdir()) == ["d"]
    assert sorted(p.name for p in (tree / "d").iterdir()) == ["b.bin", "e"]


def test_get_and_put(ferry_server: peers.FerryServer, tree: Path, tmp_path: Path) -> None:
    url = ferry_server.file_url
    src = tmp_path / "src.bin"
    sha = peers.write_random_file(src, 3 * (1 << 20) + 7)
    ok("put", str(src), url("d/up.bin"))
    assert peers.sha256_file(tree / "d/up.bin") == sha
    ok("put", str(src), str(tree / "a.txt"), url("d/e"))  # several into a directory
    assert peers.sha256_file(tree / "d/e/src.bin") == sha and (tree / "d/e/a.txt").exists()
    (tmp_path / "cwd").mkdir()
    res = ferry("get", url("d/up.bin"), cwd=tmp_path / "cwd")  # LOCAL defaults to .
    assert res.returncode == 0 and res.stderr == b""
    assert peers.sha256_file(tmp_path / "cwd/up.bin") == sha
    ok("get", url("d/up.bin"), str(tmp_path / "named.bin"))
    assert peers.sha256_file(tmp_path / "named.bin") == sha
    ok("get", "-r", url("d"), str(tmp_path / "tree"))
    assert peers.sha256_file(tmp_path / "tree/e/src.bin") == sha
    assert "omitting directory" in error(1, "get", url("d"), str(tmp_path / "x"))
    ok("put", "-r", str(tmp_path / "tree"), url("copy"))
    assert peers.sha256_file(tree / "copy/e/src.bin") == sha
    assert "No such file" in error(1, "put", str(tmp_path / "absent"), url("x"))
    assert error(2, "get", str(src), str(tmp_path)).startswith("ferry: get: not an nfs:// URL")
    assert error(2, "put", str(src), str(tmp_path)).startswith("ferry: put: give LOCAL")


def test_df(ferry_server: peers.FerryServer, tree: Path) -> None:
    lines = ok("df", ferry_server.url).splitlines()
    assert lines[0].split() == ["Filesystem", "1K-blocks", "Used", "Available", "Use%",
                                "Files", "IFree"]  # fmt: skip
    name, blocks, used, avail, pct, files, ifree = lines[1].split()
    vfs = os.statvfs(tree)
    assert name == f"127.0.0.1:{tree}" and pct.endswith("%")
    assert int(blocks) == -(-vfs.f_blocks * vfs.f_frsize // 1024)
    assert abs(int(avail) - vfs.f_bavail * vfs.f_frsize // 1024) < 64 << 10  # others write
    assert int(files) == vfs.f_files and int(ifree) > 0 and int(used) >= 0
    human = ok("df", "-h", ferry_server.file_url("d")).splitlines()
    assert human[0].split()[1:4] == ["Size", "Used", "Avail"]
    assert all(re.fullmatch(r"[\d.]+[KMGTPE]?", c) for c in human[1].split()[1:4]), human
    assert "No such file" in error(1, "df", ferry_server.file_url("missing"))


def test_progress_only_on_a_terminal(
    ferry_server: peers.FerryServer, tree: Path, tmp_path: Path
) -> None:
    peers.write_random_file(tree / "big.bin", 24 << 20)
    for cmd in ("get", "cp"):  # piped (the default here): nothing but the data
        res = ferry(cmd, ferry_server.file_url("big.bin"), str(tmp_path / f"{cmd}.bin"))
        assert res.returncode == 0 and res.stdout == b"" and res.stderr == b""
    res = ferry("put", str(tmp_path / "get.bin"), ferry_server.file_url("back.bin"))
    assert res.returncode == 0 and res.stdout == b"" and res.stderr == b""
    leader, follower = pty.openpty()  # stderr on a terminal: a bar by default
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "ferry", "get", ferry_server.file_url("big.bin"),
             str(tmp_path / "tty.bin")],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower,
            env=ENV, timeout=120, check=False,
        )  # fmt: skip
        os.close(follower)
        follower = -1
        shown = b""
        for _ in range(10_000):  # bounded: the pty is drained once the writer is gone
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: no writer left
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    assert proc.returncode == 0 and proc.stdout == b""
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", shown.decode(errors="replace"))
    assert "big.bin" in text and "24.0/24.0 MiB" in text, text[-500:]


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A Ferry server, then NFS-Ganesha, exporting a small tree with symbolic links."""
    with serving(request.param, tmp_path / "srv") as s:
        (s.export / "d").mkdir()
        (s.export / "a.txt").write_bytes(b"alpha\n")
        (s.export / "lnk").symlink_to("a.txt")
        (s.export / "dlink").symlink_to("d")
        (s.export / "d/in.txt").write_bytes(b"in\n")
        yield s


def _fields(line: str) -> tuple[str, str]:
    """(mode, name) of an ``ls -l`` line."""
    cols = line.split(maxsplit=7)
    return cols[0], cols[7]


def test_ls_l_and_stat_show_a_link_itself(server: Server) -> None:
    """As ls -l and stat: the link and its target (``lnk -> a.txt``); -L follows."""
    url = server.file_url
    lines = ok("ls", "-l", url("")).splitlines()
    assert [_fields(ln) for ln in lines] == [
        ("-rw-r--r--", "a.txt"), ("drwxr-xr-x", "d"),
        ("lrwxrwxrwx", "dlink -> d"), ("lrwxrwxrwx", "lnk -> a.txt"),
    ]  # fmt: skip
    assert [_fields(ln)[0][0] for ln in ok("ls", "-lL", url("")).splitlines()] == list("-dd-")
    assert _fields(ok("ls", "-l", url("lnk")).strip())[1] == f"{server.export}/lnk -> a.txt"
    assert _fields(ok("ls", "-lL", url("lnk")).strip())[0] == "-rw-r--r--"
    assert ok("ls", url("dlink")).split() == ["in.txt"]  # without -l an operand is followed
    assert _fields(ok("ls", "-l", url("dlink")).strip())[1] == f"{server.export}/dlink -> d"
    out = ok("stat", url("lnk"))
    assert f"File: {url('lnk')} -> a.txt" in out and "Type: symbolic link" in out
    assert "Size: 5 " in out and "lrwxrwxrwx" in out
    out = ok("stat", "-L", url("lnk"))
    assert "Type: regular file" in out and "Size: 6 " in out
    assert f"Inode: {os.stat(server.export / 'a.txt').st_ino}" in out


def test_ls_r_does_not_enter_links_unless_l_and_never_loops(server: Server) -> None:
    (server.export / "d/up").symlink_to("..")
    listed = ok("ls", "-R", url := server.file_url("")).splitlines()
    assert [ln for ln in listed if ln.endswith(":")] == [f"{server.export}:", f"{server.export}/d:"]
    headers = [ln for ln in ok("ls", "-RL", url).splitlines() if ln.endswith(":")]
    assert headers == [f"{server.export}:", f"{server.export}/d:"]  # d/up and dlink: seen


def test_rm_r_refuses_an_export_root_before_removing_anything(server: Server) -> None:
    """GNU rm's --preserve-root for an export's root (however spelled); --no-preserve-root
    empties it (the export itself stays)."""
    before = sorted(p.name for p in server.export.iterdir())
    for spelling in ("", ".", "./"):
        root = server.file_url(spelling)
        assert error(1, "rm", "-r", root) == (
            f"ferry: it is dangerous to operate recursively on '{root}' (the root of an "
            "export): use --no-preserve-root to empty it"
        )
    assert sorted(p.name for p in server.export.iterdir()) == before
    base = server.url.split("?")[0].rsplit(str(server.export), 1)[0]
    query = "?" + server.url.split("?")[1]
    top = f"{base}/{query}"
    assert error(1, "rm", "-rf", top) == (
        f"ferry: cannot remove '{top}': it lies above the server's exports"
    )
    ok("rm", "-r", "--no-preserve-root", server.url)
    assert list(server.export.iterdir()) == [] and server.export.is_dir()


def test_rm_r_removes_links_not_what_they_point_to(server: Server) -> None:
    (server.export / "tree/sub").mkdir(parents=True)
    (server.export / "tree/sub/f").write_bytes(b"f")
    (server.export / "tree/to-d").symlink_to("../d")
    (server.export / "tree/to-a").symlink_to("../a.txt")
    ok("rm", "-r", server.file_url("tree"), server.file_url("dlink"))
    assert sorted(p.name for p in server.export.iterdir()) == ["a.txt", "d", "lnk"]
    assert (server.export / "d/in.txt").read_bytes() == b"in\n"


def test_rm_and_mkdir_take_urls_only(tmp_path: Path) -> None:
    (tmp_path / "keep").mkdir()
    for cmd in ("rm", "mkdir"):
        assert error(2, cmd, "-r" if cmd == "rm" else "-p", str(tmp_path / "keep")) == (
            f"ferry: {cmd}: not an nfs:// URL: '{tmp_path / 'keep'}'"
        )
    assert (tmp_path / "keep").is_dir()


def test_exports_lists_like_showmount_e(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "ferry.toml"
    config.write_text(
        f'[[export]]\npath = "{data}"\nname = "/data"\nclients = ["127.0.0.1", "10.0.0.0/8"]\n'
    )
    server = peers.FerryServer(
        tmp_path / "export", tmp_path / "state", tmp_path / "logs",
        extra_args=[*peers.FERRY_PEER_ARGS, "--config", str(config)],
    )  # fmt: skip
    with server:
        lines = ok("exports", f"nfs://127.0.0.1:{server.port}").splitlines()
    assert lines[0] == f"Export list for 127.0.0.1:{server.port}:"
    assert sorted(" ".join(ln.split()) for ln in lines[1:]) == sorted(
        ["/data 127.0.0.1/32,10.0.0.0/8", f"{server.export} (everyone)"]
    )


@pytest.mark.interop
def test_exports_of_ganesha(ganesha_server: peers.GaneshaServer) -> None:
    g = ganesha_server
    lines = ok("exports", g.url).splitlines()
    assert lines[0] == "Export list for 127.0.0.1:" and lines[1].split()[0] == str(g.export)


def test_a_wrong_path_is_one_line_naming_it_for_every_command(
    server: Server, tmp_path: Path
) -> None:
    """A missing file, a missing directory on the way, an export that does not exist: one
    line naming the URL as typed (no traceback), for each command."""
    host = server.url.split("?")[0].rsplit(str(server.export), 1)[0]
    query = "?" + server.url.split("?")[1]
    for bad in (server.file_url("missing"), server.file_url("no/such"), f"{host}/wrong{query}"):
        for args, verb in (
            (["ls"], "cannot access"), (["ls", "-l"], "cannot access"),
            (["stat"], "cannot stat"), (["cat"], "cannot read"), (["rm"], "cannot remove"),
            (["get"], "cannot stat"), (["cp"], "cannot stat"), (["df"], "cannot stat"),
        ):  # fmt: skip
            extra = [str(tmp_path)] if args[0] in ("get", "cp") else []
            line = error(1, *args, bad, *extra)
            assert line.startswith(f"ferry: {verb} '{bad}': "), line
        assert error(1, "mv", bad, server.file_url("x")).startswith(f"ferry: cannot stat '{bad}'")
    (tmp_path / "f").write_bytes(b"f")
    bad = server.file_url("no/such")
    assert error(1, "put", str(tmp_path / "f"), bad) == (
        f"ferry: cannot create regular file '{bad}': No such file or directory"
    )
    bad = f"{host}/wrong/f{query}"
    assert error(1, "put", str(tmp_path / "f"), bad) == (
        f"ferry: cannot stat '{bad}': No such export (the server exports: {server.export})"
    )

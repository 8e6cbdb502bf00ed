"""``ferry get``, ``put`` and ``cp`` as users of cp expect them, against a Ferry server and
NFS-Ganesha: destinations (a trailing slash, a missing parent), never a short file under
the final name (interrupted, server gone, disk full), ``-p``, and error messages that name
what the user typed."""

from __future__ import annotations

import os
import re
import resource
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.testing.proxy import LinkSpec, running
from helpers import peers
from helpers.cli import SERVERS, Server, error, ferry, ok, serving, start

TEMP = re.compile(r"^\.(?P<name>.+)\.ferry-[0-9a-f]+$")


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    with serving(request.param, tmp_path / "srv") as s:
        (s.export / "dir").mkdir()
        (s.export / "dir/a.txt").write_bytes(b"alpha\n")
        (s.export / "dir/b.txt").write_bytes(b"beta\n")
        yield s


def _url_via(server: Server, port: int, rel: str) -> str:
    """``rel`` reached with NFS through ``port`` (a proxy); MOUNT goes direct for Ganesha."""
    mount = server.mnt_port if isinstance(server, peers.GaneshaServer) else port
    return peers.libnfs_url(server.host, str(server.export), rel, port, mount)


# -- destinations ---------------------------------------------------------------------------


def test_trailing_slash_on_a_missing_destination_is_an_error(
    server: Server, tmp_path: Path
) -> None:
    """GNU cp: ``cp f nodir/`` is ENOTDIR, ``cp f g nodir/`` says the target is missing;
    nothing is created, on either side."""
    url, out = server.file_url, tmp_path / "local"
    out.mkdir()
    assert error(1, "get", url("dir/*.txt"), f"{out}/out1/") == (
        f"ferry: target '{out}/out1/': No such file or directory"
    )
    assert error(1, "get", url("dir/a.txt"), f"{out}/out2/") == (
        f"ferry: cannot create regular file '{out}/out2/': Not a directory"
    )
    assert error(1, "cp", url("dir/a.txt"), f"{out}/nodir/") == (
        f"ferry: cannot create regular file '{out}/nodir/': Not a directory"
    )
    (out / "file").write_bytes(b"x")
    assert error(1, "cp", url("dir/a.txt"), f"{out}/file/") == (
        f"ferry: cannot stat '{out}/file/': Not a directory"
    )
    assert sorted(p.name for p in out.iterdir()) == ["file"]
    src = out / "file"
    for cmd, source in (("put", str(src)), ("cp", url("dir/a.txt"))):
        assert error(1, cmd, source, url("nodir/")) == (
            f"ferry: cannot create regular file '{url('nodir/')}': Not a directory"
        )
    assert error(1, "put", str(src), str(src), url("nodir/")) == (
        f"ferry: target '{url('nodir/')}': No such file or directory"
    )
    assert sorted(p.name for p in server.export.iterdir()) == ["dir"]
    ok("get", "-r", url("dir"), f"{out}/newdir/")  # a directory: made, as cp -r does
    assert sorted(p.name for p in (out / "newdir").iterdir()) == ["a.txt", "b.txt"]
    ok("put", "-r", str(out / "newdir"), url("up/"))
    assert sorted(p.name for p in (server.export / "up").iterdir()) == ["a.txt", "b.txt"]


def test_a_missing_parent_directory_is_an_error(server: Server, tmp_path: Path) -> None:
    """As cp and scp (and ``ferry mkdir`` without -p): put, cp and get never make the
    destination's missing parents."""
    url, src = server.file_url, tmp_path / "src.txt"
    src.write_bytes(b"source\n")
    (tmp_path / "tree/sub").mkdir(parents=True)
    for cmd, source in (("put", str(src)), ("cp", url("dir/a.txt")), ("cp", str(src))):
        assert error(1, cmd, source, url("no/such/x")) == (
            f"ferry: cannot create regular file '{url('no/such/x')}': No such file or directory"
        )
    assert error(1, "put", "-r", str(tmp_path / "tree"), url("no/tree")) == (
        f"ferry: cannot create directory '{url('no/tree')}': No such file or directory"
    )
    assert error(1, "cp", url("dir/a.txt"), url("dir/a.txt/x")).endswith(": Not a directory")
    assert sorted(p.name for p in server.export.iterdir()) == ["dir"]
    for cmd in ("get", "cp"):
        assert error(1, cmd, url("dir/a.txt"), f"{tmp_path}/no/x") == (
            f"ferry: cannot create regular file '{tmp_path}/no/x': No such file or directory"
        )
    assert error(1, "get", "-r", url("dir"), f"{tmp_path}/no/x") == (
        f"ferry: cannot create directory '{tmp_path}/no/x': No such file or directory"
    )
    assert not (tmp_path / "no").exists()
    ok("mkdir", "-p", url("no/such"))  # the documented way: make the directory first
    ok("put", str(src), url("no/such/x"))
    assert (server.export / "no/such/x").read_bytes() == b"source\n"


# -- never a short file under the final name ------------------------------------------------


def _wait_for_bytes(where: Path, proc: subprocess.Popen[bytes], at_least: int) -> None:
    """Until some file in ``where`` holds ``at_least`` bytes (the transfer is under way)."""

    def grown() -> bool:
        return any(p.stat().st_size >= at_least for p in where.iterdir() if p.is_file())

    assert peers.wait_until(lambda: grown() or proc.poll() is not None, 60), "no progress"
    assert proc.poll() is None, proc.communicate()


def _left_in(where: Path) -> list[str]:
    return sorted(p.name for p in where.iterdir())


BIG = 24 << 20
HUGE = 64 << 20
SLOW = LinkSpec(rate=80e6)  # 24 MiB take ~2.5 s: time to interrupt them


def test_interrupted_get_and_put_leave_the_old_file_or_nothing(
    server: Server, tmp_path: Path
) -> None:
    """SIGINT (Ctrl-C) mid-get, SIGTERM mid-put: the destination keeps its old contents
    (or stays absent), and the temporary file is gone."""
    sha = peers.write_random_file(server.export / "big.bin", BIG)
    local = tmp_path / "local"
    local.mkdir()
    (local / "big.bin").write_bytes(b"old local contents\n")
    peers.write_random_file(tmp_path / "up.bin", BIG, seed=1)
    with running(SLOW, (server.host, server.port)) as proxy:
        proc = start("get", _url_via(server, proxy.port, "big.bin"), str(local))
        _wait_for_bytes(local, proc, 1 << 20)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and b"Traceback" not in err, err
        assert (local / "big.bin").read_bytes() == b"old local contents\n"
        assert _left_in(local) == ["big.bin"]
        (server.export / "sub").mkdir()
        proc = start("put", str(tmp_path / "up.bin"), _url_via(server, proxy.port, "sub/up.bin"))
        _wait_for_bytes(server.export / "sub", proc, 1 << 20)
        proc.send_signal(signal.SIGTERM)  # as kill does: cleaned up the same way
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM and err == b"", err
        assert _left_in(server.export / "sub") == []
    ok("get", server.file_url("big.bin"), str(local))  # uninterrupted: replaced whole
    assert peers.sha256_file(local / "big.bin") == sha and _left_in(local) == ["big.bin"]


def _kill(server: Server) -> None:
    """SIGKILL: the server vanishes between two replies (a SIGTERM would let it finish)."""
    if isinstance(server, peers.FerryServer):
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)
        server.proc.wait(10)
        server.proc = None
    else:
        assert server.pid is not None
        os.kill(server.pid, signal.SIGKILL)
        pid, server.pid = server.pid, None
        assert peers.wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 10)


GIVE_UP = ("--soft", "--timeout", "1", "--retrans", "1")  # seconds, not the default 300


def test_server_killed_mid_transfer_leaves_no_short_file(server: Server, tmp_path: Path) -> None:
    """The server is killed mid-get, then mid-put: an error, and no file under the final
    name (a put may leave its hidden temporary on the server it could not reach any more).
    Larger than what the server, the proxy and the sockets can hold between them. ``--soft``
    with short timeouts: by default the CLI would wait 300 s for the server to come back."""
    peers.write_random_file(server.export / "big.bin", HUGE)
    local = tmp_path / "local"
    local.mkdir()
    peers.write_random_file(tmp_path / "up.bin", HUGE, seed=1)
    with running(SLOW, (server.host, server.port)) as proxy:
        proc = start(
            "get", *GIVE_UP, _url_via(server, proxy.port, "big.bin"), str(local / "got.bin")
        )
        _wait_for_bytes(local, proc, 1 << 20)
    _kill(server)  # after the link: a proxy left up would accept reconnects for a dead server
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(b"ferry: cannot copy 'nfs://"), err
    assert _left_in(local) == []
    server.start()
    with running(SLOW, (server.host, server.port)) as proxy:
        proc = start(
            "put", *GIVE_UP, str(tmp_path / "up.bin"), _url_via(server, proxy.port, "dir/up.bin")
        )
        _wait_for_bytes(server.export / "dir", proc, 1 << 20)
    _kill(server)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"ferry: cannot copy '{tmp_path}/up.bin' to 'nfs://".encode()), err
    left = [n for n in _left_in(server.export / "dir") if n not in ("a.txt", "b.txt")]
    assert all((m := TEMP.match(n)) and m["name"] == "up.bin" for n in left), left


@pytest.mark.parametrize(
    ("policy", "limit"),
    [(("--soft", "--timeout", "10", "--retrans", "1"), 5.0), (("--retry-for", "3"), 3.0 + 6)],
    ids=["soft", "hard"],
)
def test_a_proxy_left_up_in_front_of_a_killed_server_is_not_reconnected_to(
    server: Server, tmp_path: Path, policy: tuple[str, ...], limit: float
) -> None:
    """The server is killed mid-get while ``ferry proxy`` in front of it stays up, so each
    new connection is accepted, then reset. That is a failed attempt, not a reconnect:
    ``--soft`` fails after its 2 attempts, long before a call's 10 s timeout; hard waits
    ``--retry-for`` 3 s, without a storm of connections. No file is left."""
    peers.write_random_file(server.export / "big.bin", HUGE)
    local = tmp_path / "local"
    local.mkdir()
    with running(SLOW, (server.host, server.port)) as proxy:
        url = _url_via(server, proxy.port, "big.bin")
        proc = start("get", "--no-progress", *policy, url, str(local / "got.bin"))
        _wait_for_bytes(local, proc, 1 << 20)
        before = proxy.stats.connections
        _kill(server)
        killed = time.monotonic()
        _, err = proc.communicate(timeout=120)
        took, tries = time.monotonic() - killed, proxy.stats.connections - before
    assert proc.returncode == 1 and b"Traceback" not in err, err
    assert err.splitlines()[-1].startswith(b"ferry: cannot copy 'nfs://"), err
    assert took < limit, f"gave up {took:.1f} s after the kill: {err!r}"
    assert tries <= 12, f"{tries} connections in {took:.1f} s"
    assert _left_in(local) == []


def test_a_failed_local_write_removes_the_temporary(server: Server, tmp_path: Path) -> None:
    """A write error on the local side (EFBIG here, as ENOSPC would be): one line, and
    neither the file nor its temporary stays."""
    peers.write_random_file(server.export / "big.bin", 8 << 20)

    def small_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    proc = start("get", server.file_url("big.bin"), str(tmp_path), preexec_fn=small_files)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.decode() == (
        f"ferry: cannot copy '{server.file_url('big.bin')}' to '{tmp_path}/big.bin': "
        "File too large\n"
    )
    assert _left_in(tmp_path) == ["srv"]


# -- modes and times --------------------------------------------------------------------------

ATIME, MTIME = 1_500_000_000_123_456_789, 1_600_000_000_987_654_321


def _times(p: Path) -> tuple[int, int]:
    st = os.stat(p, follow_symlinks=False)
    return st.st_atime_ns, st.st_mtime_ns


def test_p_preserves_modes_and_times(server: Server, tmp_path: Path) -> None:
    url, exp = server.file_url, server.export
    (exp / "dir/a.txt").chmod(0o4751)  # set-id bits are not copied (owners are not)
    os.utime(exp / "dir/a.txt", ns=(ATIME, MTIME))
    (exp / "dir").chmod(0o750)
    os.utime(exp / "dir", ns=(ATIME, MTIME))
    ok("get", "-p", url("dir/a.txt"), str(tmp_path / "a.txt"))
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o751
    assert _times(tmp_path / "a.txt") == (ATIME, MTIME)
    os.utime(exp / "dir/a.txt", ns=(ATIME, MTIME))  # reading it moved its atime (relatime)
    ok("get", "-r", "-p", url("dir"), str(tmp_path / "tree"))
    assert stat.S_IMODE((tmp_path / "tree").stat().st_mode) == 0o750
    assert _times(tmp_path / "tree") == (ATIME, MTIME)  # set after its contents
    assert _times(tmp_path / "tree/a.txt") == (ATIME, MTIME)
    ok("put", "-p", "-r", str(tmp_path / "tree"), url("up"))
    assert stat.S_IMODE((exp / "up").stat().st_mode) == 0o750
    assert _times(exp / "up") == (ATIME, MTIME) and _times(exp / "up/a.txt") == (ATIME, MTIME)
    assert stat.S_IMODE((exp / "up/a.txt").stat().st_mode) == 0o751
    os.utime(exp / "dir/a.txt", ns=(ATIME, MTIME))  # reading it moved its atime (relatime)
    ok("cp", "-p", url("dir/a.txt"), url("copy.txt"))  # server to server
    assert stat.S_IMODE((exp / "copy.txt").stat().st_mode) == 0o751
    assert _times(exp / "copy.txt") == (ATIME, MTIME)


def test_without_p_new_files_take_the_source_mode_and_old_ones_keep_theirs(
    server: Server, tmp_path: Path
) -> None:
    """cp's rule without -p: a new file gets the source's permissions less the umask, an
    existing one keeps its own; times are now."""
    url, exp = server.file_url, server.export
    (exp / "dir/a.txt").chmod(0o777)
    os.utime(exp / "dir/a.txt", ns=(ATIME, MTIME))
    old = os.umask(0o027)
    try:
        ok("get", url("dir/a.txt"), str(tmp_path / "new.txt"))
        (tmp_path / "old.txt").write_bytes(b"")
        (tmp_path / "old.txt").chmod(0o600)
        ok("get", url("dir/a.txt"), str(tmp_path / "old.txt"))
        ok("put", str(tmp_path / "new.txt"), url("up.txt"))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.txt").stat().st_mode) == 0o750
    assert stat.S_IMODE((tmp_path / "old.txt").stat().st_mode) == 0o600
    assert (tmp_path / "old.txt").read_bytes() == b"alpha\n"
    assert stat.S_IMODE((exp / "up.txt").stat().st_mode) == 0o750
    assert _times(tmp_path / "new.txt")[1] > MTIME
    assert [n for n in _left_in(tmp_path) if TEMP.match(n)] == []


# -- symbolic links and what messages name ----------------------------------------------------


def test_r_copies_symlinks_as_links(server: Server, tmp_path: Path) -> None:
    """cp -r copies a tree's symbolic links as links (never following one out of it)."""
    exp = server.export
    (exp / "dir/lnk").symlink_to("a.txt")
    (exp / "dir/up").symlink_to("..")  # followed, this would copy forever
    ok("get", "-r", server.file_url("dir"), str(tmp_path / "got"))
    assert os.readlink(tmp_path / "got/lnk") == "a.txt" and os.readlink(tmp_path / "got/up") == ".."
    ok("put", "-r", str(tmp_path / "got"), server.file_url("back"))
    assert os.readlink(exp / "back/lnk") == "a.txt" and os.readlink(exp / "back/up") == ".."
    ok("get", server.file_url("dir/lnk"), str(tmp_path / "deref.txt"))  # an operand: followed
    assert (tmp_path / "deref.txt").read_bytes() == b"alpha\n"


def test_errors_name_what_the_user_typed(server: Server, tmp_path: Path) -> None:
    """Failures inside a recursive copy or a glob name the URL (its query kept) or the
    local path as given, never the server's own path."""
    url = server.file_url
    (server.export / "up/tree/b.bin").mkdir(parents=True)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree/b.bin").write_bytes(b"b")
    res = ferry("put", "-r", str(tmp_path / "tree"), url("up"))
    assert res.returncode == 1 and res.stderr.decode() == (
        f"ferry: cannot overwrite directory '{url('up/tree/b.bin')}' with non-directory\n"
    )
    (tmp_path / "dl/a.txt").mkdir(parents=True)
    res = ferry("get", url("dir/*.txt"), "dl", cwd=tmp_path)
    assert res.returncode == 1 and res.stderr.decode() == (
        "ferry: cannot overwrite directory 'dl/a.txt' with non-directory\n"
    )
    assert (tmp_path / "dl/b.txt").read_bytes() == b"beta\n"
    assert error(1, "cat", url("di*")) == f"ferry: cannot read '{url('dir')}': Is a directory"


# -- progress -----------------------------------------------------------------------------------


def test_progress_is_in_binary_units_and_names_the_file_at_once(
    server: Server, tmp_path: Path
) -> None:
    peers.write_random_file(server.export / "big.bin", 48 << 20)
    res = ferry("get", "--progress", server.file_url("big.bin"), str(tmp_path / "x"))
    assert res.returncode == 0, res.stderr
    frames = [
        re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", f).strip()
        for f in re.split(r"\r|\n|\x1b\[2K", res.stderr.decode())
    ]
    frames = [f for f in frames if f]
    assert frames and frames[0].startswith("big.bin "), frames[:3]
    assert "48.0/48.0 MiB" in frames[-1] and re.search(r"[\d.]+ [KMG]iB/s", frames[-1]), frames

"""The Python API as users of ``os`` and ``open`` expect it (issue 17): ``stat``/``lstat``
give ``os.stat_result``, ``async with ferry.connect_async(url)``, one clear
``FileNotFoundError`` for a wrong path, and ``open``'s default mode.

Against a Ferry server in-process on loopback and against NFS-Ganesha (``interop``).
"""

from __future__ import annotations

import errno
import os
import stat
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from client_proxy import url_for

import ferry
from ferry.client import AsyncNfsClient, Client
from helpers.aio import run
from helpers.peers import GaneshaServer

FIELDS = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
          "st_mtime", "st_ctime", "st_mtime_ns", "st_ctime_ns")  # fmt: skip


@pytest.fixture(params=["ferry", pytest.param("ganesha", marks=pytest.mark.interop)])
def served(request: pytest.FixtureRequest) -> tuple[str, Path]:
    """The URL of an export and the exported directory, for Ferry and for NFS-Ganesha."""
    if request.param == "ganesha":
        ganesha: GaneshaServer = request.getfixturevalue("ganesha_server")
        return ganesha.url, ganesha.export
    root = request.getfixturevalue("export_root")
    return url_for(request.getfixturevalue("ferry_srv").port, root), root


@pytest.fixture
def client(served: tuple[str, Path]) -> Iterator[Client]:
    with ferry.connect(served[0]) as c:
        yield c


def _tree(root: Path) -> None:
    (root / "d").mkdir()
    (root / "d" / "f").write_bytes(b"x" * 10000)
    (root / "ln").symlink_to("d/f")
    os.mknod(root / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))


def _same(remote: os.stat_result, local: os.stat_result) -> None:
    got = {f: getattr(remote, f) for f in FIELDS}
    assert got == {f: getattr(local, f) for f in FIELDS}


# -- stat and lstat -------------------------------------------------------------------------


def test_stat_is_an_os_stat_result(client: Client, served: tuple[str, Path]) -> None:
    root = served[1]
    _tree(root)
    st = client.stat("d/f")
    assert isinstance(st, os.stat_result)
    _same(st, os.stat(root / "d/f"))
    assert st.st_atime_ns == os.stat(root / "d/f").st_atime_ns
    assert st[stat.ST_SIZE] == 10000 and stat.S_ISREG(st.st_mode)
    assert stat.filemode(st.st_mode) == stat.filemode(os.stat(root / "d/f").st_mode)
    assert stat.S_ISDIR(client.stat("d").st_mode) and stat.S_ISDIR(client.stat("").st_mode)
    # paths are relative to the URL's directory; "/" is that directory too
    assert client.stat("/d/f") == st and client.stat("/") == client.stat("")
    # stat follows a symlink, lstat does not (as os.stat and os.lstat)
    _same(client.stat("ln"), os.stat(root / "ln"))
    _same(client.lstat("ln"), os.lstat(root / "ln"))
    assert stat.S_ISLNK(client.lstat("ln").st_mode) and client.lstat("ln").st_size == 3
    assert stat.S_ISLNK(client.stat("ln", follow_symlinks=False).st_mode)
    dev = client.stat("dev")
    assert stat.S_ISCHR(dev.st_mode) and dev.st_rdev == os.makedev(1, 3)
    assert (os.major(dev.st_rdev), os.minor(dev.st_rdev)) == (1, 3)


def test_async_stat_and_lstat(served: tuple[str, Path]) -> None:
    url, root = served
    _tree(root)

    async def body() -> None:
        async with ferry.connect_async(url) as c:
            assert isinstance(c, AsyncNfsClient)
            st, lst = await c.stat("ln"), await c.lstat("ln")
            assert isinstance(st, os.stat_result) and isinstance(lst, os.stat_result)
            _same(st, os.stat(root / "ln"))
            _same(lst, os.lstat(root / "ln"))

    run(body())


# -- async with ------------------------------------------------------------------------------


def test_connect_async_is_awaitable_and_a_context_manager(served: tuple[str, Path]) -> None:
    url, root = served
    (root / "a").write_bytes(b"abc")

    async def body() -> AsyncNfsClient:
        async with ferry.connect_async(url) as c:
            assert await c.read_file("a") == b"abc"
            async with c.open("b", "wb") as f:  # open works the same way
                await f.write(b"written")
            async with c.open("b") as f:
                assert await f.read() == b"written"
        assert not c.rpc.connected  # closed on the way out
        c2 = await ferry.connect_async(url)  # or awaited, closed by the caller
        try:
            assert set(await c2.listdir()) == {"a", "b"}
            f = await c2.open("a")
            assert await f.read() == b"abc"
            await f.close()
        finally:
            await c2.close()
        return c

    run(body())
    assert (root / "b").read_bytes() == b"written"


def test_connect_async_closes_on_error(served: tuple[str, Path]) -> None:
    url, _ = served
    seen: list[AsyncNfsClient] = []

    async def body() -> None:
        async with ferry.connect_async(url) as c:
            seen.append(c)
            raise KeyError("user code failed")

    with pytest.raises(KeyError):
        run(body())
    assert not seen[0].rpc.connected


# -- wrong paths -----------------------------------------------------------------------------


def _short_and_clear(exc: BaseException, path: str, frames: int = 12) -> None:
    """One FileNotFoundError naming ``path``, no chained exception, a short traceback
    (before issue 17: an NfsFailure chained to it, 50-62 lines for a script)."""
    assert isinstance(exc, FileNotFoundError)
    assert exc.errno == errno.ENOENT and exc.filename == path
    assert exc.strerror == os.strerror(errno.ENOENT)
    assert str(exc) == f"[Errno 2] No such file or directory: {path!r}"
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    text = "".join(traceback.format_exception(exc))
    assert "direct cause" not in text and "During handling" not in text, text
    assert len(traceback.extract_tb(exc.__traceback__)) <= frames, text


def _raised(call: Callable[[], object]) -> BaseException:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 (the test inspects what came out)
        return exc
    raise AssertionError("no exception")


@pytest.mark.parametrize(
    "what",
    ["stat", "lstat", "open", "open_w", "read_file", "write_file", "listdir", "remove", "chmod"],
)
def test_wrong_path_is_one_clear_file_not_found(client: Client, what: str) -> None:
    path = "no/such/file" if what in ("open_w", "write_file") else "missing"
    calls: dict[str, Callable[[], object]] = {
        "stat": lambda: client.stat(path),
        "lstat": lambda: client.lstat(path),
        "open": lambda: client.open(path),
        "open_w": lambda: client.open(path, "w"),
        "read_file": lambda: client.read_file(path),
        "write_file": lambda: client.write_file(path, b"x"),
        "listdir": lambda: client.listdir(path),
        "remove": lambda: client.remove(path),
        "chmod": lambda: client.chmod(path, 0o600),
    }
    _short_and_clear(_raised(calls[what]), path)


def test_wrong_path_async(served: tuple[str, Path]) -> None:
    async def body() -> None:
        async with ferry.connect_async(served[0]) as c:
            for call in (c.stat("missing"), c.open("missing"), c.read_file("missing")):
                try:
                    await call
                except FileNotFoundError as exc:
                    _short_and_clear(exc, "missing")
                else:
                    raise AssertionError("no exception")

    run(body())


# -- open's default mode ---------------------------------------------------------------------


def test_open_defaults_to_binary_like_fsspec(client: Client, served: tuple[str, Path]) -> None:
    (served[1] / "t.txt").write_bytes(b"line 1\r\nline 2\n")
    with client.open("t.txt") as f:
        assert f.read() == b"line 1\r\nline 2\n" and f.mode == "rb"
    with client.open("t.txt", "r") as f:  # "r" is text, as with the built-in open
        assert f.read() == "line 1\nline 2\n"
    with client.open("u.txt", "w") as f:
        f.write("é\n")
    assert (served[1] / "u.txt").read_bytes() == "é\n".encode()


def test_async_open_refuses_text_modes(served: tuple[str, Path]) -> None:
    """The asyncio client's files are binary: a text mode is refused, not given bytes."""
    (served[1] / "t.txt").write_bytes(b"text\n")

    async def body() -> None:
        async with ferry.connect_async(served[0]) as c:
            for mode in ("r", "rt", "w", "a+"):
                with pytest.raises(ValueError, match="binary"):
                    c.open("t.txt", mode)
            async with c.open("t.txt") as f:
                assert await f.read() == b"text\n"

    run(body())
    assert (served[1] / "t.txt").read_bytes() == b"text\n"  # "w" truncated nothing

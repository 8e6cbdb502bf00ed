"""Non-idempotent calls sent twice: the reply to the first send is lost (the proxy drops
it), the client resends the same call, and the server, its duplicate request cache gone
as after a restart (``drc_entries=0``), carries it out a second time. The second answer
(NOENT to a REMOVE, EXIST to a MKDIR...) must not be reported: the first send did the
job. Also checked: such an answer is still an error when the name holds something else
(someone else's file), and exclusive creates are safe when resent (EXCLUSIVE with a
verifier), against Ferry and NFS-Ganesha.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from client_proxy import Proxy, through_proxy
from rawclient import RunningServer, local_config, serve_in_thread

import ferry
from ferry.backends.base import SetAttr
from ferry.client import AsyncNfsClient, RpcOptions
from ferry.errors import NfsError
from ferry.nfs3.const import CreateMode, Ftype3, NfsProc, Nfsstat3
from helpers.aio import run
from helpers.outage import SERVERS, kill, restart, serving

FAST = RpcOptions(timeout=0.3, max_tries=4)
Body = Callable[[AsyncNfsClient, Proxy], Awaitable[None]]


@pytest.fixture
def forgetful(tmp_path: Path) -> Iterator[RunningServer]:
    """A Ferry server without a duplicate request cache: each resend is carried out again,
    as by a server restarted between the two sends."""
    root = tmp_path / "export"
    root.mkdir()
    config = dataclasses.replace(
        local_config(root, tmp_path / "state", root_squash=False), drc_entries=0
    )
    with serve_in_thread(config) as srv:
        yield srv


def _lose_first_reply(proxy: Proxy, proc: NfsProc) -> None:
    proxy.drop_reply = lambda xid, p: p == proc


def _twice(srv: RunningServer, proc: NfsProc, body: Body) -> AsyncNfsClient:
    """Run ``body`` with the reply to the first ``proc`` call lost; the client it ran on."""
    seen: list[AsyncNfsClient] = []

    async def wrapped(c: AsyncNfsClient, proxy: Proxy) -> None:
        seen.append(c)
        _lose_first_reply(proxy, proc)
        await body(c, proxy)
        assert proxy.dropped, f"no {proc.name} reply was dropped"
        counts = proxy.xid_counts()
        assert all(counts[lost] == 2 for lost in proxy.dropped), "a call was not sent twice"

    run(through_proxy(srv.port, srv.root, wrapped, options=FAST))
    return seen[0]


def test_resent_remove_and_rmdir_answered_noent(forgetful: RunningServer) -> None:
    root = forgetful.root
    assert root is not None
    (root / "f").write_bytes(b"x")
    (root / "d").mkdir()
    c = _twice(forgetful, NfsProc.REMOVE, lambda c, _: c.remove("f"))
    assert not (root / "f").exists() and c.rpc.stats.resent_errors == 1
    c = _twice(forgetful, NfsProc.RMDIR, lambda c, _: c.rmdir("d"))
    assert not (root / "d").exists() and c.rpc.stats.resent_errors == 1


def test_resent_rename_answered_noent(forgetful: RunningServer) -> None:
    root = forgetful.root
    assert root is not None
    (root / "a").write_bytes(b"data")
    c = _twice(forgetful, NfsProc.RENAME, lambda c, _: c.rename("a", "b"))
    assert not (root / "a").exists() and (root / "b").read_bytes() == b"data"
    assert c.rpc.stats.resent_errors == 1


def test_resent_creations_answered_exist(forgetful: RunningServer) -> None:
    root = forgetful.root
    assert root is not None
    (root / "f").write_bytes(b"x")

    async def make_all(c: AsyncNfsClient, proxy: Proxy) -> None:
        await c.mkdir("d")
        for proc, make in [
            (NfsProc.SYMLINK, lambda: c.symlink("f", "s")),
            (NfsProc.LINK, lambda: c.link("f", "h")),
            (NfsProc.MKNOD, lambda: c.nfs.mknod(c.root, "p", Ftype3.FIFO, SetAttr(mode=0o644))),
        ]:
            _lose_first_reply(proxy, proc)
            await make()

    c = _twice(forgetful, NfsProc.MKDIR, make_all)
    assert (root / "d").is_dir() and os.readlink(root / "s") == "f"
    assert (root / "h").stat().st_ino == (root / "f").stat().st_ino
    assert Path(root / "p").is_fifo()
    assert c.rpc.stats.resent_errors == 4


def test_resent_creation_finding_something_else_is_still_an_error(
    forgetful: RunningServer,
) -> None:
    """A name already taken by a file before the first send: EXIST both times, and the
    check finds no directory there, so the error stands."""
    root = forgetful.root
    assert root is not None
    (root / "d").write_bytes(b"someone else's")

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        with pytest.raises(FileExistsError):
            await c.mkdir("d")
        assert c.rpc.stats.resent_errors == 0

    _twice(forgetful, NfsProc.MKDIR, body)
    assert (root / "d").read_bytes() == b"someone else's"


def test_resent_exclusive_open(forgetful: RunningServer) -> None:
    """``open(path, "xb")`` is EXCLUSIVE with a verifier: the resend finds its own
    verifier and succeeds (a GUARDED create would answer EXIST)."""
    root = forgetful.root
    assert root is not None

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        f = await c.open("x", "xb", 0o640)
        await f.write(b"mine")
        await f.close()
        with pytest.raises(FileExistsError):
            await c.open("x", "xb")

    _twice(forgetful, NfsProc.CREATE, body)
    assert (root / "x").read_bytes() == b"mine"
    assert (root / "x").stat().st_mode & 0o777 == 0o640


@pytest.mark.parametrize("kind", SERVERS)
def test_exclusive_create_retransmitted(kind: str, tmp_path: Path) -> None:
    """The same EXCLUSIVE CREATE twice (same verifier) succeeds twice, one with another
    verifier fails EXIST; ``create_exclusive`` leaves the mode asked for and times of
    now (the verifier is no longer in them)."""
    with serving(kind, tmp_path) as server:
        with ferry.connect(server.file_url("")) as c:
            verf = os.urandom(8)
            first = c.nfs.create(c.root, "e", None, CreateMode.EXCLUSIVE, verf)
            again = c.nfs.create(c.root, "e", None, CreateMode.EXCLUSIVE, verf)
            assert first.obj == again.obj
            with pytest.raises(NfsError) as info:
                c.nfs.create(c.root, "e", None, CreateMode.EXCLUSIVE, os.urandom(8))
            assert info.value.status == Nfsstat3.EXIST
            res = c.nfs.create_exclusive(c.root, "x", SetAttr(mode=0o600))
            assert res.obj is not None and res.obj_attributes is not None
            assert res.obj_attributes.mode & 0o777 == 0o600
            with pytest.raises(FileExistsError):
                c.open("x", "xb")
        st = (server.export / "x").stat()
        assert st.st_mode & 0o777 == 0o600 and abs(st.st_mtime - st.st_ctime) < 60


def test_a_call_first_sent_after_a_reconnect_is_not_a_resend(tmp_path: Path) -> None:
    """REMOVE of a missing file, asked while the server is down: it goes out once, when
    the server is back, so its NOENT is the answer (not mistaken for a resend's)."""
    with serving("ferry", tmp_path) as server, ferry.connect(server.file_url("")) as c:
        c.listdir("")
        kill(server)
        outcome: list[BaseException | None] = []
        worker = threading.Thread(target=lambda: outcome.append(_raised(c.remove, "gone")))
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive(), f"the call did not wait for the server: {outcome}"
        restart(server)
        worker.join(60)
        assert isinstance(outcome[0], FileNotFoundError), outcome
        assert c.stats.resent_errors == 0


def _raised(func: Callable[..., object], *args: object) -> BaseException | None:
    try:
        func(*args)
    except Exception as exc:  # noqa: BLE001  # what the test looks at
        return exc
    return None

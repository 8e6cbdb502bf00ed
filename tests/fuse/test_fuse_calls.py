"""What ``ferry mount`` asks the server, counted by a proxy between the two: calls whose
answer the mount already holds are not sent (each one a round trip per file of a
``tar -x``)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_proxy import Proxy, url_for
from fusetest import check_stopped, mount_or_fail, serving

from ferry.nfs3.const import NfsProc


@pytest.fixture
def proxy_mount(tmp_path: Path) -> Iterator[tuple[Path, Proxy]]:
    """A mount of a Ferry server through a proxy that records the calls it forwards."""
    with serving("ferry", tmp_path) as server:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        proxy = Proxy(server.port)
        port = asyncio.run_coroutine_threadsafe(proxy.start(), loop).result(10)
        try:
            m = mount_or_fail(server, tmp_path / "mnt", url=url_for(port, server.export))
            try:
                yield m.path, proxy
            finally:
                check_stopped(m, m.stop())
        finally:
            asyncio.run_coroutine_threadsafe(proxy.close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def _calls_of(proxy: Proxy, since: int) -> list[NfsProc]:
    return [NfsProc(proc) for _, proc in proxy.calls[since:]]


def test_create_and_setattr_take_attributes_from_their_replies(
    proxy_mount: tuple[Path, Proxy],
) -> None:
    """``open(O_CREAT | O_EXCL)`` is EXCLUSIVE CREATE then SETATTR of the mode, with the
    attributes of the SETATTR reply for the kernel and for the open; ``utime`` is one
    SETATTR, its reply's attributes for the kernel: no GETATTR after either (the
    mount's own; the kernel asks for what it dropped before)."""
    mnt, proxy = proxy_mount
    os.listdir(mnt)
    start = len(proxy.calls)
    fd = os.open(mnt / "f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    try:
        calls = _calls_of(proxy, start)
        assert NfsProc.CREATE in calls, calls
        after_create = calls[calls.index(NfsProc.CREATE) :]
        assert after_create == [NfsProc.CREATE, NfsProc.SETATTR], calls
        os.write(fd, b"data")
    finally:
        os.close(fd)
    start = len(proxy.calls)
    os.utime(mnt / "f", ns=(1_700_000_000 * 10**9, 1_700_000_000 * 10**9))
    calls = _calls_of(proxy, start)  # the kernel may first GETATTR what the close dropped
    assert NfsProc.SETATTR in calls, calls
    assert calls[calls.index(NfsProc.SETATTR) :] == [NfsProc.SETATTR], calls
    st = os.stat(mnt / "f")
    assert (st.st_mode & 0o777, st.st_size, st.st_mtime_ns) == (0o640, 4, 1_700_000_000 * 10**9)


def test_the_directory_changed_is_not_asked_for_again(proxy_mount: tuple[Path, Proxy]) -> None:
    """Creating files one after another, then removing them: the kernel asks for the
    attributes of the directory it changed before the next change; the mount answers from
    the reply to its own change (its wcc after), so the server sees no GETATTR between
    the changes, and the directory's attributes are right."""
    mnt, proxy = proxy_mount
    (mnt / "d").mkdir()
    os.listdir(mnt / "d")
    start = len(proxy.calls)
    for i in range(5):
        fd = os.open(mnt / "d" / f"f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
    calls = _calls_of(proxy, start)
    assert calls.count(NfsProc.CREATE) == 5 and NfsProc.GETATTR not in calls, calls
    start = len(proxy.calls)
    for i in range(5):
        os.unlink(mnt / "d" / f"f{i}")
    calls = _calls_of(proxy, start)
    assert calls.count(NfsProc.REMOVE) == 5 and NfsProc.GETATTR not in calls, calls
    st, there = os.stat(mnt / "d"), os.stat(proxy_mount[0].parent / "export" / "d")
    assert (st.st_nlink, st.st_mtime_ns, st.st_size) == (
        there.st_nlink,
        there.st_mtime_ns,
        there.st_size,
    )


def test_a_listing_ends_at_the_servers_eof(proxy_mount: tuple[Path, Proxy]) -> None:
    """``ls`` of a small directory: one READDIRPLUS. The kernel asks once more at the end
    (getdents until it returns nothing): the mount answers from the eof it was given. An
    empty directory likewise, and it lists what was made in it since."""
    mnt, proxy = proxy_mount
    (mnt / "d").mkdir()
    (mnt / "e").mkdir()
    for i in range(3):
        (mnt / "d" / f"f{i}").write_bytes(b"")
    for name, want in (("d", ["f0", "f1", "f2"]), ("e", [])):
        start = len(proxy.calls)
        assert sorted(os.listdir(mnt / name)) == want
        assert _calls_of(proxy, start).count(NfsProc.READDIRPLUS) == 1, _calls_of(proxy, start)
    (mnt / "e" / "new").write_bytes(b"")
    assert os.listdir(mnt / "e") == ["new"]

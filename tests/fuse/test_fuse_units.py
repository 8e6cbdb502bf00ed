"""The mount's pieces that need no mount: the mount table, abandoning stuck handlers, the
callers' groups, the wait for the FUSE device, readdir's paging over a fake server."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import cast

import pyfuse3.asyncio
import pytest

from ferry.client.paths import AsyncNfsClient
from ferry.errors import NfsError
from ferry.fuse.mount import enable_asyncio, is_mounted, mount_device
from ferry.fuse.ops import InodeTable, NfsOperations, Running, groups_of
from ferry.fuse.options import MountOptions
from ferry.nfs3 import types as t
from ferry.nfs3.const import Ftype3, Nfsstat3
from ferry.vocab import Attr

MOUNTINFO = (
    "22 1 254:0 / / rw - ext4 /dev/vda rw\n"
    "42 22 0:39 / /mnt/with\\040space rw - fuse.ferry h:/x rw\n"
    "43 42 0:40 / /mnt/with\\040space rw - fuse.ferry h:/y rw\n"  # mounted on top
)


def test_mount_table_is_read_with_escapes_and_topmost_mount(tmp_path: Path) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    assert mount_device("/mnt/with space", str(table)) == "0:40"
    assert mount_device("/", str(table)) == "254:0"
    assert mount_device("/mnt/with\\040space", str(table)) is None
    assert mount_device("/elsewhere", str(table)) is None
    assert is_mounted("/mnt/with space", str(table))
    assert not is_mounted("/elsewhere", str(table))
    assert is_mounted("/elsewhere", str(tmp_path / "missing"))  # unknown: never abandon


def test_running_abandons_only_old_enough_handlers() -> None:
    async def scenario() -> tuple[int, int, bool, bool]:
        running = Running()
        blocked = asyncio.Event()
        old = asyncio.create_task(blocked.wait())
        new = asyncio.create_task(blocked.wait())
        await asyncio.sleep(0)
        running.start(old)
        await asyncio.sleep(0.05)  # old has run at least this long, new not at all
        running.start(new)
        first = running.abandon(older_than=0.05)
        again = running.abandon(older_than=0.05)  # already abandoned: not twice
        await asyncio.sleep(0)
        result = (first, again, old.cancelled(), new.cancelled())
        assert running.finish(old) and not running.finish(new)
        new.cancel()
        return result

    assert asyncio.run(scenario()) == (1, 0, True, False)


def test_groups_of_a_process_come_from_proc() -> None:
    assert sorted(groups_of(os.getpid())) == sorted(os.getgroups())
    assert groups_of(0) == ()  # FUSE's pid for a caller outside our pid namespace
    assert groups_of(1 << 30) == ()  # no such process


def test_device_wait_takes_a_waiting_request_at_once_else_waits_for_one() -> None:
    """pyfuse3's wait for the FUSE device (here a pipe): a request already there is taken
    without registering with the event loop; otherwise the wait ends when one comes."""
    enable_asyncio()
    wait_readable = pyfuse3.asyncio.wait_readable  # type: ignore[attr-defined]
    r, w = os.pipe()

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        os.write(w, b"x")
        registered = loop.add_reader
        loop.add_reader = None  # type: ignore[assignment,method-assign]  # must not be needed
        await asyncio.wait_for(wait_readable(r), 1)
        loop.add_reader = registered  # type: ignore[method-assign]
        os.read(r, 1)
        waiter = asyncio.create_task(wait_readable(r))
        await asyncio.sleep(0.05)
        assert not waiter.done()  # nothing to read: it waits
        os.write(w, b"y")
        await asyncio.wait_for(waiter, 1)

    try:
        asyncio.run(scenario())
    finally:
        os.close(r)
        os.close(w)


def test_inode_table_knows_where_directories_sit_through_renames_and_forgets() -> None:
    table = InodeTable(b"root-fh", 777)
    assert table.parent(1) == 1  # the root's ".." is itself
    table.remember(10, b"a")
    table.placed(10, 1, b"a")
    table.remember(11, b"b")
    table.placed(11, 10, b"b")
    assert table.parent(11) == 10 and table.parent(10) == 1
    table.moved(10, b"b", 1, b"b2")  # a/b -> b2
    assert table.parent(11) == 1
    table.remember(12, b"c")
    table.placed(12, 1, b"c")
    table.moved(1, b"b2", 1, b"c")  # b2 replaces the (empty) directory c
    assert table.parent(11) == 1
    table.moved(1, b"c", 10, b"x")  # the one now at c is b's: it moves into a
    assert table.parent(11) == 10
    table.forget(11, 1)
    assert table.parent(11) == 11  # forgotten: the kernel no longer names it
    table.moved(10, b"x", 1, b"y")  # nothing known there any more: no effect
    assert table.parent(10) == 1


class _PagedDirectory:
    """A server's READDIRPLUS pages of ``size`` entries, ``page`` at a time, with the
    calls made (cookie asked after) and, once ``changed``, BAD_COOKIE for the old
    verifier."""

    def __init__(self, size: int, page: int) -> None:
        self.names = [b"f%05d" % i for i in range(size)]
        self.page, self.asked, self.verf = page, list[int](), b"v1v1v1v1"
        self.root, self.wsize = b"root-fh", 1 << 20
        self.nfs = self

    async def readdirplus(self, fh: bytes, cookie: int, verf: bytes) -> t.ReaddirRes:
        self.asked.append(cookie)
        await asyncio.sleep(0)
        if verf not in (t.COOKIEVERF_ZERO, self.verf):
            raise NfsError(Nfsstat3.BAD_COOKIE)
        start = cookie  # cookie k: after entry k-1 (so cookies are 1...size)
        chunk = self.names[start : start + self.page]
        entries = [
            t.Entry(100 + start + i, n, start + i + 1, _attr(100 + start + i), b"fh-" + n)
            for i, n in enumerate(chunk)
        ]
        return t.ReaddirRes(None, self.verf, entries, start + len(chunk) >= len(self.names), True)


def _attr(fileid: int) -> Attr:
    return Attr(Ftype3.REG, 0o644, 1, 0, 0, 0, 0, (0, 0), fileid, 0, 0, 0)


def _kernel_listing(
    ops: NfsOperations, handle: int, budget: int, monkeypatch: pytest.MonkeyPatch, start: int = 0
) -> list[tuple[bytes, int]]:
    """What getdents gets: readdir calls from the last offset given, each taking ``budget``
    entries (the kernel's buffer), until one gives none."""
    given: list[tuple[bytes, int]] = []
    room = [0]

    def reply(token: object, name: bytes, entry: object, offset: int) -> bool:
        if room[0] == 0:
            return False
        room[0] -= 1
        given.append((name, offset))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)

    async def run() -> None:
        offset = start
        while True:
            room[0], before = budget, len(given)
            await ops.readdir(handle, offset, cast(pyfuse3.ReaddirToken, None))
            if len(given) == before:
                return
            offset = given[-1][1]

    asyncio.run(run())
    return given


def test_readdir_gives_each_entry_once_asking_each_page_once_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Pages of 64 entries, a kernel buffer of 100: every entry once at consecutive offsets,
    and each page asked for once (the next one while a page is given; a readdir that goes
    on where the last stopped takes the rest of its page), none after the last; a seek
    back lists the rest again, and a changed directory (BAD_COOKIE) is read on without
    the verifier."""
    server = _PagedDirectory(1000, 64)
    ops = NfsOperations(cast(AsyncNfsClient, server), _attr(1), MountOptions())

    async def opendir() -> int:
        return await ops.opendir(pyfuse3.ROOT_INODE, cast(pyfuse3.RequestContext, None))

    handle = asyncio.run(opendir())
    given = _kernel_listing(ops, handle, 100, monkeypatch)
    assert [n for n, _ in given] == [b".", b"..", *server.names]
    assert [o for _, o in given] == list(range(1, 1003))
    assert server.asked == list(range(0, 1000, 64))  # each page once, in order
    server.asked.clear()
    again = _kernel_listing(ops, handle, 100, monkeypatch, start=502)  # seekdir back
    assert [n for n, _ in again] == server.names[500:]
    assert server.asked[0] == 500 and len(server.asked) == len(set(server.asked))
    server.asked.clear()
    server.verf = b"v2v2v2v2"  # changed: the verifier the mount holds is refused
    again = _kernel_listing(ops, handle, 100, monkeypatch, start=302)
    assert [n for n, _ in again] == server.names[300:]
    asyncio.run(ops.releasedir(handle))


def test_releasedir_drops_the_page_asked_for_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    """A directory closed after one buffer: the page asked for ahead is cancelled."""
    server = _PagedDirectory(300, 64)
    ops = NfsOperations(cast(AsyncNfsClient, server), _attr(1), MountOptions())

    async def scenario() -> bool:
        handle = await ops.opendir(pyfuse3.ROOT_INODE, cast(pyfuse3.RequestContext, None))
        monkeypatch.setattr(pyfuse3, "readdir_reply", lambda *a: len(server.asked) < 2)
        await ops.readdir(handle, 0, cast(pyfuse3.ReaddirToken, None))
        ahead = ops._dirs[handle].ahead
        assert ahead is not None and ahead[0] == 64
        await ops.releasedir(handle)
        await asyncio.sleep(0)
        return ahead[1].cancelled() or ahead[1].done()

    assert asyncio.run(scenario())

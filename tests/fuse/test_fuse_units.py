"""The mount's pieces that need no mount: the mount table, abandoning stuck handlers, the
callers' groups, the wait for the FUSE device."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pyfuse3.asyncio

from ferry.fuse.mount import enable_asyncio, is_mounted, mount_device
from ferry.fuse.ops import InodeTable, Running, groups_of

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

"""The asyncio engine against a Ferry server in-process, directly and through the proxy."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from client_proxy import Proxy, through_proxy, url_for
from rawclient import RunningServer

from ferry.backends.base import SetAttr
from ferry.client import AsyncNfsClient, RpcOptions
from ferry.client.cache import AttrCache
from ferry.errors import NfsError
from ferry.nfs3.const import Ftype3, NfsProc, Nfsstat3
from ferry.vocab import Attr
from helpers.aio import run, sha

FAST = RpcOptions(timeout=0.5, max_tries=4)


def test_procedures_and_paths(ferry_srv: RunningServer, export_root: Path) -> None:
    (export_root / "d").mkdir()
    (export_root / "d" / "f.txt").write_bytes(b"hello")
    (export_root / "ln").symlink_to("d/f.txt")

    async def body() -> None:
        async with await AsyncNfsClient.connect(url_for(ferry_srv.port, export_root)) as c:
            assert c.rsize == c.wsize == 1 << 20
            names = await c.listdir()
            assert all(isinstance(n, str) for n in names)
            assert len(names) == len(set(names))  # each entry once, over every READDIR page
            assert sorted(names) == sorted(os.listdir(export_root)) == ["d", "ln"]
            assert stat.S_ISLNK((await c.lstat("ln")).st_mode)
            assert (await c.stat("ln")).st_size == 5
            assert stat.S_ISLNK((await c.stat("ln", follow_symlinks=False)).st_mode)
            assert await c.read_file("ln") == b"hello"
            with pytest.raises(FileNotFoundError) as info:
                await c.stat("d/missing")
            assert info.value.filename == "d/missing"
            fh, _ = await c.resolve("d")
            with pytest.raises(NfsError) as err:
                await c.nfs.lookup(fh, "nope")
            assert err.value.status == Nfsstat3.NOENT
            made = await c.nfs.mkdir(fh, "sub")
            assert made.obj is not None
            await c.nfs.rename(fh, "sub", fh, "sub2")
            await c.nfs.rmdir(fh, "sub2")
            assert (await c.nfs.fsstat(c.root)).tbytes > 0
            assert (await c.nfs.pathconf(c.root)).name_max >= 255

    run(body())


def test_url_naming_a_file_mounts_its_directory(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    (export_root / "f").write_bytes(b"x")

    async def body() -> None:
        c = await AsyncNfsClient.connect(url_for(ferry_srv.port, export_root) + "/f")
        try:
            assert c.export == str(export_root) and c.subpath == "f"
            assert await c.read_file(c.subpath) == b"x"
        finally:
            await c.close()

    run(body())


@pytest.mark.parametrize("size", [0, 1, (1 << 20) + 1, 64 << 20])
def test_read_write_sizes(ferry_srv: RunningServer, export_root: Path, size: int) -> None:
    data = os.urandom(size)

    async def body() -> None:
        url = url_for(ferry_srv.port, export_root)
        async with await AsyncNfsClient.connect(url, options=RpcOptions(timeout=2)) as c:
            await c.write_file("f.bin", data)
            assert sha((export_root / "f.bin").read_bytes()) == sha(data)
            assert sha(await c.read_file("f.bin")) == sha(data)

    run(body())


def test_window_is_honoured(ferry_srv: RunningServer, export_root: Path) -> None:
    data = os.urandom((1 << 20) + 1)
    (export_root / "f").write_bytes(data)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        assert await c.read_file("f") == data
        await c.write_file("g", data)
        assert 2 <= proxy.max_in_flight <= 4  # pipelined, never beyond the window
        assert c.rpc.stats.max_in_flight <= 4

    run(
        through_proxy(
            ferry_srv.port,
            export_root,
            body,
            options=RpcOptions(window=4),
            rsize=65536,
            wsize=65536,
        )
    )
    assert (export_root / "g").read_bytes() == data


def test_out_of_order_replies(ferry_srv: RunningServer, export_root: Path) -> None:
    data = os.urandom(2 << 20)
    (export_root / "f").write_bytes(data)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        proxy.reorder = True
        assert sha(await c.read_file("f")) == sha(data)
        await c.write_file("g", data)
        assert proxy.reordered > 0

    run(
        through_proxy(
            ferry_srv.port,
            export_root,
            body,
            options=RpcOptions(window=8),
            rsize=65536,
            wsize=65536,
        )
    )
    assert sha((export_root / "g").read_bytes()) == sha(data)


def test_lost_reply_resends_only_that_call(ferry_srv: RunningServer, export_root: Path) -> None:
    data = os.urandom(1 << 20)
    (export_root / "f").write_bytes(data)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        reads = iter(range(100))
        proxy.drop_reply = lambda xid, proc: proc == NfsProc.READ and next(reads) == 5
        assert await c.read_file("f") == data
        (lost,) = proxy.dropped
        counts = proxy.xid_counts()
        assert counts[lost] == 2  # the server saw the lost call twice, same xid
        assert [x for x, n in counts.items() if n > 1] == [lost]  # and nothing else twice
        assert c.rpc.stats.retransmissions == 1
        assert c.rpc.stats.placed_bytes == len(data)  # the resent reply landed in place too

    run(through_proxy(ferry_srv.port, export_root, body, options=FAST, rsize=65536))


def test_reconnect_mid_transfer(ferry_srv: RunningServer, export_root: Path) -> None:
    data = os.urandom(4 << 20)
    (export_root / "f").write_bytes(data)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        proxy.cut_after_replies = proxy.replies + 20
        assert sha(await c.read_file("f")) == sha(data)
        proxy.cut_after_replies = proxy.replies + 20
        await c.write_file("g", data)
        assert proxy.cuts == 2
        assert c.rpc.stats.reconnects == 2

    run(through_proxy(ferry_srv.port, export_root, body, options=FAST, rsize=65536, wsize=65536))
    assert sha((export_root / "g").read_bytes()) == sha(data)


def test_commit_verifier_change_resends_data(ferry_srv: RunningServer, export_root: Path) -> None:
    data = os.urandom(512 * 1024)

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        proxy.flip_commit_verf = True
        await c.write_file("g", data)
        writes = [x for x, p in proxy.calls if p == NfsProc.WRITE]
        commits = [x for x, p in proxy.calls if p == NfsProc.COMMIT]
        assert len(writes) == 2 * 8 and len(commits) == 2  # every range written again

    run(through_proxy(ferry_srv.port, export_root, body, wsize=65536))
    assert (export_root / "g").read_bytes() == data


def test_create_exclusive_takes_the_attributes_from_the_setattr_reply(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    """EXCLUSIVE CREATE then SETATTR, and no GETATTR: the SETATTR reply's wcc after holds
    the attributes (a call saved per file ``tar -x`` makes through ``ferry mount``)."""

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        fh, _ = await c.resolve("")
        proxy.calls.clear()
        res = await c.nfs.create_exclusive(fh, "x", SetAttr(mode=0o640))
        assert [proc for _, proc in proxy.calls] == [NfsProc.CREATE, NfsProc.SETATTR]
        assert res.obj_attributes is not None and res.obj_attributes.mode & 0o777 == 0o640
        assert res.obj_attributes.size == 0 and res.obj_attributes.type == Ftype3.REG

    run(through_proxy(ferry_srv.port, export_root, body, options=FAST))
    assert (export_root / "x").stat().st_mode & 0o777 == 0o640


def test_changes_in_a_directory_keep_its_attributes_from_the_replies(
    ferry_srv: RunningServer, export_root: Path
) -> None:
    """Files written, then removed, one after another in one directory: each call needs
    the directory's handle and attributes, which the previous change's reply carried
    (wcc after), so no LOOKUP or GETATTR of it goes between the changes; and the cached
    attributes are the directory's own."""
    (export_root / "d").mkdir()

    async def body(c: AsyncNfsClient, proxy: Proxy) -> None:
        await c.listdir("d")
        proxy.calls.clear()
        for i in range(5):
            await c.write_file(f"d/f{i}", b"x")
        for i in range(5):
            await c.remove(f"d/f{i}")
        procs = [NfsProc(p) for _, p in proxy.calls]
        assert NfsProc.LOOKUP not in procs and NfsProc.GETATTR not in procs, procs
        assert procs.count(NfsProc.CREATE) == procs.count(NfsProc.REMOVE) == 5, procs
        st, there = await c.stat("d"), (export_root / "d").stat()
        assert (st.st_nlink, st.st_mtime_ns, st.st_size) == (
            there.st_nlink,
            there.st_mtime_ns,
            there.st_size,
        )

    run(through_proxy(ferry_srv.port, export_root, body, options=FAST))


def test_a_reply_to_an_older_change_does_not_overwrite_a_newer() -> None:
    """Two changes to one directory in flight: the first reply's attributes are older
    than the directory once the second change began, so they are not kept."""
    cache = AttrCache(5.0)
    older, newer = (Attr(Ftype3.DIR, m, 2, 0, 0, 4096, 4096, (0, 0), 7, 1, 2, 3) for m in (1, 2))
    first = cache.changing(b"dir", b"a")
    second = cache.changing(b"dir", b"b")
    cache.changed(b"dir", first, older)
    assert cache.attr(b"dir") is None
    cache.changed(b"dir", second, newer)
    assert cache.attr(b"dir") is newer
    cache.forget_dir(b"dir", b"c")  # any other change (rename, link...) counts too
    cache.changed(b"dir", second, newer)
    assert cache.attr(b"dir") is None

"""MOUNT v3 and the built-in portmapper against the real server on loopback, plus the
``ferry serve --portmapper`` command line answering portmap on its own port."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rawclient import (
    RawClient,
    RunningServer,
    mount_status,
    nfs_getattr,
    nfs_lookup,
    parse_reply,
    serve_in_thread,
)

from ferry.errors import NfsError
from ferry.nfs3.const import MOUNT_PROGRAM, NFS_PROGRAM, Mountstat3, Nfsstat3
from ferry.nfs3.exports import export_id_for
from ferry.nfs3.filehandle import HandleCodec
from ferry.rpc.portmap import IPPROTO_TCP, IPPROTO_UDP, PMAP_PROGRAM
from ferry.server.config import ExportConfig, ServerConfig
from ferry.xdr import Packer, Unpacker
from helpers import peers

MNT, DUMP, UMNT, UMNTALL, EXPORT = 1, 2, 3, 4, 5
KEY = bytes(range(32))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    export = tmp_path / "export"
    (export / "sub" / "deeper").mkdir(parents=True)
    (export / "file.txt").write_bytes(b"data")
    os.symlink("sub", export / "link-to-sub")
    return export


@pytest.fixture
def server(tree: Path, tmp_path: Path) -> Iterator[RunningServer]:
    other = tmp_path / "other"
    other.mkdir()
    config = ServerConfig(
        exports=[
            ExportConfig(path=str(tree)),
            ExportConfig(path=str(other), clients=("10.9.9.9/32", "192.168.0.0/16")),
        ],
        state_dir=tmp_path / "state",
        handle_key=KEY,
    )
    with serve_in_thread(config) as srv:
        yield srv


def mount_call(c: RawClient, proc: int, path: str | None = None) -> Unpacker:
    p = Packer()
    if path is not None:
        p.pack_string(path)
    return c.call(MOUNT_PROGRAM, 3, proc, p.get_buffer()).ok()


def dump(c: RawClient) -> list[tuple[str, str]]:
    u = mount_call(c, DUMP)
    out = []
    for _ in range(1000):
        if not u.unpack_bool():
            break
        out.append((u.unpack_bytes().decode(), u.unpack_bytes().decode()))
    assert u.remaining() == 0
    return out


# -- MNT ----------------------------------------------------------------------------------


def test_null(client: RawClient) -> None:
    reply = client.call(MOUNT_PROGRAM, 3, 0)
    assert (reply.reply_stat, reply.stat) == (0, 0)
    assert reply.body.remaining() == 0


def test_mnt_export_path_returns_root_handle_and_auth_flavors(
    client: RawClient, tree: Path
) -> None:
    u = mount_call(client, MNT, str(tree))
    assert u.unpack_uint() == Mountstat3.OK
    fh = bytes(u.unpack_opaque(64))
    flavors = u.unpack_array(u.unpack_uint, 10)
    assert u.remaining() == 0
    assert 1 in flavors  # AUTH_SYS
    status, attr = nfs_getattr(client, fh)
    assert status == Nfsstat3.OK and attr is not None
    assert attr.type == 2
    assert attr.fileid == os.stat(tree).st_ino


@pytest.mark.parametrize("spelling", ["{}/", "{}//", "/{}"])
def test_mnt_export_path_spellings(client: RawClient, tree: Path, spelling: str) -> None:
    assert mount_status(client, spelling.format(tree)) == mount_status(client, str(tree))


def test_mnt_subdirectory(client: RawClient, tree: Path) -> None:
    root = client.mount(str(tree))
    fh = client.mount(f"{tree}/sub/deeper")
    status, sub, _ = nfs_lookup(client, root, "sub")
    assert status == Nfsstat3.OK and sub is not None
    status, deeper, attr = nfs_lookup(client, sub, "deeper")
    assert status == Nfsstat3.OK
    assert fh == deeper
    assert attr is not None and attr.fileid == os.stat(tree / "sub" / "deeper").st_ino


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("missing", Mountstat3.NOENT),
        ("sub/missing/deeper", Mountstat3.NOENT),
        ("file.txt", Mountstat3.NOTDIR),
        ("link-to-sub", Mountstat3.NOTDIR),  # never resolved through a symlink
        ("sub/../file.txt", Mountstat3.NOENT),
    ],
)
def test_mnt_errors(client: RawClient, tree: Path, rel: str, expected: Mountstat3) -> None:
    status, fh = mount_status(client, f"{tree}/{rel}")
    assert status == expected
    assert fh is None


def test_mnt_of_a_path_that_is_no_export(client: RawClient, tree: Path) -> None:
    """Never another export instead, ``/`` included (it once meant the first export)."""
    for path in (f"{tree}x", str(tree.parent), "/nonexistent/export", "/", "", "//"):
        assert mount_status(client, path) == (Mountstat3.NOENT, None), path


@pytest.mark.interop
def test_ganesha_refuses_a_path_that_is_no_export(ganesha_server: peers.GaneshaServer) -> None:
    """The reference refuses the same paths, with MNT3ERR_ACCES (as Linux's mountd does for
    a path it does not export); Ferry's MNT3ERR_NOENT says why."""
    c = RawClient(ganesha_server.mnt_port)
    try:
        tree = ganesha_server.export
        assert mount_status(c, str(tree))[0] == Mountstat3.OK
        for path in (f"{tree}x", str(tree.parent), "/nonexistent/export", "/"):
            assert mount_status(c, path) == (Mountstat3.ACCES, None), path
    finally:
        c.close()


def test_refused_mnt_is_logged_with_client_and_reason(
    client: RawClient, tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ferry.mount")
    port = client.sock.getsockname()[1]
    mount_status(client, "/wrong\nforged line")
    mount_status(client, str(tmp_path / "other"))
    mount_status(client, f"{tree}/missing")
    mount_status(client, str(tree))  # accepted: not logged
    lines = [r.getMessage() for r in caplog.records if r.name == "ferry.mount"]
    assert lines == [
        f"refused MNT '/wrong\\nforged line' from 127.0.0.1:{port}: NOENT, not exported",
        f"refused MNT '{tmp_path}/other' from 127.0.0.1:{port}: ACCES, client not allowed on "
        f"export {tmp_path}/other",
        f"refused MNT '{tree}/missing' from 127.0.0.1:{port}: NOENT, looking up 'missing' "
        f"in {tree}",
    ], lines
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "ferry.mount")


def test_ferry_serve_logs_a_refused_mnt(ferry_server: peers.FerryServer) -> None:
    """What an administrator sees: one line on the server's standard error."""
    c = RawClient(ferry_server.port)
    try:
        assert mount_status(c, "/wrong") == (Mountstat3.NOENT, None)
        port = c.sock.getsockname()[1]
    finally:
        c.close()
    line = f"refused MNT '/wrong' from 127.0.0.1:{port}: NOENT, not exported"
    assert peers.wait_until(lambda: line in ferry_server.stderr_text(), 10), (
        ferry_server.stderr_text()
    )


def test_mnt_from_client_not_in_clients_is_acces(client: RawClient, tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert mount_status(client, str(other)) == (Mountstat3.ACCES, None)
    assert mount_status(client, f"{other}/") == (Mountstat3.ACCES, None)
    assert dump(client) == []  # a refused mount is not recorded
    # A handle for that export (forged with the configured key) is refused as well.
    fh = HandleCodec(KEY).encode(export_id_for(str(other)), os.stat(other).st_ino)
    assert nfs_getattr(client, fh)[0] == Nfsstat3.ACCES


def test_mnt_while_the_store_says_try_later(
    client: RawClient, server: RunningServer, tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend answering JUKEBOX (its store is out): the export's root is still mounted
    (its handle was learnt at start), and a MNT below it gets no reply, so the client
    sends it again, rather than MNT3ERR_SERVERFAULT; once the store answers, it works."""
    backend = server.app.exports[0].backend
    want_root = client.mount(str(tree))

    def later(*args: object) -> object:
        raise NfsError(Nfsstat3.JUKEBOX, "store out")

    monkeypatch.setattr(backend, "getattr", later)
    monkeypatch.setattr(backend, "lookup", later)
    assert client.mount(str(tree)) == want_root
    client.sock.settimeout(1.0)
    client.send_record(mount_bytes(client, f"{tree}/sub"))
    with pytest.raises(TimeoutError):
        client.recv_record()  # dropped: no reply at all
    monkeypatch.undo()
    client.sock.settimeout(10.0)
    client.send_record(mount_bytes(client, f"{tree}/sub", again=True))  # the same xid
    assert parse_reply(client.recv_record()).ok().unpack_uint() == Mountstat3.OK


def mount_bytes(c: RawClient, path: str, again: bool = False) -> bytes:
    """A MNT call record; ``again``: a retransmission (the last call's xid)."""
    p = Packer()
    p.pack_string(path)
    if again:
        c.xid -= 1
    return c.call_bytes(MOUNT_PROGRAM, 3, MNT, p.get_buffer())


# -- DUMP, UMNT, UMNTALL, EXPORT ------------------------------------------------------------


def test_dump_after_mnt_and_umnt(client: RawClient, tree: Path) -> None:
    assert dump(client) == []
    client.mount(str(tree))
    client.mount(f"{tree}/sub")
    assert sorted(dump(client)) == sorted([("127.0.0.1", str(tree)), ("127.0.0.1", f"{tree}/sub")])
    u = mount_call(client, UMNT, str(tree))
    assert u.remaining() == 0  # UMNT returns nothing
    assert dump(client) == [("127.0.0.1", f"{tree}/sub")]
    # Unmounting something never mounted is harmless.
    mount_call(client, UMNT, "/never/mounted")
    assert dump(client) == [("127.0.0.1", f"{tree}/sub")]


def test_failed_mnt_is_not_in_dump(client: RawClient, tree: Path) -> None:
    assert mount_status(client, f"{tree}/missing")[0] == Mountstat3.NOENT
    assert dump(client) == []


def test_umntall(client: RawClient, tree: Path) -> None:
    client.mount(str(tree))
    client.mount(f"{tree}/sub")
    client.mount(f"{tree}/sub/deeper")
    assert len(dump(client)) == 3
    u = mount_call(client, UMNTALL)
    assert u.remaining() == 0
    assert dump(client) == []


def test_mount_table_is_per_host_not_per_connection(server: RunningServer, tree: Path) -> None:
    a, b = server.client(), server.client()
    try:
        a.mount(str(tree))
        assert dump(b) == [("127.0.0.1", str(tree))]
        mount_call(b, UMNTALL)  # same host
        assert dump(a) == []
    finally:
        a.close()
        b.close()


def test_export_lists_exports_and_client_networks(
    client: RawClient, tree: Path, tmp_path: Path
) -> None:
    u = mount_call(client, EXPORT)
    exports: dict[str, list[str]] = {}
    for _ in range(100):
        if not u.unpack_bool():
            break
        path = u.unpack_bytes().decode()
        groups = []
        for _ in range(100):
            if not u.unpack_bool():
                break
            groups.append(u.unpack_bytes().decode())
        exports[path] = groups
    assert u.remaining() == 0
    assert exports == {str(tree): [], str(tmp_path / "other"): ["10.9.9.9/32", "192.168.0.0/16"]}


# -- portmap over the NFS port ------------------------------------------------------------


def getport(c: RawClient, prog: int, vers: int, prot: int = IPPROTO_TCP) -> int:
    p = Packer()
    for v in (prog, vers, prot, 0):
        p.pack_uint(v)
    u = c.call(PMAP_PROGRAM, 2, 3, p.get_buffer()).ok()
    port = u.unpack_uint()
    assert u.remaining() == 0
    return port


def pmap_dump(c: RawClient) -> set[tuple[int, int, int, int]]:
    u = c.call(PMAP_PROGRAM, 2, 4).ok()
    out = set()
    for _ in range(100):
        if not u.unpack_bool():
            break
        out.add((u.unpack_uint(), u.unpack_uint(), u.unpack_uint(), u.unpack_uint()))
    assert u.remaining() == 0
    return out


def test_portmap_null(client: RawClient) -> None:
    reply = client.call(PMAP_PROGRAM, 2, 0)
    assert (reply.reply_stat, reply.stat) == (0, 0)
    assert reply.body.remaining() == 0


def test_portmap_getport(client: RawClient, server: RunningServer) -> None:
    assert getport(client, NFS_PROGRAM, 3) == server.port
    assert getport(client, MOUNT_PROGRAM, 3) == server.port
    assert getport(client, NFS_PROGRAM, 3, IPPROTO_UDP) == 0  # TCP only
    assert getport(client, NFS_PROGRAM, 4) == 0
    assert getport(client, MOUNT_PROGRAM, 1) == 0
    assert getport(client, 100021, 4) == 0  # NLM: not served
    assert getport(client, 123456, 1) == 0


def test_portmap_dump(client: RawClient, server: RunningServer) -> None:
    entries = pmap_dump(client)
    assert (NFS_PROGRAM, 3, IPPROTO_TCP, server.port) in entries
    assert (MOUNT_PROGRAM, 3, IPPROTO_TCP, server.port) in entries
    assert {e[0] for e in entries} <= {NFS_PROGRAM, MOUNT_PROGRAM, PMAP_PROGRAM}


def test_portmap_set_is_refused(client: RawClient) -> None:
    p = Packer()
    for v in (123456, 1, IPPROTO_TCP, 4444):
        p.pack_uint(v)
    u = client.call(PMAP_PROGRAM, 2, 1, p.get_buffer()).ok()
    assert u.unpack_uint() == 0  # false
    assert getport(client, 123456, 1) == 0


# -- the command line ---------------------------------------------------------------------


def test_cli_serve_portmapper_answers_on_its_port(tmp_path: Path) -> None:
    pmap_port = peers.free_port()
    server = peers.FerryServer(
        export=tmp_path / "export",
        state_dir=tmp_path / "state",
        log_dir=tmp_path / "logs",
        extra_args=["--portmapper", "--portmapper-port", str(pmap_port)],
        ready_timeout=20,
    )
    server.start()
    try:
        assert server.port != pmap_port
        c = RawClient(pmap_port, timeout=10)
        try:
            assert getport(c, NFS_PROGRAM, 3) == server.port
            assert getport(c, MOUNT_PROGRAM, 3) == server.port
            assert getport(c, 123456, 1) == 0
            entries = pmap_dump(c)
            assert (PMAP_PROGRAM, 2, IPPROTO_TCP, pmap_port) in entries
            assert (NFS_PROGRAM, 3, IPPROTO_TCP, server.port) in entries
        finally:
            c.close()
        # The NFS port itself still serves MOUNT.
        c = RawClient(server.port, timeout=10)
        try:
            assert mount_status(c, str(server.export))[0] == Mountstat3.OK
        finally:
            c.close()
    finally:
        code = server.stop()
    assert code == 0
    assert not server.tracebacks()


def test_mnt_and_dump_of_a_non_utf8_path(client: RawClient, tree: Path) -> None:
    name = b"caf\xe9"  # Latin-1, not UTF-8
    os.mkdir(os.fsencode(tree) + b"/" + name)
    path = os.fsencode(tree) + b"/" + name
    status, fh = mount_status(client, path)
    assert status == Mountstat3.OK and fh is not None
    status, attr = nfs_getattr(client, fh)
    assert status == Nfsstat3.OK and attr is not None
    assert attr.fileid == os.stat(path).st_ino
    # DUMP returns the path byte for byte, and UMNT of those bytes removes it.
    u = mount_call(client, DUMP)
    assert u.unpack_bool()
    assert (u.unpack_bytes(), u.unpack_bytes()) == (b"127.0.0.1", path)
    assert not u.unpack_bool()
    p = Packer()
    p.pack_opaque(path)
    client.call(MOUNT_PROGRAM, 3, UMNT, p.get_buffer()).ok()
    assert dump(client) == []
    # A missing non-UTF-8 name is NOENT, not a server fault.
    assert mount_status(client, os.fsencode(tree) + b"/\xff\xfe")[0] == Mountstat3.NOENT

"""Several ``ferry serve`` processes in front of one RGW bucket: what each acknowledges
stays in the store, and what a killed one leaves behind is cleaned up.

The protocol-level reproduction of issue 18: two servers share a file's key, each spools
its own WRITEs, and a COMMIT used to upload the whole spool over the other's committed
data.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from ceph_support import ConfiguredFerry, ferry_servers, s3_export

import ferry
from ferry.client import AuthSys
from ferry.nfs3.const import StableHow
from helpers import failover
from helpers.tcpproxy import TcpProxy, tls_cert

pytestmark = [pytest.mark.ceph, pytest.mark.interop]
MIB = 1 << 20


@pytest.fixture
def s3_pair(rgw: dict[str, str], bucket: str, tmp_path: Path) -> Iterator[list[ConfiguredFerry]]:
    """Two servers on one bucket; ``attr_ttl = 0`` so each sees the other's commits at once."""
    with ferry_servers(s3_export(rgw, bucket, attr_ttl=0), tmp_path, 2) as servers:
        yield servers


def test_two_writers_through_two_servers_keep_both_ranges(
    s3_pair: list[ConfiguredFerry],
) -> None:
    a, b = s3_pair
    mine, theirs = os.urandom(MIB), os.urandom(MIB)
    with ferry.connect(a.nfs_url, attr_cache=0) as ca, ferry.connect(b.nfs_url, attr_cache=0) as cb:
        fh = ca.nfs.create(ca.root, "f").obj
        assert fh is not None
        for off in (0, MIB):
            ca.nfs.write(fh, off, bytes(MIB), StableHow.FILE_SYNC)
        assert ca.nfs.write(fh, 0, mine, StableHow.UNSTABLE).count == MIB
        assert cb.nfs.write(fh, MIB, theirs, StableHow.UNSTABLE).count == MIB
        ca.nfs.commit(fh)
        cb.nfs.commit(fh)  # both answered OK: both ranges must be in the store
        for c in (ca, cb):
            got = b"".join(bytes(c.nfs.read(fh, off, MIB).data) for off in (0, MIB))
            assert got[:MIB] == mine, "A's committed range was overwritten"
            assert got[MIB:] == theirs


def test_a_killed_servers_spool_is_in_its_state_dir_and_gone_after_restart(
    rgw: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    data = os.urandom(3 * MIB)
    with ferry_servers(s3_export(rgw, bucket), tmp_path, 1) as (a,):
        with ferry.connect(a.nfs_url) as c:
            fh = c.nfs.create(c.root, "f").obj
            assert fh is not None
            for off in range(0, len(data), MIB):
                c.nfs.write(fh, off, data[off : off + MIB], StableHow.UNSTABLE)
        spooled = [
            p for p in a.state_dir.rglob("*") if p.is_file() and p.stat().st_size == len(data)
        ]
        assert len(spooled) == 1, f"no spool of the uncommitted write under {a.state_dir}"
        failover.kill(a)
        assert spooled[0].exists()
        a.start()
        assert not spooled[0].exists(), "the killed server's spool survived the restart"
        assert not spooled[0].parent.exists()
        with ferry.connect(a.nfs_url) as c:  # uncommitted: gone with the server, as NFS allows
            assert c.stat("f").st_size == 0


def test_the_documented_s3_example_config_can_write(
    rgw: dict[str, str], bucket: str, tmp_path: Path
) -> None:
    """The s3 export of docs/scale-out.md, pointed at RGW behind TLS (endpoint, CA, keys,
    bucket) and otherwise as written: its users write (root is squashed, as on any
    export)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scale-out.md").read_text()
    blocks = [b.split("```", 1)[0] for b in doc.split("```toml\n")[1:]]
    config = tomllib.loads(next(b for b in blocks if 'backend = "s3"' in b))
    (export,) = [e for e in config["export"] if e["backend"] == "s3"]
    cert, key = tls_cert(tmp_path)
    proxy = TcpProxy(int(rgw["endpoint_url"].rsplit(":", 1)[1]), tls=(cert, key))
    options = {**export["options"], **rgw, "endpoint_url": proxy.url}
    if "ca_bundle" in options:
        options["ca_bundle"] = str(cert)
    uid, gid = export["options"].get("uid", 1000), export["options"].get("gid", 1000)
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in options.items())
    path = tmp_path / "example.toml"
    path.write_text(
        f'[server]\nhandle_key = "{os.urandom(32).hex()}"\n\n[[export]]\npath = "{bucket}"\n'
        f'name = "{export["name"]}"\nbackend = "s3"\n\n[export.options]\n{table}\n'
    )
    server = ConfiguredFerry(path, tmp_path, "example")
    server.start()
    try:
        url = f"nfs://{server.host}:{server.port}{export['name']}"
        with ferry.connect(url, auth=AuthSys(uid=uid, gid=gid)) as c:
            c.makedirs("d")
            c.write_file("d/f", b"written by a user")
            assert c.read_file("d/f") == b"written by a user"
        with ferry.connect(url, auth=AuthSys(uid=0, gid=0)) as c, pytest.raises(PermissionError):
            c.write_file("g", b"root is squashed")
    finally:
        server.stop()
        proxy.stop()
    assert not server.tracebacks(), server.tracebacks()

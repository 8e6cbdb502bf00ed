"""A throwaway single-node Ceph cluster (mon, one OSD, MDS, optional RGW) in a temp dir.

Plain Python, no pytest: tests/ceph/conftest.py wraps it in a session fixture and a
benchmark can import it directly. Everything listens on 127.0.0.1, cephx is on (as on real
clusters: every daemon and client has its own key, ``keys/`` holds the clients'), pools
have size 1, no ceph-mgr and no systemd: every daemon is our child, in the foreground
(``-f``), in its own session, logging under the cluster directory.

Traps this module encodes (Ceph 16 "Pacific", Debian 12):

* Without ceph-mgr, ``ceph`` CLI commands that need it (pg dump, osd df, fs volume,
  status...) hang: the CLI always runs under a timeout, and the file system is made with
  ``ceph fs new``. Readiness is judged from the MDS map (an MDS reaching ``up:active``
  proves the OSD serves the metadata pool) and, for RGW, from its HTTP port.
* The keys are made here (``new_secret``), not with ``ceph-authtool``: one keyring holding
  every entity goes to ``ceph-mon --mkfs``, which makes the auth database from it.
* A bluestore block file must not live inside the OSD data directory.
* The MDS may ignore SIGTERM: the cluster is thrown away with SIGKILL (OSD first, then the
  rest) and its directory removed. Unix socket paths are limited to 107 bytes, so the
  directory is a short ``/tmp/ferry-ceph-*`` rather than a pytest tmp path.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from . import peers

PACKAGES = "ceph-mon ceph-osd ceph-mds ceph-mgr radosgw ceph-common libcephfs2"
"""Debian packages the cluster needs (.ci/run installs them)."""

_TOOLS = {
    "ceph": "ceph-common",
    "monmaptool": "ceph-base",
    "ceph-mon": "ceph-mon",
    "ceph-osd": "ceph-osd",
    "ceph-mds": "ceph-mds",
    "ceph-mgr": "ceph-mgr",
    "radosgw": "radosgw",
    "radosgw-admin": "radosgw",
}

CONF = """\
[global]
fsid = {fsid}
mon host = v2:{host}:{mon_port}
public addr = {host}
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = {dir}/run
admin socket = {dir}/run/$name.asok
log file = {dir}/log/$name.log
pid file = {dir}/run/$name.pid
log to stderr = false
err to stderr = false
mon data = {dir}/mon/$name
osd data = {dir}/osd/$name
mds data = {dir}/mds/$name
mgr data = {dir}/mgr/$name
mgr initial modules =
ms bind ipv6 = false
ms async op threads = 1
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
auth allow insecure global id reclaim = false
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd crush chooseleaf type = 0

[client]
keyring = {dir}/keys/$name.keyring

[osd]
osd objectstore = {objectstore}
memstore device bytes = {store_bytes}
bluestore block path = {dir}/block.$name
bluestore block create = true
bluestore block size = {store_bytes}
bluestore fsck on mkfs = false
bluestore cache autotune = false
bluestore cache size = 33554432
osd memory target = 939524096
osd op num shards = 1
osd op num threads per shard = 2

[mds]
mds cache memory limit = 33554432

[client.rgw.a]
rgw frontends = beast endpoint={host}:{rgw_port}
rgw data = {dir}/rgw
rgw thread pool size = 16
rgw cache lru size = 1000
rgw enable gc threads = false
rgw enable lc threads = false
rgw dynamic resharding = false
rgw dns name = {host}
"""

FS_NAME = "cephfs"

DAEMON_CAPS: dict[str, dict[str, str]] = {
    "mon.": {"mon": "allow *"},
    "client.admin": {"mon": "allow *", "osd": "allow *", "mds": "allow *", "mgr": "allow *"},
    "osd.0": {"mon": "allow profile osd", "mgr": "allow profile osd", "osd": "allow *"},
    "mds.a": {"mon": "allow profile mds", "osd": "allow rwx", "mds": "allow",
              "mgr": "allow profile mds"},
    "client.rgw.a": {"mon": "allow rw", "osd": "allow rwx", "mgr": "allow rw"},
    "mgr.a": {"mon": "allow profile mgr", "osd": "allow *", "mds": "allow *"},
}  # fmt: skip
"""Every entity of the cluster and its cephx capabilities (what a manual deployment gives)."""


def new_secret() -> str:
    """A cephx secret as ``ceph-authtool --gen-print-key`` makes it: base64 of the encoded
    CryptoKey (type 1 = AES, creation time, 16-byte length, 16 random bytes)."""
    now = time.time()
    head = struct.pack("<HIIH", 1, int(now), int(now % 1 * 1e9), 16)
    return base64.b64encode(head + os.urandom(16)).decode()


def keyring_text(entity: str, secret: str, caps: dict[str, str]) -> str:
    """One keyring section (the INI format every Ceph tool reads)."""
    lines = [f"[{entity}]", f"\tkey = {secret}"]
    lines += [f'\tcaps {kind} = "{cap}"' for kind, cap in caps.items()]
    return "\n".join(lines) + "\n"


class CephError(peers.PeerError):
    """The cluster did not come up, or a ``ceph`` command failed."""


class CephCluster:
    """mon ``a`` + ``osd.0`` + ``mds.a`` (+ ``client.rgw.a`` with ``rgw``) on loopback.

    ``objectstore`` is ``bluestore`` (a sparse block file of ``store_bytes`` next to the
    OSD directory; RAM stays bounded) or ``memstore`` (2 s faster to start, but every
    stored byte stays in the OSD's RAM). ``timings`` records each start-up step, in seconds.
    """

    def __init__(
        self,
        base: Path | None = None,
        *,
        rgw: bool = False,
        objectstore: str = "bluestore",
        store_bytes: int = 1 << 30,
        host: str = peers.LOOPBACK,
    ) -> None:
        if objectstore not in ("memstore", "bluestore"):
            raise ValueError(f"objectstore must be memstore or bluestore, not {objectstore!r}")
        self._own_dir = base is None
        self.dir = Path(base) if base else Path(tempfile.mkdtemp(prefix="ferry-ceph-"))
        self.rgw = rgw
        self.objectstore = objectstore
        self.store_bytes = store_bytes
        self.host = host
        self.fsid = str(uuid.uuid4())
        self.mon_port, self.rgw_port = peers.free_ports(2, host)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.argv: dict[str, list[str]] = {}  # how each daemon was started (for restart)
        self.timings: dict[str, float] = {}
        self.s3_keys: tuple[str, str] = ("", "")

    # -- info ---------------------------------------------------------------------------

    @property
    def conf(self) -> Path:
        return self.dir / "ceph.conf"

    @property
    def mon_addr(self) -> str:
        return f"{self.host}:{self.mon_port}"

    @property
    def rgw_url(self) -> str:
        return f"http://{self.host}:{self.rgw_port}"

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory of each running daemon (VmRSS), in bytes."""
        out: dict[str, int] = {}
        for name, proc in self.procs.items():
            with contextlib.suppress(OSError, ValueError, IndexError):
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[name] = int(line.split()[1]) * 1024
        return out

    def log_tail(self, limit: int = 3000) -> str:
        parts = []
        for p in sorted((self.dir / "log").glob("*")):
            with contextlib.suppress(OSError):
                parts.append(
                    f"--- {p.name} ---\n{p.read_bytes()[-limit:].decode(errors='replace')}"
                )
        return "\n".join(parts)

    # -- commands -----------------------------------------------------------------------

    def ceph(self, *args: str, timeout: float = 20.0) -> str:
        """``ceph ARGS`` against this cluster, bounded by ``timeout`` (mgr-less commands hang)."""
        exe = peers.need_tool("ceph", _TOOLS["ceph"])
        connect = str(max(1, int(timeout) - 2))
        argv = [exe, "-c", str(self.conf), "--connect-timeout", connect, *args]
        try:
            return peers.run(argv, timeout=timeout).stdout.decode(errors="replace")
        except peers.PeerError as exc:
            raise CephError(str(exc)) from exc

    def _daemon(self, name: str, argv: list[str]) -> None:
        """Start a daemon in the foreground, in its own session, output to log/NAME.out."""
        (self.dir / "log").mkdir(exist_ok=True)
        self.argv[name] = argv
        env = {**os.environ, "TCMALLOC_AGGRESSIVE_DECOMMIT": "true"}  # give freed memory back
        with open(self.dir / "log" / f"{name}.out", "ab") as out:
            self.procs[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )  # fmt: skip

    def _wait(self, what: str, ready: object, timeout: float) -> None:
        """Poll ``ready()`` until true; fail early if a daemon died, late after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            if ready():  # type: ignore[operator]
                return
            dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if dead:
                raise CephError(f"{what}: daemon(s) exited {dead}\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise CephError(f"{what}: not ready within {timeout}s\n{self.log_tail()}")
            time.sleep(0.2)

    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.timings[name] = round(time.monotonic() - t0, 2)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> CephCluster:
        """Bring the cluster up; on any failure stop it and raise CephError (with logs)."""
        for tool in ("ceph", "monmaptool", "ceph-mon", "ceph-osd", "ceph-mds"):
            peers.need_tool(tool, _TOOLS[tool])
        if self.rgw:
            peers.need_tool("radosgw", "radosgw")
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            with self._step("mon"):
                self._start_mon(timeout)
            with self._step("osd"):
                self._start_osd(timeout)
            with self._step("mds"):
                self._start_fs(timeout)
            if self.rgw:
                self.start_rgw(timeout)
        except BaseException:
            self.stop()
            raise
        self.timings["total"] = round(time.monotonic() - t0, 2)
        return self

    def _write_conf(self) -> None:
        for sub in ("run", "log", "mon", "osd", "mds", "mgr", "rgw", "keys"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self.conf.write_text(
            CONF.format(
                fsid=self.fsid,
                host=self.host,
                mon_port=self.mon_port,
                rgw_port=self.rgw_port,
                dir=self.dir,
                objectstore=self.objectstore,
                store_bytes=self.store_bytes,
            )  # fmt: skip
        )

    def keyring(self, entity: str) -> Path:
        """Where ``entity``'s keyring is: clients under ``keys/``, daemons in their data dir
        (the default for each daemon kind)."""
        kind, _, ident = entity.partition(".")
        if kind in ("osd", "mds", "mon", "mgr"):
            return self.dir / kind / f"{kind}.{ident}" / "keyring"
        return self.dir / "keys" / f"{entity}.keyring"

    def _write_keys(self) -> Path:
        """A secret for every entity of DAEMON_CAPS, each in its own keyring, and all of
        them in the keyring ``ceph-mon --mkfs`` imports (which makes the auth database)."""
        everything = []
        for entity, caps in DAEMON_CAPS.items():
            text = keyring_text(entity, new_secret(), caps)
            everything.append(text)
            if entity != "mon.":
                path = self.keyring(entity)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                path.chmod(0o600)
        initial = self.dir / "keys" / "initial.keyring"
        initial.write_text("".join(everything))
        return initial

    def _start_mon(self, timeout: float) -> None:
        self._write_conf()
        keys = self._write_keys()
        monmap = self.dir / "monmap"
        peers.run(
            [peers.need_tool("monmaptool", _TOOLS["monmaptool"]), "--create", "--fsid", self.fsid,
             "--addv", "a", f"[v2:{self.mon_addr}]", str(monmap)],
            timeout=30,
        )  # fmt: skip
        mon = peers.need_tool("ceph-mon", _TOOLS["ceph-mon"])
        conf = str(self.conf)
        peers.run([mon, "-c", conf, "--mkfs", "-i", "a", "--monmap", str(monmap),
                   "--keyring", str(keys)], timeout=60)  # fmt: skip
        self._daemon("mon.a", [mon, "-c", conf, "-i", "a", "-f"])
        self._wait("ceph-mon", lambda: peers.port_accepts(self.host, self.mon_port), timeout)
        self.ceph("mon", "stat", timeout=timeout)  # answers once it has formed a quorum

    def _start_osd(self, timeout: float) -> None:
        osd_uuid = str(uuid.uuid4())
        osd_id = self.ceph("osd", "new", osd_uuid).strip()
        if osd_id != "0":
            raise CephError(f"expected osd id 0, got {osd_id!r}")
        (self.dir / "osd" / "osd.0").mkdir(exist_ok=True)
        exe = peers.need_tool("ceph-osd", _TOOLS["ceph-osd"])
        conf = str(self.conf)
        peers.run([exe, "-c", conf, "-i", "0", "--mkfs", "--osd-uuid", osd_uuid], timeout=120)
        self._daemon("osd.0", [exe, "-c", conf, "-i", "0", "-f"])
        self._wait("ceph-osd", self._osd_up, timeout)

    def _osd_up(self) -> bool:
        dump = json.loads(self.ceph("osd", "dump", "--format", "json"))
        return any(o["osd"] == 0 and o["up"] == 1 for o in dump["osds"])

    def _start_fs(self, timeout: float) -> None:
        for pool in ("cephfs_meta", "cephfs_data"):
            self.ceph("osd", "pool", "create", pool, "8")
        self.ceph("fs", "new", FS_NAME, "cephfs_meta", "cephfs_data")
        (self.dir / "mds" / "mds.a").mkdir(exist_ok=True)
        exe = peers.need_tool("ceph-mds", _TOOLS["ceph-mds"])
        self._daemon("mds.a", [exe, "-c", str(self.conf), "-i", "a", "-f"])
        # While the MDS boots: the smallest allowed session timeouts, since a client that
        # died holding capabilities (a SIGKILLed Ferry server) blocks others on its files
        # until its session goes stale.
        for key in ("session_timeout", "session_autoclose"):
            self.ceph("fs", "set", FS_NAME, key, "30")
        self._wait("ceph-mds", self.mds_active, timeout)

    def mds_active(self) -> bool:
        """True when the file system has an ``up:active`` MDS."""
        dump = json.loads(self.ceph("fs", "dump", "--format", "json"))
        for fs in dump.get("filesystems", []):
            if any(i.get("state") == "up:active" for i in fs["mdsmap"]["info"].values()):
                return True
        return False

    def start_rgw(self, timeout: float = 90.0) -> None:
        """Start radosgw (S3 on ``rgw_url``) if it is not running; it creates its own pools."""
        if "rgw.a" in self.procs:
            return
        exe = peers.need_tool("radosgw", _TOOLS["radosgw"])
        with self._step("rgw"):
            self._daemon("rgw.a", [exe, "-c", str(self.conf), "-n", "client.rgw.a", "-f"])
            self._wait("radosgw", lambda: peers.port_accepts(self.host, self.rgw_port), timeout)

    def start_mgr(self, timeout: float = 90.0) -> None:
        """Start ceph-mgr if it is not running, and wait for its volumes module (``ceph fs
        subvolume ...``). Not started by default: it takes ~9 s and ~300 MiB."""
        if "mgr.a" in self.procs:
            return
        exe = peers.need_tool("ceph-mgr", _TOOLS["ceph-mgr"])
        with self._step("mgr"):
            self._daemon("mgr.a", [exe, "-c", str(self.conf), "-i", "a", "-f"])
            self._wait("ceph-mgr", self._volumes_ready, timeout)

    def _volumes_ready(self) -> bool:
        try:
            self.ceph("fs", "subvolume", "ls", FS_NAME, timeout=10)
        except CephError:
            return False
        return True

    def authorize(self, client: str, path: str, fs: str = FS_NAME) -> Path:
        """``ceph fs authorize FS client.CLIENT PATH rw``; returns the keyring file written
        where the cluster's clients look for it (``keys/client.CLIENT.keyring``)."""
        keyring = self.keyring(f"client.{client}")
        keyring.write_text(self.ceph("fs", "authorize", fs, f"client.{client}", path, "rw"))
        keyring.chmod(0o600)
        return keyring

    def create_s3_user(self, uid: str = "ferry") -> tuple[str, str]:
        """An RGW user with fixed keys; returns (access key, secret key). ``s3_keys`` keeps
        the default user's."""
        access, secret = f"{uid.upper()}ACCESSKEY0000", f"{uid}-secret-key-0000000000"
        admin = peers.need_tool("radosgw-admin", _TOOLS["radosgw-admin"])
        peers.run(
            [admin, "-c", str(self.conf), "-n", "client.rgw.a", "user", "create", f"--uid={uid}",
             f"--display-name={uid}", f"--access-key={access}", f"--secret-key={secret}"],
            timeout=60,
        )  # fmt: skip
        if uid == "ferry":
            self.s3_keys = (access, secret)
        return access, secret

    def evict_dead_clients(self) -> list[int]:
        """Evict the MDS sessions of CephFS clients on this host whose process is gone (a
        killed server, or NFS-Ganesha, which does not close its session on SIGTERM): until
        its session times out, a dead client's capabilities block others' changes to the
        files it held. Returns the evicted session ids."""
        asok = str(self.dir / "run" / "mds.a.asok")
        evicted = []
        for s in json.loads(self.ceph("--admin-daemon", asok, "session", "ls")):
            pid = s.get("client_metadata", {}).get("pid", "")
            if pid.isdigit() and not _alive(int(pid)):
                self.ceph("--admin-daemon", asok, "session", "evict", str(s["id"]))
                evicted.append(int(s["id"]))
        return evicted

    def kill(self, name: str) -> None:
        """SIGKILL one daemon (``osd.0``, ``mds.a``, ``mon.a``, ``rgw.a``) to test failures."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def restart(self, name: str, timeout: float = 60.0) -> None:
        """Start daemon ``name`` again as it was started (SIGKILLing it first if it runs)
        and wait until it serves: an OSD until the map shows it up again, an MDS until the
        file system has an active MDS, others until their port accepts."""
        if name in self.procs:
            self.kill(name)
        epoch = self._osd_up_from() if name.startswith("osd") else 0
        self._daemon(name, self.argv[name])
        if name.startswith("osd"):
            self._wait(name, lambda: self._osd_up_from() > epoch, timeout)
        elif name.startswith("mds"):
            self._wait(name, self.mds_active, timeout)
        elif name.startswith("rgw"):
            self._wait(name, lambda: peers.port_accepts(self.host, self.rgw_port), timeout)
        else:
            self._wait(name, lambda: peers.port_accepts(self.host, self.mon_port), timeout)

    def _osd_up_from(self) -> int:
        """The map epoch osd.0 last came up in (0 while it is down)."""
        dump = json.loads(self.ceph("osd", "dump", "--format", "json"))
        return max((o["up_from"] for o in dump["osds"] if o["osd"] == 0 and o["up"]), default=0)

    def stop(self) -> None:
        """SIGKILL every daemon (OSD first) and remove the directory; safe to call twice."""
        atexit.unregister(self.stop)
        order = sorted(self.procs, key=lambda n: (not n.startswith("osd"), n))
        for name in order:
            self.kill(name)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> CephCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not: daemons that PID 1 never reaps stay so)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def main() -> None:
    """Start a cluster, print its start-up timings and memory, then stop it."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--objectstore", default="bluestore", choices=("memstore", "bluestore"))
    ap.add_argument("--rgw", action="store_true", help="start radosgw too")
    ap.add_argument("--hold", type=float, default=0.0, help="seconds to keep it up")
    args = ap.parse_args()
    with CephCluster(rgw=args.rgw, objectstore=args.objectstore) as c:
        time.sleep(1.0)
        rss = c.rss_bytes()
        print(json.dumps({"timings_s": c.timings, "dir": str(c.dir), "conf": str(c.conf),
                          "rss_mib": {k: v >> 20 for k, v in rss.items()},
                          "rss_total_mib": sum(rss.values()) >> 20}, indent=1))  # fmt: skip
        time.sleep(args.hold)


if __name__ == "__main__":  # cd tests && python -m helpers.ceph [--rgw] [--objectstore memstore]
    main()

"""Soak: several clients (Ferry's own client and raw RPC clients, one thread each) run a
random mix of CREATE, WRITE, READ, RENAME, REMOVE, READDIR, SETATTR and COMMIT against one
server, each in its own directory, checking every answer against a model of what its
files must hold.

Asserted: no error of any kind; the server's descriptors are back to their idle count when
the clients have gone; its RSS at the end is within a bound of its RSS after the warm-up.
Recorded: operations per second and latency percentiles per operation
(build/hardening/soak.json). ``make test``: 1 min; ``FERRY_LONG=1`` (``make soak``): 30 min;
``FERRY_SOAK_SECONDS`` overrides both.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from hardening_util import LONG, env_number, percentiles, record_figures
from rawclient import (
    RawClient,
    nfs_commit,
    nfs_create,
    nfs_mkdir,
    nfs_read,
    nfs_remove,
    nfs_rename,
    nfs_setattr,
    nfs_write,
    unpack_post_op_attr,
)

import ferry
from ferry.backends.base import SetAttr
from ferry.nfs3.const import Nfsstat3, StableHow
from ferry.xdr import Packer
from helpers import peers

SECONDS = env_number("FERRY_SOAK_SECONDS", 60, 1800)
WARMUP = min(5.0, SECONDS / 6)
RAW_CLIENTS, FERRY_CLIENTS = 2, 2
MAX_FILES = 16  # per client
MAX_SIZE = 128 * 1024
RSS_BOUND_KIB = 24 * 1024  # RSS growth allowed after the warm-up
FD_CACHE = 64  # LocalBackend's FdCache capacity: open files it may keep after the clients go

pytestmark = pytest.mark.timeout(SECONDS + 240)


def proc_fds(pid: int) -> list[str]:
    """What ``pid``'s descriptors point to."""
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):  # closed meanwhile
            out.append(str(fd.readlink()))
    return out


def leaked(now: list[str], idle: list[str], export: Path) -> list[str]:
    """Descriptors open now and not when idle, except the backend's descriptor cache
    (``FD_CACHE`` files still in the export); a removed file held open counts as leaked."""
    extra = list(now)
    for target in idle:
        if target in extra:
            extra.remove(target)
    cached = [t for t in extra if t.startswith(f"{export}/") and not t.endswith("(deleted)")]
    rest = [t for t in extra if t not in cached]
    return rest + (cached[FD_CACHE:] if len(cached) > FD_CACHE else [])


def proc_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Ops:
    """One client's operations over its directory, each checked against ``model``; the
    transport (raw RPC or Ferry's client) is supplied by a subclass."""

    def __init__(self, name: str, seed: int) -> None:
        self.name = name
        self.rng = random.Random(seed)
        self.model: dict[str, bytearray] = {}
        self.handles: dict[str, bytes] = {}
        self.next_name = 0
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.error: BaseException | None = None

    # transport hooks
    def t_create(self, name: str) -> bytes: ...
    def t_write(self, fh: bytes, offset: int, data: bytes, stable: int) -> None: ...
    def t_read(self, fh: bytes, size: int) -> bytes: ...
    def t_commit(self, fh: bytes) -> None: ...
    def t_rename(self, old: str, new: str) -> None: ...
    def t_remove(self, name: str) -> None: ...
    def t_readdir(self) -> set[str]: ...
    def t_truncate(self, fh: bytes, size: int) -> None: ...
    def close(self) -> None: ...

    # the workload
    def _pick(self) -> str | None:
        return self.rng.choice(sorted(self.model)) if self.model else None

    def create(self) -> None:
        if len(self.model) >= MAX_FILES:
            return self.remove()
        name = f"n{self.next_name}"
        self.next_name += 1
        self.handles[name] = self.t_create(name)
        self.model[name] = bytearray()

    def write(self) -> None:
        name = self._pick()
        if name is None:
            return self.create()
        content = self.model[name]
        offset = self.rng.randrange(0, min(len(content), MAX_SIZE - 1) + 1)
        data = self.rng.randbytes(self.rng.randrange(1, min(32768, MAX_SIZE - offset) + 1))
        self.t_write(self.handles[name], offset, data, self.rng.choice((0, 2)))
        content[offset : offset + len(data)] = data

    def read(self) -> None:
        name = self._pick()
        if name is not None:
            got = self.t_read(self.handles[name], len(self.model[name]))
            assert got == self.model[name], f"{self.name}/{name}: read differs from model"

    def commit(self) -> None:
        name = self._pick()
        if name is not None:
            self.t_commit(self.handles[name])

    def rename(self) -> None:
        name = self._pick()
        if name is not None:
            new = f"n{self.next_name}"
            self.next_name += 1
            self.t_rename(name, new)
            self.model[new] = self.model.pop(name)
            self.handles[new] = self.handles.pop(name)

    def remove(self) -> None:
        name = self._pick()
        if name is not None:
            self.t_remove(name)
            del self.model[name], self.handles[name]

    def readdir(self) -> None:
        assert self.t_readdir() == set(self.model), f"{self.name}: directory differs"

    def setattr(self) -> None:
        name = self._pick()
        if name is not None:
            size = self.rng.randrange(0, len(self.model[name]) + 100)
            self.t_truncate(self.handles[name], size)
            content = self.model[name]
            del content[size:]
            content.extend(bytes(size - len(content)))

    TABLE: tuple[tuple[str, int], ...] = (
        ("create", 10), ("write", 30), ("read", 25), ("commit", 8), ("rename", 8),
        ("remove", 5), ("readdir", 7), ("setattr", 7),
    )  # fmt: skip

    def run(self, stop: threading.Event) -> None:
        names = [n for n, _ in self.TABLE]
        weights = [w for _, w in self.TABLE]
        try:
            while not stop.is_set():
                op = self.rng.choices(names, weights)[0]
                start = time.monotonic()
                getattr(self, op)()
                self.latency[op].append(time.monotonic() - start)
            self.readdir()
        except BaseException as exc:
            self.error = exc
        finally:
            self.close()


class RawOps(Ops):
    def __init__(self, name: str, seed: int, port: int, root: bytes) -> None:
        super().__init__(name, seed)
        self.c = RawClient(port, timeout=30)
        status, self.dir = nfs_mkdir(self.c, root, name)
        assert status == Nfsstat3.OK and self.dir is not None

    def _ok(self, status: Nfsstat3, what: str) -> None:
        assert status == Nfsstat3.OK, f"{self.name}: {what} -> {status.name}"

    def t_create(self, name: str) -> bytes:
        status, fh, _ = nfs_create(self.c, self.dir, name, how=1)  # GUARDED
        self._ok(status, "CREATE")
        assert fh is not None
        return fh

    def t_write(self, fh: bytes, offset: int, data: bytes, stable: int) -> None:
        self._ok(nfs_write(self.c, fh, data, offset, stable)[0], "WRITE")

    def t_read(self, fh: bytes, size: int) -> bytes:
        status, data = nfs_read(self.c, fh, 0, size + 10)
        self._ok(status, "READ")
        assert data is not None
        return data

    def t_commit(self, fh: bytes) -> None:
        self._ok(nfs_commit(self.c, fh)[0], "COMMIT")

    def t_rename(self, old: str, new: str) -> None:
        self._ok(nfs_rename(self.c, self.dir, old, self.dir, new), "RENAME")

    def t_remove(self, name: str) -> None:
        self._ok(nfs_remove(self.c, self.dir, name), "REMOVE")

    def t_truncate(self, fh: bytes, size: int) -> None:
        self._ok(nfs_setattr(self.c, fh, size=size), "SETATTR")

    def t_readdir(self) -> set[str]:
        names: set[str] = set()
        cookie, verf = 0, b"\0" * 8
        for _ in range(1000):  # bounded: 16 files fit in a page or two

            def build(p: Packer, cookie: int = cookie, verf: bytes = verf) -> None:
                p.pack_opaque(self.dir)
                p.pack_uhyper(cookie)
                p.pack_fopaque(8, verf)
                p.pack_uint(1024)

            status, u = self.c.nfs(16, build)
            self._ok(status, "READDIR")
            unpack_post_op_attr(u)
            verf = bytes(u.unpack_fopaque(8))
            while u.unpack_bool():
                u.unpack_uhyper()
                name = bytes(u.unpack_opaque(255)).decode()
                cookie = u.unpack_uhyper()
                if name not in (".", ".."):
                    names.add(name)
            if u.unpack_bool():
                return names
        raise AssertionError("READDIR never reached eof")

    def close(self) -> None:
        self.c.close()


class FerryOps(Ops):
    def __init__(self, name: str, seed: int, url: str) -> None:
        super().__init__(name, seed)
        self.client = ferry.connect(url)
        self.dir = self.client.nfs.mkdir(self.client.root, name).obj
        assert self.dir is not None

    def t_create(self, name: str) -> bytes:
        fh = self.client.nfs.create(self.dir, name).obj
        assert fh is not None
        return fh

    def t_write(self, fh: bytes, offset: int, data: bytes, stable: int) -> None:
        res = self.client.nfs.write(fh, offset, data, StableHow(stable))
        assert res.count == len(data)

    def t_read(self, fh: bytes, size: int) -> bytes:
        return bytes(self.client.nfs.read(fh, 0, size + 10).data)

    def t_commit(self, fh: bytes) -> None:
        self.client.nfs.commit(fh)

    def t_rename(self, old: str, new: str) -> None:
        self.client.nfs.rename(self.dir, old, self.dir, new)

    def t_remove(self, name: str) -> None:
        self.client.nfs.remove(self.dir, name)

    def t_truncate(self, fh: bytes, size: int) -> None:
        self.client.nfs.setattr(fh, SetAttr(size=size))

    def t_readdir(self) -> set[str]:
        return set(self.client.listdir(self.name))

    def close(self) -> None:
        self.client.close()


def test_soak(tmp_path: Path) -> None:
    server = peers.FerryServer(
        tmp_path / "export", tmp_path / "state", tmp_path / "logs",
        extra_args=peers.FERRY_PEER_ARGS,
    )  # fmt: skip
    server.start()
    try:
        assert server.proc is not None
        pid = server.proc.pid
        time.sleep(0.3)
        idle_fds = proc_fds(pid)
        c = RawClient(server.port)
        try:
            root = c.mount(str(server.export))
        finally:
            c.close()
        makers: list[Callable[[int], Ops]] = [
            *(lambda i: RawOps(f"raw{i}", i, server.port, root) for _ in range(RAW_CLIENTS)),
            *(lambda i: FerryOps(f"ferry{i}", i, server.url) for _ in range(FERRY_CLIENTS)),
        ]
        clients = [make(i) for i, make in enumerate(makers)]
        stop = threading.Event()
        threads = [threading.Thread(target=o.run, args=(stop,), daemon=True) for o in clients]
        started = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(WARMUP)
        warm_rss = proc_rss_kib(pid)
        rss_samples = [warm_rss]
        while time.monotonic() - started < SECONDS:
            time.sleep(min(5.0, max(0.1, SECONDS - (time.monotonic() - started))))
            rss_samples.append(proc_rss_kib(pid))
            if any(o.error for o in clients):
                break
        stop.set()
        for t in threads:
            t.join(60)
            assert not t.is_alive(), "a soak client is stuck"
        elapsed = time.monotonic() - started
        for o in clients:
            assert o.error is None, f"{o.name}: {o.error!r}"
        end_rss = proc_rss_kib(pid)
        deadline = time.monotonic() + 10
        while leaked(proc_fds(pid), idle_fds, server.export) and time.monotonic() < deadline:
            time.sleep(0.1)
        end_fds = proc_fds(pid)
        leaks = leaked(end_fds, idle_fds, server.export)
    finally:
        server.stop()
    tb = server.tracebacks()
    assert not tb, tb[-4000:]
    by_op: dict[str, list[float]] = defaultdict(list)
    for o in clients:
        for op, samples in o.latency.items():
            by_op[op].extend(samples)
    total = sum(len(v) for v in by_op.values())
    record_figures(
        "soak",
        {
            "seconds": round(elapsed, 1),
            "clients": {"raw": RAW_CLIENTS, "ferry": FERRY_CLIENTS},
            "ops": total,
            "ops_per_second": round(total / elapsed, 1),
            "latency_all": percentiles(s for v in by_op.values() for s in v),
            "latency_by_op": {op: percentiles(v) for op, v in sorted(by_op.items())},
            "fds": {"idle": len(idle_fds), "end": len(end_fds), "leaked": len(leaks)},
            "rss_kib": {"after_warmup": warm_rss, "end": end_rss, "max": max(rss_samples)},
        },
    )
    assert total > 0
    assert not leaks, f"descriptors left open: {sorted(leaks)[:20]}"
    assert end_rss <= warm_rss + RSS_BOUND_KIB, f"RSS {end_rss} KiB vs {warm_rss} after warm-up"
    if LONG:  # flat, not merely bounded: the second half grows no more than the slack
        half = rss_samples[len(rss_samples) // 2]
        assert max(rss_samples) <= half + RSS_BOUND_KIB // 2, rss_samples

"""The default ``ferry serve DIR`` uses the machine's cores where its backends can be
served by several processes (the async model, one event-loop process per usable CPU, at
most 4), one process where they cannot; it says which in its banner and log; and its
workers cannot be told apart by a client: a worker that dies is replaced, its metrics
leave with it, and the replacement keeps the handle keys the server started with.

The expected counts are worked out here from the CPUs this process may run on, not asked
of Ferry, so the tests say what the server must do rather than what it does.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest
from harness import stop_checked
from modelserver import ModelServer, serving_pid, start
from nfs3wire import Nfs3
from prometheus_client.parser import text_string_to_metric_families
from rawclient import RawClient, nfs_getattr, nfs_lookup
from test_shared_state import Worker, close_all, distinct_workers

from ferry.backends.base import Backend
from ferry.backends.local import LocalBackend
from ferry.backends.memory import MemoryBackend
from ferry.nfs3.const import Nfsstat3
from ferry.server.config import ExportConfig, ServerConfig
from ferry.server.models import worker_processes

CPUS = len(os.sched_getaffinity(0))
DEFAULT = min(CPUS, 4)
"""Worker processes of the default ``ferry serve`` on a local directory here."""
WAIT = 10.0


def serve(tmp_path: Path, *args: str, path: bool = True) -> ModelServer:
    export = tmp_path / "export"
    export.mkdir(exist_ok=True)
    (export / "hello.txt").write_bytes(b"hello")
    srv = start(export, tmp_path / "state", args, tmp_path / "serve.log", serve_path=path)
    srv.wait_settled()
    return srv


def processes_line(srv: ModelServer) -> str:
    lines = [ln for ln in srv.banner.splitlines() if ln.startswith("ferry: ") and "model" in ln]
    assert len(lines) == 1, srv.banner
    return lines[0]


def test_default_serve_runs_one_async_worker_per_cpu(tmp_path: Path) -> None:
    srv = serve(tmp_path)  # no --model, no --workers
    try:
        assert len(srv.workers()) == (DEFAULT if DEFAULT > 1 else 0)
        if DEFAULT > 1:
            assert processes_line(srv).startswith(f"ferry: async model, {DEFAULT} worker processes")
            ws = distinct_workers(srv, want=DEFAULT)  # every one of them serves
            close_all(ws)
        else:
            assert processes_line(srv).startswith("ferry: async model, 1 process")
    finally:
        stop_checked(srv)
    assert f"async model, {DEFAULT} " in srv.stderr()  # the log says it too


def test_workers_1_is_one_process(tmp_path: Path) -> None:
    srv = serve(tmp_path, "--model", "async", "--workers", "1")
    try:
        assert srv.workers() == []
        assert processes_line(srv).startswith("ferry: async model, 1 process")
    finally:
        stop_checked(srv)


def test_memory_backend_stays_in_one_process(tmp_path: Path) -> None:
    """Its files live in the process: a second worker would not see them."""
    srv = serve(tmp_path, "--backend", "memory")
    try:
        assert srv.workers() == []
        line = processes_line(srv)
        assert line.startswith("ferry: async model, 1 process"), line
        if CPUS > 1:
            assert "memory" in line  # and why
    finally:
        stop_checked(srv)


class _Unknown(Backend):  # abstract: only its class is looked at
    """A backend that says nothing about processes: it may keep state per process."""


class _Shareable(LocalBackend):
    multiprocess_safe = True


def _config(*backends: str, **server: object) -> ServerConfig:
    exports = [ExportConfig(path=f"/e{i}", backend=b) for i, b in enumerate(backends)]
    return ServerConfig(exports=exports, **server)  # type: ignore[arg-type]


def test_the_default_follows_every_backend_of_the_config() -> None:
    here = __name__
    assert worker_processes(_config("local")) == DEFAULT
    assert worker_processes(_config("memory")) == 1
    assert worker_processes(_config("s3")) == 1  # UNSTABLE writes spooled in the process
    assert worker_processes(_config("cephfs")) == 1  # write_epoch counted per process
    assert worker_processes(_config(f"{here}:_Unknown")) == 1  # unknown: one process
    assert worker_processes(_config(f"{here}:_Shareable")) == DEFAULT
    assert worker_processes(_config("local", f"{here}:_Unknown")) == 1
    assert worker_processes(_config("local", workers=3)) == 3  # --workers wins
    assert worker_processes(_config("local", model="async", workers=1)) == 1
    for model in ("serial", "thread", "process"):
        assert worker_processes(_config("local", model=model)) == 1
    assert not MemoryBackend.multiprocess_safe and LocalBackend.multiprocess_safe


# -- workers that cannot be told apart -----------------------------------------------------


def _wait_replaced(srv: ModelServer, dead: int, count: int) -> list[int]:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        now = srv.workers()
        if len(now) == count and dead not in now:
            return now
        time.sleep(0.05)
    raise AssertionError(f"worker {dead} was not replaced: {srv.workers()}")


def _new_worker(srv: ModelServer, pid: int) -> Worker:
    """A connection served by process ``pid``."""
    held: list[Worker] = []
    try:
        for _ in range(40):
            w = Worker(srv)
            if w.pid == pid:
                return w
            held.append(w)
    finally:
        close_all(held)
    raise AssertionError(f"no connection reached worker {pid}")


@pytest.mark.skipif(DEFAULT < 2, reason="one CPU: the default server has no workers")
def test_a_dead_default_worker_is_replaced(tmp_path: Path) -> None:
    srv = serve(tmp_path)
    try:
        before = srv.workers()
        os.kill(before[0], signal.SIGKILL)
        after = _wait_replaced(srv, before[0], len(before))
        (new,) = set(after) - set(before)
        w = _new_worker(srv, new)
        status, fh, _ = nfs_lookup(w.client, w.root, "hello.txt")
        w.client.close()
        assert status == Nfsstat3.OK and fh is not None
    finally:
        stop_checked(srv)
    assert "restarting it" in srv.stderr()


@pytest.mark.skipif(DEFAULT < 2, reason="one CPU: the default server has no workers")
def test_a_replaced_worker_keeps_the_handle_keys_the_server_started_with(
    tmp_path: Path,
) -> None:
    """Keys are read once, at start (docs/scale-out.md, rotating the key): a worker
    restarted after the key file changed must still sign and accept what the others do."""
    keys = tmp_path / "handle.keys"
    keys.write_text("11" * 32 + "\n")
    export = tmp_path / "export"
    export.mkdir()
    config = tmp_path / "ferry.toml"
    config.write_text(
        f'[server]\nhandle_key_file = "{keys}"\n'
        f'[[export]]\npath = "{export}"\nroot_squash = false\n'
    )
    srv = serve(tmp_path, "--config", str(config), path=False)
    try:
        a = Worker(srv)
        keys.write_text("22" * 32 + "\n")  # edited while the server runs
        before = srv.workers()
        victim = next(p for p in before if p != a.pid)
        os.kill(victim, signal.SIGKILL)
        (new,) = set(_wait_replaced(srv, victim, len(before))) - set(before)
        b = _new_worker(srv, new)
        try:
            assert b.root == a.root  # signed alike
            assert nfs_getattr(b.client, a.root)[0] == Nfsstat3.OK  # and accepted
        finally:
            close_all([a, b])
    finally:
        stop_checked(srv)


def _scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as r:
        text = r.read().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


@pytest.mark.skipif(DEFAULT < 2, reason="one CPU: the default server has no workers")
def test_a_killed_workers_gauges_leave_with_it(tmp_path: Path) -> None:
    """ferry_connections_open adds up the live workers: a SIGKILLed worker's open
    connection must not be counted for ever (its counters stay in the totals)."""
    from test_metrics import free_port

    mport = free_port()
    srv = serve(tmp_path, "--metrics", f"127.0.0.1:{mport}")
    try:
        c = RawClient(srv.port)
        c.call(100003, 3, 0)
        pid = serving_pid(srv, c.sock)
        assert pid is not None and pid != srv.pid
        assert _scrape(mport)["ferry_connections_open"] == 1
        os.kill(pid, signal.SIGKILL)
        _wait_replaced(srv, pid, DEFAULT)
        c.close()
        deadline = time.monotonic() + WAIT
        while (samples := _scrape(mport))["ferry_connections_open"] != 0:
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert samples["ferry_connections_open"] == 0
        assert samples["ferry_connections_total"] >= 1  # the dead worker's count stays
    finally:
        stop_checked(srv)


@pytest.mark.skipif(DEFAULT < 2, reason="one CPU: the default server has no workers")
def test_changes_on_one_worker_are_seen_at_once_on_another(tmp_path: Path) -> None:
    """A file made or removed through one worker is listed (or not) by the next READDIR
    on another, whose listing cache was filled just before: it is keyed by the
    directory's times, so a change another process made invalidates it as one made here."""
    srv = serve(tmp_path)
    try:
        a, b = distinct_workers(srv)
        try:
            na, nb = Nfs3(a.client, a.root), Nfs3(b.client, b.root)
            d = na.new_dir(na.root, b"d")
            for i in range(40):  # bounded; each round: b lists, a changes, b lists again
                names = {e.name for e in nb.must(nb.readdir(d)).entries}
                if i % 2 == 0:
                    na.new_file(d, b"f%d" % i)
                    names.add(b"f%d" % i)
                else:
                    na.must(na.remove(d, b"f%d" % (i - 1)))
                    names.discard(b"f%d" % (i - 1))
                assert {e.name for e in nb.must(nb.readdir(d)).entries} == names, i
        finally:
            close_all([a, b])
    finally:
        stop_checked(srv)


@pytest.mark.skipif(DEFAULT < 2, reason="one CPU: the default server has no workers")
def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    """SIGKILL of the server's process (a crash, the OOM killer, ``kill -9``) ends the
    whole server: no orphaned worker goes on serving unsupervised, holding the port a
    restart needs; nor does the metrics exporter, holding its port."""
    from test_metrics import free_port

    mport = free_port()
    srv = serve(tmp_path, "--metrics", f"127.0.0.1:{mport}")
    workers = srv.workers()
    assert len(workers) == DEFAULT + 1  # and the exporter
    os.kill(srv.pid, signal.SIGKILL)
    srv.proc.wait(WAIT)
    srv.stop()  # (only closes its pipe now)
    deadline = time.monotonic() + WAIT
    while (alive := [p for p in workers if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in alive:  # clean up before failing
        os.kill(pid, signal.SIGKILL)
    assert alive == [], "workers outlived their parent"
    assert _port_free(srv.port, deadline), "the port is still held"
    assert _port_free(mport, deadline), "the metrics port is still held"


def _port_free(port: int, deadline: float) -> bool:
    """Whether ``port`` can be bound again before ``deadline`` (a killed worker's threads
    let go of its descriptors a moment after its main thread shows as a zombie)."""
    while True:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
                return True
            except OSError:
                if time.monotonic() > deadline:
                    return False
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"

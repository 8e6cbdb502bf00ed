"""The scale-out benchmark's per-server 'machine' caps: a link per server's ports (tc htb on
lo) and a CPU cgroup per server. Checked by what the kernel reports (bytes counted in the
server's class, the quota written, the process placed), not by timing."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cpu_caps  # noqa: E402
import link_caps  # noqa: E402

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="tc and cgroups need root")


def send(port: int, nbytes: int) -> None:
    """Serve ``nbytes`` once on loopback ``port`` and read them all as a client."""
    with socket.create_server(("127.0.0.1", port)) as srv:

        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(b"x" * nbytes)

        t = threading.Thread(target=serve)
        t.start()
        with socket.create_connection(("127.0.0.1", port)) as c:
            got = 0
            while data := c.recv(1 << 16):
                got += len(data)
                if got >= nbytes:
                    break
        t.join(10)
    assert got == nbytes


def class_bytes(minor: int) -> int:
    out = link_caps.tc("-s", "class", "show", "dev", "lo").stdout
    m = re.search(rf"class htb {link_caps.HANDLE}:{minor:x} .*?\n Sent (\d+) bytes", out)
    assert m, out
    return int(m.group(1))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_each_server_gets_its_own_capped_class_and_nothing_else_is_shaped() -> None:
    a, b, other = free_port(), free_port(), free_port()
    with link_caps.port_links([[a], [b]], mbit=800):
        classes = link_caps.tc("class", "show", "dev", "lo").stdout
        assert classes.count("rate 800Mbit ceil 800Mbit") == 4, classes  # 2 servers x 2 ways
        send(a, 4 << 20)
        send(other, 4 << 20)
        assert class_bytes(0x10) >= 4 << 20  # server a -> client
        assert class_bytes(0x12) < 1 << 20  # server b: only what b's port saw (nothing)
        assert class_bytes(0x11) < 1 << 20  # clients -> a: the request side, small
    assert f"htb {link_caps.HANDLE}:" not in link_caps.tc("qdisc", "show", "dev", "lo").stdout


def test_a_stale_shaper_of_ours_is_replaced_and_removed() -> None:
    link_caps.tc("qdisc", "add", "dev", "lo", "root", "handle", f"{link_caps.HANDLE}:", "htb")
    with link_caps.port_links([[free_port()]], mbit=100):
        pass
    assert "htb" not in link_caps.tc("qdisc", "show", "dev", "lo").stdout


def test_server_processes_are_placed_in_a_capped_cpu_group() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with cpu_caps.server_cpus([[proc.pid]], cpus=0.25) as (group,):
            cgroup = Path(f"/proc/{proc.pid}/cgroup").read_text()
            name = f"ferry-bench-{os.getpid()}-0"
            assert group.name == name and name in cgroup, cgroup
            v2 = (group / "cpu.max").exists()
            quota = (group / ("cpu.max" if v2 else "cpu.cfs_quota_us")).read_text()
            assert quota.split()[0] == "25000"
        assert name not in Path(f"/proc/{proc.pid}/cgroup").read_text()
        assert not group.exists()
    finally:
        proc.kill()
        proc.wait()

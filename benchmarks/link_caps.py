"""Give each server on loopback its own bandwidth-capped link (tc htb on ``lo``, by port).

Several servers on one machine share its cores and its loopback, so they cannot show what
scale-out is for: on separate machines every server brings its own network link. This
models that part honestly: the TCP traffic from and to each server's ports goes through a
class of its own with ``mbit`` each way (a full-duplex link), and everything else
(unclassified: the Ceph daemons, other programs) bypasses the shaper (htb ``default 0``).
Needs root and the kernel's ``sch_htb``; the qdisc is removed on exit, and a stale one of
ours (same handle) from a killed run is replaced.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence

HANDLE = "f3a"  # our root qdisc's handle on the device (hex), so we only remove our own
BURST = "256k"  # a loopback GSO packet is up to 64 KiB; room for a few per refill


def tc(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("tc") or "/usr/sbin/tc"
    return subprocess.run([exe, *argv], capture_output=True, text=True, check=check, timeout=10)


def remove(dev: str = "lo") -> None:
    """Remove our root qdisc from ``dev`` if it is there (never someone else's)."""
    if f"htb {HANDLE}:" in tc("qdisc", "show", "dev", dev, check=False).stdout:
        tc("qdisc", "del", "dev", dev, "root", check=False)


def _link(dev: str, minor: int, mbit: float, match: str, ports: Sequence[int]) -> None:
    """One direction of one server's link: a capped class and a filter per port."""
    cid = f"{HANDLE}:{minor:x}"
    rate = f"{mbit}mbit"
    tc("class", "add", "dev", dev, "parent", f"{HANDLE}:", "classid", cid, "htb",
       "rate", rate, "ceil", rate, "burst", BURST, "cburst", BURST)  # fmt: skip
    tc("qdisc", "add", "dev", dev, "parent", cid, "pfifo", "limit", "64")
    for port in ports:
        tc("filter", "add", "dev", dev, "parent", f"{HANDLE}:", "protocol", "ip", "prio", "1",
           "u32", "match", "ip", match, str(port), "0xffff", "flowid", cid)  # fmt: skip


@contextlib.contextmanager
def port_links(servers: Sequence[Sequence[int]], mbit: float, dev: str = "lo") -> Iterator[None]:
    """Cap each server (its list of ports) to ``mbit`` Mbit/s each way while inside."""
    remove(dev)
    try:
        tc("qdisc", "add", "dev", dev, "root", "handle", f"{HANDLE}:", "htb", "default", "0")
        for i, ports in enumerate(servers):
            _link(dev, 0x10 + 2 * i, mbit, "sport", ports)  # server -> clients
            _link(dev, 0x11 + 2 * i, mbit, "dport", ports)  # clients -> server
        yield
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"tc {' '.join(exc.cmd[1:])}: {exc.stderr.strip()}") from None
    finally:
        remove(dev)

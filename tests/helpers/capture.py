"""Loopback packet capture with dumpcap and analysis with tshark (the wire-format judge).

Lesson learnt against NFS-Ganesha: tshark's RPC heuristics are not enough on their
own. As root, libnfs connects from a privileged source port (600-1023), and when
that port has a registered dissector (e.g. 862 is TWAMP-Control) TCP hands the
payload to it and tshark reports malformed TWAMP instead of NFS. So every tshark
call here forces `-d tcp.port==P,rpc` for the server's ports.

Also: libnfs closes its connections with a TCP RST, which tshark flags as an expert
*warning* ("Connection reset (RST)"). RSTs sent *to* the server are therefore not
counted as problems; RSTs sent *by* the server are.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import peers


def _any_port(field: str, ports: Sequence[int]) -> str:
    return "(" + " || ".join(f"{field} == {p}" for p in ports) + ")"


def decode_as_args(ports: Sequence[int]) -> list[str]:
    args: list[str] = []
    for p in ports:
        args += ["-d", f"tcp.port=={p},rpc"]
    return args


class Capture:
    """dumpcap on `lo` for the given TCP ports, writing pcapng. Use as a context manager."""

    def __init__(self, pcap: Path, ports: Sequence[int], iface: str = "lo") -> None:
        self.pcap = Path(pcap)
        self.ports = list(ports)
        self.iface = iface
        self.proc: subprocess.Popen[bytes] | None = None
        self.err_path = self.pcap.with_suffix(".dumpcap.log")

    @property
    def capture_filter(self) -> str:
        return " or ".join(f"tcp port {p}" for p in self.ports)

    def start(self, timeout: float = 15.0) -> Capture:
        exe = peers.find_tool("dumpcap")
        if exe is not None:
            argv = [exe, "-i", self.iface, "-f", self.capture_filter, "-w", str(self.pcap), "-q"]
        else:
            exe = peers.need_tool("tshark", "tshark")
            argv = [exe, "-i", self.iface, "-f", self.capture_filter, "-w", str(self.pcap), "-q"]
        with open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        # dumpcap prints "Capturing on 'Loopback: lo'" once the filter is set and pcap is open.
        started = peers.wait_until(lambda: b"Capturing on" in self.err_path.read_bytes(), timeout)
        if not started or self.proc.poll() is not None:
            msg = self.err_path.read_text(errors="replace")
            self.stop()
            raise peers.PeerError(
                f"capture did not start within {timeout}s: {' '.join(argv)}\n{msg}"
            )
        time.sleep(0.3)  # let the kernel-side filter settle before traffic starts
        return self

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        time.sleep(0.3)  # let the last segments reach the ring buffer
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def dropped(self) -> int | None:
        """Packets dumpcap reports as dropped (None if it printed no statistics)."""
        m = re.search(r"received/dropped on interface .*: *\d+/(\d+)", self.log())
        return int(m.group(1)) if m else None

    def log(self) -> str:
        try:
            return self.err_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def tshark(pcap: Path, ports: Sequence[int], *args: str, timeout: float = 120.0) -> str:
    exe = peers.need_tool("tshark", "tshark")
    cp = peers.run([exe, "-n", "-r", str(pcap), *decode_as_args(ports), *args], timeout=timeout)
    return cp.stdout.decode(errors="replace")


def problem_filter(ports: Sequence[int]) -> str:
    return (
        "_ws.malformed || (_ws.expert.severity >= warning"
        f" && !(tcp.flags.reset == 1 && {_any_port('tcp.dstport', ports)}))"
    )


NFS3_PROCS = [
    "NULL", "GETATTR", "SETATTR", "LOOKUP", "ACCESS", "READLINK", "READ", "WRITE", "CREATE",
    "MKDIR", "SYMLINK", "MKNOD", "REMOVE", "RMDIR", "RENAME", "LINK", "READDIR", "READDIRPLUS",
    "FSSTAT", "FSINFO", "PATHCONF", "COMMIT",
]  # fmt: skip
MOUNT3_PROCS = ["NULL", "MNT", "DUMP", "UMNT", "UMNTALL", "EXPORT"]
NFS3_STATUS = {
    0: "NFS3_OK", 1: "NFS3ERR_PERM", 2: "NFS3ERR_NOENT", 5: "NFS3ERR_IO", 6: "NFS3ERR_NXIO",
    13: "NFS3ERR_ACCES", 17: "NFS3ERR_EXIST", 18: "NFS3ERR_XDEV", 19: "NFS3ERR_NODEV",
    20: "NFS3ERR_NOTDIR", 21: "NFS3ERR_ISDIR", 22: "NFS3ERR_INVAL", 27: "NFS3ERR_FBIG",
    28: "NFS3ERR_NOSPC", 30: "NFS3ERR_ROFS", 31: "NFS3ERR_MLINK", 63: "NFS3ERR_NAMETOOLONG",
    66: "NFS3ERR_NOTEMPTY", 69: "NFS3ERR_DQUOT", 70: "NFS3ERR_STALE", 71: "NFS3ERR_REMOTE",
    10001: "NFS3ERR_BADHANDLE", 10002: "NFS3ERR_NOT_SYNC", 10003: "NFS3ERR_BAD_COOKIE",
    10004: "NFS3ERR_NOTSUPP", 10005: "NFS3ERR_TOOSMALL", 10006: "NFS3ERR_SERVERFAULT",
    10007: "NFS3ERR_BADTYPE", 10008: "NFS3ERR_JUKEBOX",
}  # fmt: skip
PROGRAMS = {"100000": "PORTMAP", "100003": "NFS", "100005": "MOUNT"}


def proc_name(program: str, proc: str) -> str:
    prog = PROGRAMS.get(program, f"prog{program}")
    try:
        n = int(proc)
        table = NFS3_PROCS if prog == "NFS" else MOUNT3_PROCS if prog == "MOUNT" else []
        return f"{prog} {table[n]}" if n < len(table) else f"{prog} proc{n}"
    except ValueError:
        return f"{prog} proc{proc}"


@dataclass
class RpcSummary:
    calls: int = 0
    replies: int = 0
    unanswered: list[str] = field(default_factory=list)  # "stream/xid PROC"
    unmatched_replies: list[str] = field(default_factory=list)
    procedures: Counter[str] = field(default_factory=Counter)  # calls: "NFS GETATTR": n
    errors: Counter[str] = field(default_factory=Counter)  # replies: "NFS LOOKUP NFS3ERR_NOENT": n

    def render(self) -> str:
        return (
            f"calls={self.calls} replies={self.replies}\n"
            f"procedures: {dict(sorted(self.procedures.items()))}\n"
            f"error replies: {dict(sorted(self.errors.items()))}\n"
            f"unanswered calls: {self.unanswered}\nreplies without call: {self.unmatched_replies}"
        )


def _split(value: str) -> list[str]:
    return value.split(",") if value else []


def summarize_rpc(pcap: Path, ports: Sequence[int]) -> RpcSummary:
    """Pair RPC calls and replies by (tcp.stream, xid); tally procedures and error statuses."""
    out = tshark(
        pcap, ports,
        "-Y", "rpc", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
        "-e", "tcp.stream", "-e", "rpc.xid", "-e", "rpc.msgtyp", "-e", "rpc.program",
        "-e", "rpc.procedure", "-e", "nfs.status3", "-e", "mount.status",
    )  # fmt: skip
    s = RpcSummary()
    open_calls: dict[tuple[str, str], list[str]] = {}
    for line in out.splitlines():
        cols = (line.split("\t") + [""] * 7)[:7]
        stream, xids, types, progs, procs = cols[0], *map(_split, cols[1:5])
        nfs_st, mnt_st = _split(cols[5]), _split(cols[6])
        n = len(xids)
        single = n == 1  # statuses can only be attributed safely with one message per frame
        for i in range(n):
            typ = types[i] if i < len(types) else ""
            name = proc_name(
                progs[i] if i < len(progs) else "?", procs[i] if i < len(procs) else "?"
            )
            key = (stream, xids[i])
            if typ == "0":
                s.calls += 1
                s.procedures[name] += 1
                open_calls.setdefault(key, []).append(name)
            elif typ == "1":
                s.replies += 1
                if open_calls.get(key):
                    open_calls[key].pop()
                else:
                    s.unmatched_replies.append(f"{stream}/{xids[i]} {name}")
                if single:
                    for st in nfs_st + mnt_st:
                        if st and st != "0":
                            label = NFS3_STATUS.get(int(st), st) if nfs_st else f"MNT3ERR_{st}"
                            s.errors[f"{name} {label}"] += 1
    s.unanswered = [f"{k[0]}/{k[1]} {nm}" for k, names in open_calls.items() for nm in names]
    return s


def problems(pcap: Path, ports: Sequence[int]) -> str:
    """tshark's one-line summaries of malformed packets and expert warnings (empty if clean)."""
    return tshark(pcap, ports, "-Y", problem_filter(ports)).strip()


def packet_count(pcap: Path, ports: Sequence[int], display_filter: str) -> int:
    return len(tshark(pcap, ports, "-Y", display_filter).splitlines())


def environment_note() -> str:
    return (
        f"dumpcap={peers.find_tool('dumpcap')} tshark={peers.find_tool('tshark')} uid={os.getuid()}"
    )

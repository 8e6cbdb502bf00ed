"""Smoke test of benchmarks/scaleout_bench.py on the session's Ceph cluster: 1 and 2 Ferry
servers and 1 and 2 NFS-Ganesha (FSAL_CEPH) servers, tiny sizes, every phase run and
verified (the read-back is checked by sha256), files read back through another server than
the one that wrote them; and the mode for servers already running (``--servers
HOST:PORT,...``), against two ``ferry serve`` processes. No timing is asserted: only that
every configuration produced numbers and the report has its rows.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from ceph_support import EXPORT_NAME, ConfiguredFerry

from helpers.ceph import CephCluster
from helpers.tools import require_tool

pytestmark = [pytest.mark.ceph, pytest.mark.interop]

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaleout_bench.py"


def load_bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("scaleout_bench", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scaleout_bench"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_scaleout_bench_runs_every_configuration(ceph_cluster: CephCluster) -> None:
    require_tool("nfs-cp", "libnfs-utils")
    require_tool("ganesha.nfsd", "nfs-ganesha")
    bench = load_bench()
    if why := bench.ganesha_missing():
        pytest.fail(why, pytrace=False)
    args = bench.parse_args(
        ["--servers", "1,2", "--clients", "2", "--size-mib", "1", "--ops", "64",
         "--repeat", "1", "--dir", "/scaleout-smoke", "--link-mbit", "800", "--server-cpus", "0.5",
         "--cross-read"]
    )  # fmt: skip
    results, text = bench.bench(args, ceph_cluster)
    assert "failed" not in text and "left out" not in text, text
    for kind in ("ferry", "ganesha"):
        assert sorted(results[kind]) == [1, 2], text
        for phases in results[kind].values():
            assert all(phases[p].rate > 0 for p in ("write", "read", "getattr")), text
        assert f"| {kind} x2 |" in text
    assert "Ferry / Ganesha" in text
    assert "read back through the next server's (not the writer's)" in text


def test_scaleout_bench_against_servers_already_running(pair: list[ConfiguredFerry]) -> None:
    require_tool("nfs-cp", "libnfs-utils")
    bench = load_bench()
    addresses = ",".join(f"{s.host}:{s.port}" for s in pair)
    args = bench.parse_args(
        ["--servers", addresses, "--export", EXPORT_NAME, "--label", "ferry", "--clients", "2",
         "--size-mib", "1", "--ops", "32", "--repeat", "1", "--cross-read"]
    )  # fmt: skip
    assert args.given == [(s.host, s.port, s.port) for s in pair]
    results, text = bench.bench(args, None)
    assert sorted(results["ferry"]) == [1, 2], text
    for phases in results["ferry"].values():
        assert all(phases[p].rate > 0 for p in ("write", "read", "getattr")), text
    assert "servers already running" in text and "| ferry x2 |" in text
    assert "- / - /" in text  # their CPU is not measured from here

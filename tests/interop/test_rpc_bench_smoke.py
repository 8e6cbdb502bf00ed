"""``ferry bench rpc --quick`` end to end: a Ferry server (TCP and UDP) started here, the
bench's own proxies in front of it, every strategy run, the table, the client counters and
the plots produced, and the counters consistent with each other (never timings)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import peers

pytestmark = [pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from rpc_bench import strategies  # noqa: E402

IMAGES = ("rpc-timeline", "rpc-progress", "rpc-loss")


@pytest.fixture
def udp_ferry(tmp_path: Path):  # type: ignore[no-untyped-def]
    server = peers.FerryServer(tmp_path / "export", tmp_path / "state", tmp_path / "logs",
                               extra_args=("--no-root-squash", "--udp"))  # fmt: skip
    try:
        server.start()
    except peers.PeerError as e:
        pytest.fail(f"could not start ferry: {e}", pytrace=False)
    yield server
    server.stop()
    assert not server.tracebacks(), server.tracebacks()[-4000:]


def test_rpc_bench_quick(tmp_path: Path, udp_ferry: peers.FerryServer) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.fail("matplotlib is missing: pip install -e '.[test]'", pytrace=False)
    url = f"nfs://127.0.0.1:{udp_ferry.port}{udp_ferry.export}"
    img, out, js = tmp_path / "img", tmp_path / "rpc.md", tmp_path / "runs.json"
    cp = subprocess.run(
        [sys.executable, "-m", "ferry", "bench", "rpc", url, "--quick", "--plots", str(img),
         "--out", str(out), "--json", str(js)],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
    )  # fmt: skip
    log = cp.stdout + "\n--- stderr ---\n" + cp.stderr
    assert cp.returncode == 0, log
    names = [s.name for s in strategies()]
    rows = [ln for ln in cp.stdout.splitlines() if ln.startswith("| ")]
    for name in names:  # a row in the results, the time and the counters tables; no failure
        mine = [ln for ln in rows if ln.startswith(f"| {name} |")]
        assert len(mine) == 3 and not any("failed" in ln for ln in mine), log
    for title in ("Where the time goes", "Client counters"):
        assert title in cp.stdout, log
    assert out.read_text().strip() == cp.stdout.strip()
    for name in IMAGES:
        assert (img / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (img / f"{name}.svg").read_text()[:2000]
    runs = {r["strategy"]["name"]: r for r in json.loads(js.read_text())}
    assert sorted(runs) == sorted(names)
    for name, r in runs.items():
        check_counters(name, r)
    assert not list(Path(udp_ferry.export).glob("rpc-bench*")), "the bench left files behind"


def check_counters(name: str, r: dict[str, Any]) -> None:
    s, st, size = r["strategy"], r["stats"], r["bytes"]
    assert r["error"] is None and size > 0, (name, r["error"])
    moved = st["bytes_sent"] if s["op"] == "write" else st["bytes_received"]
    assert moved >= size, (name, st)  # the data crossed the wire at least once
    assert st["calls"] >= size // s["size"] and st["replies"] == st["calls"], (name, st)
    assert 1 <= st["max_in_flight"] <= s["window"], (name, st)
    kinds = [e[1] for e in r["events"]]
    assert kinds.count("call") == st["calls"] and kinds.count("reply") == st["replies"], name
    assert kinds.count("timeout") == st["timeouts"], name
    resent = st["retransmissions"] + st["resent_on_reconnect"]
    assert kinds.count("resend") == resent, name
    assert (st["retransmitted_bytes"] > 0) == (resent > 0), (name, st)
    if s["policy"] == "selective":
        assert st["retransmissions"] == st["timeouts"], (name, st)  # one resend per timeout
    else:
        assert st["retransmissions"] >= st["timeouts"], (name, st)
    if s["transport"] == "tcp":
        assert st["timeouts"] == 0, (name, st)  # TCP recovers loss itself: timers never fire
        assert st["reconnects"] <= r["link"]["cuts"], (name, st, r["link"])  # each from a cut
    if not s["lossy"]:
        assert r["link"]["dropped"] == r["link"]["cuts"] == r["link"]["stalls"] == 0, name
    elif s["transport"] == "udp":  # 5% loss on every datagram: some were lost and resent
        assert r["link"]["dropped"] > 0 and st["retransmissions"] > 0, (name, st, r["link"])

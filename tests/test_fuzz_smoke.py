"""A short, bounded run of every fuzz target (fuzz/), so `make test` catches regressions.

Each target runs under atheris in its own subprocess (libFuzzer exits the process on a
crash), all at once, for at most FUZZ_SMOKE_SECONDS (default 5) or FUZZ_SMOKE_RUNS inputs.
The same targets are also driven by hypothesis (a different generator, and the whole
check where atheris has no wheel).
Long runs: `make fuzz` (docs/fuzzing.md).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fuzz.run import TARGET_NAMES  # noqa: E402
from fuzz.targets import TARGETS  # noqa: E402

SECONDS = int(os.environ.get("FUZZ_SMOKE_SECONDS", "5"))
RUNS = int(os.environ.get("FUZZ_SMOKE_RUNS", "20000"))
HAVE_ATHERIS = (
    importlib.util.find_spec("atheris") is not None
    and os.environ.get("FUZZ_SMOKE_ENGINE", "atheris") == "atheris"
)


def test_every_target_is_run() -> None:
    assert set(TARGET_NAMES) == set(TARGETS)


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_seed_corpus_passes(name: str) -> None:
    seeds = sorted((ROOT / "fuzz" / "corpus" / name).iterdir())
    assert seeds, f"no seeds for {name}: run python fuzz/make_corpus.py"
    for seed in seeds:
        TARGETS[name](seed.read_bytes())


@pytest.fixture(scope="module")
def atheris_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple]]:
    """Start every target at once; each test waits for its own."""
    base = tmp_path_factory.mktemp("fuzz")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    runs = {}
    for name in TARGET_NAMES:
        work = base / name
        work.mkdir()
        cmd = [
            sys.executable,
            str(ROOT / "fuzz" / "run.py"),
            name,
            f"-runs={RUNS}",
            f"-max_total_time={SECONDS}",
            f"-seed={os.environ.get('FUZZ_SEED', '1')}",
            "-timeout=20",
            "-rss_limit_mb=2048",
            f"-artifact_prefix={work}/",
            str(work),
            str(ROOT / "fuzz" / "corpus" / name),
        ]
        log = (work / "log").open("w+")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        runs[name] = (proc, log, work)
    yield runs
    for proc, log, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.skipif(not HAVE_ATHERIS, reason="atheris not installed (hypothesis runs instead)")
@pytest.mark.parametrize("name", TARGET_NAMES)
def test_atheris_smoke(name: str, atheris_runs: dict[str, tuple]) -> None:
    proc, log, work = atheris_runs[name]
    try:
        code = proc.wait(timeout=SECONDS * 6 + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{name}: the fuzzer did not stop")
    log.seek(0)
    output = log.read()
    if code != 0:
        crashes = [
            p.name for p in work.iterdir() if p.name.startswith(("crash-", "oom-", "timeout-"))
        ]
        pytest.fail(f"{name}: fuzzer exit {code}, inputs {crashes} in {work}\n{output[-4000:]}")
    assert "Done" in output, output[-2000:]


def _mutants(seed: bytes) -> st.SearchStrategy[bytes]:
    """A seed with some bytes flipped (XOR with a drawn mask) and maybe cut short."""
    mask = st.binary(min_size=len(seed), max_size=len(seed))
    cut = st.integers(min_value=0, max_value=len(seed))
    return st.tuples(mask, cut).map(
        lambda mc: bytes(a ^ b for a, b in zip(seed, mc[0], strict=True))[: mc[1] or None]
    )


@pytest.mark.parametrize("name", TARGET_NAMES)
def test_hypothesis_smoke(name: str) -> None:
    target = TARGETS[name]
    seeds = [p.read_bytes() for p in sorted((ROOT / "fuzz" / "corpus" / name).iterdir())]
    inputs = st.one_of(st.binary(max_size=2048), st.sampled_from(seeds).flatmap(_mutants))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(inputs)
    def run(data: bytes) -> None:
        target(data)

    run()

"""Run fuzz targets under atheris (libFuzzer), one or all of them.

    python fuzz/run.py TARGET [libFuzzer options and corpus dirs]   # one target, as libFuzzer
    python fuzz/run.py --all [--seconds N] [--workdir DIR]          # each target for N/6 s
    python fuzz/run.py --replay TARGET FILE...                      # run inputs, no atheris

A single-target run is a plain libFuzzer run (``-runs=N``, ``-max_total_time=S``,
``-seed=N`` ...). ``--all`` runs every target in a subprocess with its seed corpus
(fuzz/corpus/TARGET, read only) and a working corpus under the work dir, prints the
executions each reached, and exits non-zero if any found a crash (saved under
WORKDIR/artifacts/).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for path in (str(ROOT), str(ROOT / "src")):
    if path not in sys.path:
        sys.path.insert(0, path)

TARGET_NAMES = ("record", "rpc_header", "nfs3_args", "mount_args", "pmap_args", "dispatch")
DEFAULT_OPTIONS = ("-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1")


def _fuzz_one(name: str, argv: list[str]) -> None:
    import atheris

    with atheris.instrument_imports(include=["ferry"]):
        import ferry.nfs3.procedures
        import ferry.server.app  # noqa: F401  (the modules under test, instrumented)

    from fuzz.targets import TARGETS

    atheris.Setup([sys.argv[0], *argv], TARGETS[name])
    atheris.Fuzz()


def _replay(name: str, files: list[str]) -> int:
    from fuzz.targets import TARGETS

    for f in files:
        TARGETS[name](Path(f).read_bytes())
        print(f"{f}: ok")
    return 0


_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_EXECS = re.compile(r"stat::number_of_executed_units:\s*(\d+)")


def run_all(seconds: int, workdir: Path, names: list[str]) -> int:
    """Every target in turn for its share of ``seconds``; returns the number that crashed."""
    share = max(1, seconds // len(names))
    failed = 0
    for name in names:
        corpus = workdir / "corpus" / name
        corpus.mkdir(parents=True, exist_ok=True)
        artifacts = workdir / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            name,
            *DEFAULT_OPTIONS,
            f"-max_total_time={share}",
            f"-artifact_prefix={artifacts}/{name}-",
            str(corpus),
            str(HERE / "corpus" / name),
        ]
        start = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        took = time.monotonic() - start
        log = workdir / f"{name}.log"
        log.write_text(proc.stderr)
        m = _EXECS.search(proc.stderr) or _DONE.search(proc.stderr)
        execs = m.group(1) if m else "?"
        verdict = "ok" if proc.returncode == 0 else f"CRASH (exit {proc.returncode}, see {log})"
        print(f"{name:12} {execs:>10} execs in {took:6.0f} s  {verdict}", flush=True)
        failed += proc.returncode != 0
    return failed


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in TARGET_NAMES:
        _fuzz_one(sys.argv[1], sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--all", action="store_true", help="run every target")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 600)))
    parser.add_argument("--workdir", type=Path, default=ROOT / "build" / "fuzz")
    parser.add_argument("--targets", default=",".join(TARGET_NAMES))
    parser.add_argument("--replay", nargs="+", metavar=("TARGET", "FILE"))
    args = parser.parse_args()
    if args.replay:
        return _replay(args.replay[0], args.replay[1:])
    if not args.all:
        parser.error(f"give a target ({', '.join(TARGET_NAMES)}), --all or --replay")
    return 1 if run_all(args.seconds, args.workdir, args.targets.split(",")) else 0


if __name__ == "__main__":
    sys.exit(main())

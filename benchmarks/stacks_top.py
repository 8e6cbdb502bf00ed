#!/usr/bin/env python3
"""Summarise a ``py-spy record --format raw --threads`` profile: where the samples fall per
thread group, and the functions with the most samples, their own (self) and with what they
call (inclusive), as percentages of all samples.

    py-spy record -p PID -d 10 -r 250 --threads --format raw -o prof.raw [--gil] [--idle]
    python benchmarks/stacks_top.py prof.raw [--top 20] [--under FUNCTION]

Threads are grouped by name without their number (``ferry-call-3`` counts as
``ferry-call``); ``--under`` keeps only the stacks that pass through FUNCTION (a substring
of the frame), to split one subtree (``Dispatcher._handle``, say) into its parts.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

_LINE = re.compile(r"^thread \((?P<tid>[^)]*)\): (?P<rest>.*) (?P<count>\d+)$")


def frame_name(frame: str) -> str:
    """``Dispatcher._handle (ferry/rpc/dispatch.py:172)`` -> the same without the line."""
    return re.sub(r":\d+\)$", ")", frame.strip())


def parse(path: Path, under: str | None) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """(samples per thread group, self samples per function, inclusive ones, total)."""
    groups: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        frames = m.group("rest").split(";")
        thread, stack = frames[0], [frame_name(f) for f in frames[1:]]
        if under is not None:
            at = next((i for i, f in enumerate(stack) if under in f), None)
            if at is None:
                continue
            stack = stack[at:]
        n = int(m.group("count"))
        total += n
        groups[re.sub(r"[-_]?\d+$", "", thread.strip())] += n
        if stack:
            own[stack[-1]] += n
            for f in set(stack):
                inclusive[f] += n
    return groups, own, inclusive, total


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("raw", type=Path)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--under", help="only stacks through this frame (substring)")
    args = p.parse_args()
    groups, own, inclusive, total = parse(args.raw, args.under)
    if not total:
        print("no samples", file=sys.stderr)
        return 1
    print(f"{total} samples" + (f" under {args.under}" if args.under else ""))
    print("\nthreads:")
    for name, n in groups.most_common():
        print(f"  {n / total:6.1%}  {name}")
    for title, counts in (("self", own), ("inclusive", inclusive)):
        print(f"\n{title}:")
        for name, n in counts.most_common(args.top):
            print(f"  {n / total:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

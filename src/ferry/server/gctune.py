"""The cyclic garbage collector's settings for a server process (``launch.serve``).

CPython's collector looks at its youngest objects every 700 allocations not yet freed,
at older ones every tenth time, and at every tracked object in the process every hundredth
(when enough new ones have survived). A directory's first listing of 50,000 entries makes
some 300,000 objects that stay (its entries, names, cookies, the file id map's locations),
so it pays for hundreds of young and several whole-process collections on its reply path:
about 40-50 ms of the 500 ms of server CPU it took. Ferry's hot paths make few reference
cycles, so collecting a tenth as often keeps little garbage longer; and what start-up made
(modules, the app) is frozen out of every collection, which also keeps those pages shared
between forked workers instead of touched by each one's collector.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 10, 10)
"""gc.set_threshold: the youngest generation every 10,000 net allocations (not 700)."""


def tune_gc() -> None:
    """Collect less often (call once, before serving)."""
    gc.set_threshold(*THRESHOLDS)


def freeze_startup() -> None:
    """Keep what exists now out of later collections (call after start-up, before forks)."""
    gc.collect()
    gc.freeze()

"""gctune: the collector settings ``launch.serve`` gives a server process."""

from __future__ import annotations

import gc

from ferry.server.gctune import THRESHOLDS, freeze_startup, tune_gc


def test_tune_and_freeze_then_restore() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == THRESHOLDS
        freeze_startup()
        assert gc.get_freeze_count() > 0  # start-up objects are out of later collections
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

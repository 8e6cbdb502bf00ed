"""WorkPool (threads replaced when their job blocks) and Deadline (bounded store calls, one
stuck call per object)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from ferry.backends._deadline import Deadline
from ferry.nfs3.const import Nfsstat3
from ferry.testing import raises_status
from ferry.workpool import WorkPool


def wait_for(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_blocked_jobs_do_not_starve_new_ones() -> None:
    pool = WorkPool(2, limit=6, stall=0.2, name="t-starve")
    release = threading.Event()
    try:
        for _ in range(2):
            pool.submit(release.wait)
        done = threading.Event()
        t0 = time.monotonic()
        pool.submit(done.set)
        assert done.wait(3.0), "the third job never ran"
        assert 0.15 < time.monotonic() - t0 < 2.0  # after the stall, not after the release
        assert pool.replaced >= 1
    finally:
        release.set()
    # the stuck threads exit once their jobs return: back to the pool's size
    assert wait_for(lambda: pool.threads == 2), pool.threads
    pool.shutdown()
    assert wait_for(lambda: pool.threads == 0)


def test_a_pool_never_grows_past_its_limit() -> None:
    pool = WorkPool(1, limit=3, stall=0.05, name="t-limit")
    release = threading.Event()
    ran = []
    try:
        for i in range(6):
            pool.submit(lambda i=i: (ran.append(i), release.wait()))  # type: ignore[misc]
        time.sleep(0.6)
        assert pool.threads == 3 and len(ran) == 3
    finally:
        release.set()
    assert wait_for(lambda: len(ran) == 6)
    pool.shutdown()


def test_busy_but_healthy_jobs_are_not_replaced() -> None:
    pool = WorkPool(4, stall=0.5, name="t-busy")
    done = threading.Semaphore(0)
    for _ in range(200):
        pool.submit(lambda: (time.sleep(0.001), done.release()))
    for _ in range(200):
        assert done.acquire(timeout=5)
    assert pool.replaced == 0 and pool.threads == 4
    pool.shutdown()


def test_a_failing_job_is_logged_and_the_thread_lives_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ferry.workpool")
    pool = WorkPool(1, name="t-fail")
    ok = threading.Event()
    pool.submit(lambda: 1 / 0)
    pool.submit(ok.set)
    assert ok.wait(2)
    assert "job failed" in caplog.text
    pool.shutdown()


def test_deadline_answers_jukebox_and_holds_off_calls_on_a_stuck_object() -> None:
    d = Deadline(0.3, workers=2, name="t-store")
    release = threading.Event()
    try:
        with raises_status(Nfsstat3.JUKEBOX):
            d.run(release.wait, key=("data", 7))
        assert d.stuck == 1
        t0 = time.monotonic()
        with raises_status(Nfsstat3.JUKEBOX):  # at once: no second thread stuck on it
            d.run(lambda: "never", key=("data", 7))
        assert time.monotonic() - t0 < 0.1
        assert d.run(lambda: "other file", key=("data", 8)) == "other file"
        assert d.run(lambda: "metadata", key=("meta", 7)) == "metadata"
    finally:
        release.set()
    assert wait_for(lambda: d.stuck == 0)
    assert d.run(lambda: "again", key=("data", 7)) == "again"
    d.close()
    assert d.run(lambda: "inline") == "inline"  # after close, calls run in the caller


def test_deadline_without_timeout_runs_in_the_caller() -> None:
    d = Deadline(0)
    assert d.run(threading.get_ident) == threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        d.run(lambda: 1 / 0)


def test_inline_calls_run_in_the_caller_until_one_is_slow(caplog: pytest.LogCaptureFixture) -> None:
    """Inline calls skip the worker hop while the store answers promptly; one that runs
    past ``trip`` makes the store suspect, and calls go through the bounded workers."""
    caplog.set_level(logging.INFO, logger="ferry.backends")
    d = Deadline(0.5, workers=2, name="t-inline", trip=0.2, quiet=60)
    me = threading.get_ident()
    assert d.run(threading.get_ident, key=("meta", 1), inline=True) == me
    assert d.run(threading.get_ident, key=("meta", 1)) != me  # not inline: a worker
    assert d.run(lambda: time.sleep(0.6) or "slow but done", inline=True) == "slow but done"
    assert time.monotonic() < d.suspect_until  # the watcher saw it run past trip
    assert d.run(threading.get_ident, inline=True) != me  # bounded now
    release = threading.Event()
    with raises_status(Nfsstat3.JUKEBOX):
        d.run(release.wait, key=("meta", 2), inline=True)
    release.set()
    assert "every call is bounded" in caplog.text
    d.close()


def test_shutdown_runs_the_jobs_still_queued() -> None:
    pool = WorkPool(1, stall=60, name="t-drain")
    release, ran = threading.Event(), []
    pool.submit(release.wait)
    for i in range(3):
        pool.submit(lambda i=i: ran.append(i))  # type: ignore[misc]
    release.set()
    pool.shutdown(timeout=5)
    assert ran == [0, 1, 2] and pool.threads == 0


def test_jobs_submitted_from_many_threads_all_run_once() -> None:
    """Hand-offs to parked threads and to the queue race with threads parking."""
    pool = WorkPool(3, name="t-many")
    ran: list[int] = []
    done = threading.Semaphore(0)

    def submitter(base: int) -> None:
        for i in range(500):
            pool.submit(lambda n=base + i: (ran.append(n), done.release()))  # type: ignore[misc]

    threads = [threading.Thread(target=submitter, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for _ in range(2000):
        assert done.acquire(timeout=5)
    assert sorted(ran) == [k * 1000 + i for k in range(4) for i in range(500)]
    assert pool.threads == 3
    pool.shutdown()

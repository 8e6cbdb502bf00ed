"""What only the shared duplicate request cache does: one table for every process forked
after it was made, one lock across processes, IN_PROGRESS owned by a process (dropped
while it lives, run again once it died), fixed memory. Its plain cache behaviour (hit,
LRU, age, checksum) is tested with the in-process cache's tests in ``test_udp_drc.py``.
Child processes are forked; every wait is bounded.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ferry.nfs3.const import NFS_PROGRAM
from ferry.rpc.auth import encode_auth_sys
from ferry.rpc.drc import Key, Lookup, call_key
from ferry.rpc.message import NULL_AUTH, CallHeader
from ferry.server.shared_drc import REPLY_MAX, SLOT, SharedReplyCache

CTX = mp.get_context("fork")


def key(xid: int) -> Key:
    header = CallHeader(xid, 2, NFS_PROGRAM, 3, 12, encode_auth_sys(0, 0), NULL_AUTH)
    return call_key("tcp", ("127.0.0.1",), header, xid.to_bytes(4, "big") * 20)


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[SharedReplyCache]:
    c = SharedReplyCache([], tmp_path / "drc.lock")
    yield c
    c.close()


def in_child(body: Callable[[], None]) -> None:
    """Run ``body`` in a forked child; fail unless it exits cleanly within 30 s."""
    child = CTX.Process(target=body)
    child.start()
    child.join(30)
    assert child.exitcode == 0, f"child exit code {child.exitcode}"


def test_a_reply_kept_by_one_process_is_replayed_in_another(cache: SharedReplyCache) -> None:
    def run_call() -> None:
        assert cache.begin(key(1))[0] is Lookup.NEW
        cache.finish(key(1), b"the reply")

    in_child(run_call)
    assert cache.begin(key(1)) == (Lookup.HIT, b"the reply")
    in_child(lambda: None if cache.begin(key(1)) == (Lookup.HIT, b"the reply") else exit(1))
    assert (cache.stats.hits, cache.stats.misses) == (2, 1)


def test_a_call_running_in_another_process_is_dropped_until_that_process_dies(
    cache: SharedReplyCache,
) -> None:
    started = CTX.Event()

    def run_forever() -> None:
        cache.begin(key(2))
        started.set()
        time.sleep(60)

    child = CTX.Process(target=run_forever)
    child.start()
    try:
        assert started.wait(30)
        assert cache.begin(key(2)) == (Lookup.IN_PROGRESS, None)
    finally:
        child.kill()
        child.join(30)
    assert cache.begin(key(2)) == (Lookup.NEW, None)  # its worker died mid-call: run it


def test_processes_racing_on_the_same_calls_run_each_once(cache: SharedReplyCache) -> None:
    """(Calls are finished: one left running by a process that has exited is an orphan,
    and runs again, as a call of a worker that crashed must.)"""
    keys = [key(i) for i in range(300)]
    results: mp.Queue[list[int]] = CTX.Queue()

    def race() -> None:
        news: list[int] = []
        lock = threading.Lock()

        def thread() -> None:
            mine = []
            for i, k in enumerate(keys):
                if cache.begin(k)[0] is Lookup.NEW:
                    cache.finish(k, b"reply")  # as a worker does before it could exit
                    mine.append(i)
            with lock:
                news.extend(mine)

        threads = [threading.Thread(target=thread) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        results.put(news)

    children = [CTX.Process(target=race) for _ in range(4)]
    for c in children:
        c.start()
    news = [i for _ in children for i in results.get(timeout=60)]
    for c in children:
        c.join(30)
    assert collections.Counter(news) == {i: 1 for i in range(len(keys))}


def test_the_lock_excludes_other_processes(cache: SharedReplyCache) -> None:
    """A child holds the lock, then notes that it let go; the parent, waiting for the
    lock meanwhile, must see the note (with the parent's descriptor inherited instead of
    the child's own, both would hold the lock at once)."""
    holding = CTX.Event()
    released = CTX.Value("i", 0)

    def hold() -> None:
        cache._lock()
        holding.set()
        time.sleep(0.3)
        released.value = 1
        cache._unlock()

    child = CTX.Process(target=hold)
    child.start()
    try:
        assert holding.wait(30)
        assert cache.stats.misses == 0  # takes the lock
        assert released.value == 1
    finally:
        child.join(30)


def test_memory_is_fixed_by_entries_and_bytes(tmp_path: Path) -> None:
    cache = SharedReplyCache([], tmp_path / "l", max_entries=10_000, max_bytes=64 * SLOT)
    try:
        assert cache.sets * cache.ways == 64
        for i in range(1000):
            cache.begin(key(i))
            cache.finish(key(i), b"r" * 200)
        assert len(cache) == 64
        assert cache.stats.evictions == 1000 - 64
        assert cache.begin(key(999)) == (Lookup.HIT, b"r" * 200)  # the newest is kept
    finally:
        cache.close()


def test_a_reply_too_large_for_a_slot_is_not_kept(cache: SharedReplyCache) -> None:
    cache.begin(key(1))
    cache.finish(key(1), bytes(REPLY_MAX))
    assert cache.begin(key(1)) == (Lookup.HIT, bytes(REPLY_MAX))
    cache.begin(key(2))
    cache.finish(key(2), bytes(REPLY_MAX + 1))
    assert cache.begin(key(2)) == (Lookup.NEW, None)


def test_abandoned_calls_run_again_in_any_process(cache: SharedReplyCache) -> None:
    cache.begin(key(5))
    cache.abandon(key(5))
    in_child(lambda: None if cache.begin(key(5))[0] is Lookup.NEW else exit(1))


def test_a_victim_is_expired_then_least_recent_never_a_running_call(tmp_path: Path) -> None:
    """One set of 8 ways: a new call takes an expired slot first, else the least recently
    used, but never the slot of a call still running in a live process (its copies must
    keep being dropped), even when that call is the least recently used."""
    now = [1000.0]
    cache = SharedReplyCache([], tmp_path / "l", max_entries=8, max_age=60, clock=lambda: now[0])
    try:
        assert (cache.sets, cache.ways) == (1, 8)
        cache.begin(key(0))  # runs on: the least recently used slot from here on
        for i in range(1, 8):
            cache.begin(key(i))
            cache.finish(key(i), b"done %d" % i)
        cache.begin(key(1))  # a replay: 1 is now more recent than 2
        cache.begin(key(8))
        assert cache.stats.evictions == 1
        assert cache.begin(key(0)) == (Lookup.IN_PROGRESS, None)
        assert cache.begin(key(2)) == (Lookup.NEW, None)  # 2 was the LRU finished call
        assert cache.begin(key(1)) == (Lookup.HIT, b"done 1")
        now[0] += 30
        cache.finish(key(8), b"done 8")  # kept 30 s later than the others
        now[0] += 31  # all but 8 (and 2, begun again) expired
        cache.begin(key(9))
        assert cache.stats.expired == 1
        assert cache.begin(key(8)) == (Lookup.HIT, b"done 8")
    finally:
        cache.close()

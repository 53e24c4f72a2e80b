"""Listing: newest first, keyset pages, every thread exactly once."""

from __future__ import annotations

from typing import Any

import pytest

from agents_persistence import AgentStateSnapshot, InvalidArgumentError, InvalidCursorError

from ..support import FakeClock


def test_newest_update_first(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(clock=clock)
    for name in ("a", "b", "c"):
        clock.advance(1)
        cp.save_state(name, AgentStateSnapshot())
    clock.advance(1)
    cp.save_state("a", AgentStateSnapshot())
    page = cp.list_threads()
    assert [t.thread_id for t in page.threads] == ["a", "c", "b"]
    assert page.next_cursor is None
    assert page.threads[0].version == 2
    assert page.threads[0].updated_at == clock()


def test_same_timestamp_is_ordered_by_thread_id(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(clock=clock)
    for name in ("m", "z", "a", "q"):
        cp.save_state(name, AgentStateSnapshot())
    ids = [t.thread_id for t in cp.iter_threads(page_size=1)]
    assert ids == ["z", "q", "m", "a"]


@pytest.mark.slow
def test_thousand_threads_each_listed_exactly_once(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(clock=clock)
    expected = []
    for n in range(1000):
        if n % 3 == 0:
            clock.advance(0.001)  # runs of equal timestamps exercise the tie-break
        cp.save_state(f"thread-{n:04d}", AgentStateSnapshot())
        expected.append(f"thread-{n:04d}")
    everything = [t.thread_id for t in cp.iter_threads(page_size=1000)]
    assert sorted(everything) == expected
    assert len(everything) == len(set(everything)) == 1000
    updated = [t.updated_at for t in cp.iter_threads(page_size=250)]
    assert updated == sorted(updated, reverse=True)
    for limit in (1, 7, 100):
        seen: list[str] = []
        cursor = None
        while True:
            page = cp.list_threads(limit=limit, cursor=cursor)
            assert len(page.threads) <= limit
            seen.extend(t.thread_id for t in page.threads)
            if page.next_cursor is None or (limit == 1 and len(seen) >= 50):
                break
            cursor = page.next_cursor
        # one thread a page through all 1000 would be slow on remote stores: the first 50 suffice
        assert seen == everything[: len(seen)]
        assert len(seen) == (50 if limit == 1 else 1000)


def test_updates_during_iteration_do_not_repeat_threads(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(clock=clock)
    for n in range(20):
        clock.advance(1)
        cp.save_state(f"t{n:02d}", AgentStateSnapshot())
    seen = []
    for info in cp.iter_threads(page_size=3):
        seen.append(info.thread_id)
        clock.advance(1)
        cp.save_state(info.thread_id, AgentStateSnapshot())  # moves it to the front
    assert len(seen) == len(set(seen)) == 20


def test_deleted_threads_leave_the_listing(cp: Any) -> None:
    for n in range(5):
        cp.save_state(f"t{n}", AgentStateSnapshot())
    cp.delete_thread("t2")
    assert sorted(t.thread_id for t in cp.iter_threads()) == ["t0", "t1", "t3", "t4"]


@pytest.mark.parametrize("limit", [0, -1, 1001, 2.5, "10", True])
def test_bad_limit_is_refused(cp: Any, limit: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        cp.list_threads(limit=limit)


@pytest.mark.parametrize("cursor", ["", "not a cursor", "eyJ4Ijoy", 42])
def test_bad_cursor_is_refused(cp: Any, cursor: Any) -> None:
    with pytest.raises(InvalidCursorError):
        cp.list_threads(cursor=cursor)

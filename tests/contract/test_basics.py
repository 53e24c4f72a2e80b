"""Missing threads, deletes, versions and expected_version, metadata, namespaces, life cycle."""

from __future__ import annotations

from datetime import UTC, timedelta
from typing import Any

import pytest

from agents_persistence import AgentStateSnapshot, CheckpointerError, ConflictError, TodoItem

from ..support import FakeClock
from .states import rich_state


def state(n: int) -> AgentStateSnapshot:
    return AgentStateSnapshot(todos=[TodoItem(content=f"step {n}")], scratchpad={"n": n})


def test_missing_thread_loads_as_none(cp: Any) -> None:
    assert cp.load_state("nope") is None
    assert cp.load_checkpoint("nope") is None


def test_delete_returns_true_once_then_false(cp: Any) -> None:
    cp.save_state("t", state(1))
    assert cp.delete_thread("t") is True
    assert cp.delete_thread("t") is False
    assert cp.load_state("t") is None
    assert cp.delete_thread("never-existed") is False


def test_versions_start_at_one_and_add_one(cp: Any) -> None:
    infos = [cp.save_state("t", state(n)) for n in range(1, 6)]
    assert [i.version for i in infos] == [1, 2, 3, 4, 5]
    checkpoint = cp.load_checkpoint("t")
    assert checkpoint.info.version == 5
    assert checkpoint.state == state(5)


def test_save_after_delete_starts_again(cp: Any) -> None:
    cp.save_state("t", state(1))
    cp.save_state("t", state(2))
    cp.delete_thread("t")
    assert cp.save_state("t", state(3), expected_version=0).version == 1


def test_metadata_follows_the_clock(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(clock=clock)
    first = cp.save_state("t", state(1))
    assert first.created_at == first.updated_at == clock()
    assert first.created_at.tzinfo is not None
    assert first.created_at.utcoffset() == timedelta(0)
    assert first.expires_at is None
    clock.advance(1.5)
    second = cp.save_state("t", state(2))
    assert second.created_at == first.created_at
    assert second.updated_at == clock() == first.updated_at + timedelta(seconds=1.5)
    assert second.size == len(state(2).model_dump_json().encode())
    loaded = cp.load_checkpoint("t").info
    assert loaded == second
    assert loaded.updated_at.astimezone(UTC) == second.updated_at


def test_timestamps_keep_microseconds(harness: Any) -> None:
    clock = FakeClock()
    clock.advance(0.000123)
    cp = harness.make(clock=clock)
    info = cp.save_state("t", state(1))
    assert cp.load_checkpoint("t").info.updated_at == info.updated_at == clock()
    assert info.updated_at.microsecond == clock().microsecond


def test_expected_version_zero_creates_only(cp: Any) -> None:
    assert cp.save_state("t", state(1), expected_version=0).version == 1
    with pytest.raises(ConflictError) as caught:
        cp.save_state("t", state(2), expected_version=0)
    assert (caught.value.thread_id, caught.value.expected, caught.value.actual) == ("t", 0, 1)
    assert cp.load_state("t") == state(1)


def test_expected_version_match_writes(cp: Any) -> None:
    cp.save_state("t", state(1))
    assert cp.save_state("t", state(2), expected_version=1).version == 2
    assert cp.save_state("t", state(3), expected_version=2).version == 3
    assert cp.load_state("t") == state(3)


def test_expected_version_mismatch_writes_nothing(cp: Any) -> None:
    cp.save_state("t", state(1))
    cp.save_state("t", state(2))
    before = cp.load_checkpoint("t")
    for wrong in (1, 3, 7):
        with pytest.raises(ConflictError) as caught:
            cp.save_state("t", state(99), expected_version=wrong)
        assert caught.value.expected == wrong
        assert caught.value.actual == 2
    assert cp.load_checkpoint("t") == before


def test_expected_version_on_missing_thread_conflicts(cp: Any) -> None:
    with pytest.raises(ConflictError) as caught:
        cp.save_state("ghost", state(1), expected_version=3)
    assert caught.value.actual is None
    assert cp.load_state("ghost") is None


def test_conflict_error_is_a_checkpointer_error(cp: Any) -> None:
    cp.save_state("t", state(1))
    with pytest.raises(CheckpointerError):
        cp.save_state("t", state(2), expected_version=5)


def test_namespaces_never_see_each_other(harness: Any) -> None:
    a = harness.make(namespace=harness.namespace + "-a")
    b = harness.make(namespace=harness.namespace + "-b")
    a.save_state("shared", state(1))
    a.save_state("only-a", state(2))
    assert b.load_state("shared") is None
    assert b.list_threads().threads == []
    assert b.delete_thread("shared") is False
    assert b.save_state("shared", state(10), expected_version=0).version == 1
    assert a.load_state("shared") == state(1)
    assert b.load_state("shared") == state(10)
    assert b.purge_expired() == 0
    assert {t.thread_id for t in a.iter_threads()} == {"shared", "only-a"}
    assert [t.thread_id for t in b.iter_threads()] == ["shared"]


def test_restore_keeps_version_and_timestamps(harness: Any) -> None:
    clock = FakeClock()
    source = harness.make(namespace=harness.namespace + "-src", clock=clock)
    target = harness.make(namespace=harness.namespace + "-dst")
    for n in range(3):
        clock.advance(1)
        info = source.save_state("t", rich_state(str(n)))
    restored = target.restore_checkpoint("t", rich_state("2"), info, expected_version=0)
    assert restored == info
    assert target.load_checkpoint("t").info == info
    assert target.load_state("t") == rich_state("2")
    with pytest.raises(ConflictError):
        target.restore_checkpoint("t", rich_state("2"), info, expected_version=0)
    assert target.save_state("t", state(4)).version == 4


def test_closed_checkpointer_refuses_work(harness: Any) -> None:
    cp = harness.make()
    cp.save_state("t", state(1))
    cp.close()
    cp.close()  # idempotent
    with pytest.raises(CheckpointerError):
        cp.load_state("t")

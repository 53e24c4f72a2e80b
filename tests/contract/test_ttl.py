"""TTL: an expired thread is gone for every read at once; purge removes it physically."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from agents_persistence import AgentStateSnapshot, ConfigurationError

from ..support import FakeClock

TTL = 60


def test_save_sets_expiry(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(ttl=TTL, clock=clock)
    info = cp.save_state("t", AgentStateSnapshot())
    assert cp.ttl == timedelta(seconds=TTL)
    assert info.expires_at == clock() + timedelta(seconds=TTL)
    clock.advance(10)
    again = cp.save_state("t", AgentStateSnapshot())
    assert again.expires_at == clock() + timedelta(seconds=TTL)
    assert cp.load_checkpoint("t").info.expires_at == again.expires_at


def test_expired_thread_is_invisible_at_once(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(ttl=TTL, clock=clock)
    cp.save_state("old", AgentStateSnapshot(scratchpad={"v": 1}))
    clock.advance(TTL / 2)
    cp.save_state("young", AgentStateSnapshot())
    clock.advance(TTL / 2 + 0.001)
    assert cp.load_state("old") is None
    assert cp.load_checkpoint("old") is None
    assert [t.thread_id for t in cp.list_threads().threads] == ["young"]
    assert [t.thread_id for t in cp.iter_threads(page_size=1)] == ["young"]
    assert cp.delete_thread("old") is False
    assert cp.load_state("young") is not None


def test_expiry_is_exclusive_at_the_boundary(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(ttl=TTL, clock=clock)
    cp.save_state("t", AgentStateSnapshot())
    clock.advance(TTL - 0.001)
    assert cp.load_state("t") is not None
    clock.advance(0.001)
    assert cp.load_state("t") is None


def test_save_over_expired_thread_starts_fresh(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(ttl=TTL, clock=clock)
    cp.save_state("t", AgentStateSnapshot())
    cp.save_state("t", AgentStateSnapshot())
    clock.advance(TTL + 1)
    info = cp.save_state("t", AgentStateSnapshot(scratchpad={"new": True}), expected_version=0)
    assert info.version == 1
    assert info.created_at == clock()
    assert cp.load_state("t") == AgentStateSnapshot(scratchpad={"new": True})


def test_purge_removes_expired_threads_physically(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(ttl=TTL, clock=clock)
    for n in range(5):
        cp.save_state(f"old-{n}", AgentStateSnapshot())
    clock.advance(TTL - 1)
    cp.save_state("young", AgentStateSnapshot())
    clock.advance(2)
    assert harness.kit.stored_count(harness.namespace) == 6
    assert cp.purge_expired() == 5
    assert harness.kit.stored_count(harness.namespace) == 1
    assert cp.purge_expired() == 0
    assert cp.load_state("young") is not None


def test_no_ttl_keeps_forever(harness: Any) -> None:
    clock = FakeClock()
    cp = harness.make(clock=clock)
    info = cp.save_state("t", AgentStateSnapshot())
    clock.advance(10 * 365 * 86400)
    assert info.expires_at is None
    assert cp.load_state("t") is not None
    assert cp.purge_expired() == 0


@pytest.mark.parametrize("ttl", [0, 0.5, -1, "60", True])
def test_invalid_ttl_is_refused(harness: Any, ttl: Any) -> None:
    with pytest.raises(ConfigurationError):
        harness.make(ttl=ttl)

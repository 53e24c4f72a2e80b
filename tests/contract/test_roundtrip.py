"""Round trips: what is saved is what is loaded, for rich, random, deep, large and empty states."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents_persistence import AgentStateSnapshot

from .states import THREAD_IDS, deep_json, rich_state, snapshots

_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def test_rich_state_round_trip(cp: Any) -> None:
    state = rich_state()
    info = cp.save_state("rich", state)
    checkpoint = cp.load_checkpoint("rich")
    assert checkpoint is not None
    assert checkpoint.state == state
    assert checkpoint.state.model_dump_json() == state.model_dump_json()
    assert checkpoint.info == info
    assert checkpoint.info.size == len(state.model_dump_json().encode())


def test_unknown_fields_survive(cp: Any) -> None:
    state = rich_state()
    cp.save_state("extra", state)
    loaded = cp.load_state("extra")
    assert loaded.model_extra == {"future_field": {"kept": [1, 2, 3]}}


def test_empty_state_round_trip(cp: Any) -> None:
    cp.save_state("empty", AgentStateSnapshot())
    assert cp.load_state("empty") == AgentStateSnapshot()


def test_deep_json_round_trip(cp: Any) -> None:
    state = AgentStateSnapshot(scratchpad={"deep": deep_json(60)})
    cp.save_state("deep", state)
    assert cp.load_state("deep") == state


def test_large_file_round_trip(cp: Any, harness: Any) -> None:
    size = harness.kit.large_state_bytes
    content = ("é" + "abcdefghij" * 9 + "\n") * (size // 102)
    state = AgentStateSnapshot(files={"big.txt": content})
    info = cp.save_state("large", state)
    assert info.size >= len(content)
    assert cp.load_state("large") == state


@_SETTINGS
@given(state=snapshots())
def test_random_states_round_trip(cp: Any, state: AgentStateSnapshot) -> None:
    cp.save_state("random", state)
    assert cp.load_state("random") == state


@_SETTINGS
@given(thread_id=THREAD_IDS)
def test_any_valid_thread_id_round_trips(cp: Any, thread_id: str) -> None:
    state = AgentStateSnapshot(scratchpad={"id": thread_id})
    cp.save_state(thread_id, state)
    assert cp.load_state(thread_id) == state
    assert cp.delete_thread(thread_id) is True


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))
@given(ids=st.sets(st.sampled_from(["a", "A", "a ", " a", "ä", "a\u0301"]), min_size=2))
def test_similar_thread_ids_are_distinct_threads(cp: Any, ids: set[str]) -> None:
    for thread_id in ids:
        cp.save_state(thread_id, AgentStateSnapshot(scratchpad={"id": thread_id}))
    for thread_id in ids:
        assert cp.load_state(thread_id).scratchpad == {"id": thread_id}
    for thread_id in ids:
        assert cp.delete_thread(thread_id) is True

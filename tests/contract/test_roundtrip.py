"""Round trips: what is saved is what is loaded, for rich, random, deep, large and empty states."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents_persistence import AgentStateSnapshot, CheckpointerError

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
    # JSON objects may come back in another key order (PostgreSQL's JSONB normalises it)
    assert json.loads(checkpoint.state.model_dump_json()) == json.loads(state.model_dump_json())
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
    # 25 levels under the scratchpad: MariaDB's JSON check stops at 32 levels in all
    state = AgentStateSnapshot(scratchpad={"deep": deep_json(25)})
    cp.save_state("deep", state)
    assert cp.load_state("deep") == state


def test_too_deep_json_is_stored_or_refused_never_mangled(cp: Any) -> None:
    old = AgentStateSnapshot(scratchpad={"v": 1})
    cp.save_state("deep", old)
    state = AgentStateSnapshot(scratchpad={"deep": deep_json(120)})
    try:
        cp.save_state("deep", state)
    except CheckpointerError:
        assert cp.load_checkpoint("deep").info.version == 1
        assert cp.load_state("deep") == old
    else:
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
    assert json_value(cp.load_state("random")) == json_value(state)


def json_value(state: AgentStateSnapshot) -> Any:
    """The state as a JSON value in which numbers compare as JSON numbers.

    JSON has one number type: PostgreSQL's JSONB gives ``3.8e+16`` back as
    ``38000000000000000``, the same JSON number, which Python then reads as an int.
    """
    return json.loads(state.model_dump_json(), parse_float=Decimal, parse_int=Decimal)


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

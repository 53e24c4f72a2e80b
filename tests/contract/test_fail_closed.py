"""Fail closed at the door: a save either refuses (typed, nothing written) or is loadable.

What a load could not read back is refused by the save: nesting deeper than the JSON parser
accepts, NaN and infinities mutated into a state after validation, lone surrogates in dict keys
as in values, and versions outside what every store can hold.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents_persistence import (
    AgentStateSnapshot,
    CheckpointerError,
    InvalidArgumentError,
    InvalidStateError,
)
from agents_persistence._core import MAX_VERSION

from .states import deep_json
from .test_roundtrip import json_value

OLD = AgentStateSnapshot(scratchpad={"v": 1})


def _saved_old(cp: Any, thread_id: str) -> None:
    assert cp.save_state(thread_id, OLD).version == 1


def _old_intact(cp: Any, thread_id: str) -> None:
    checkpoint = cp.load_checkpoint(thread_id)
    assert checkpoint is not None
    assert checkpoint.info.version == 1
    assert checkpoint.state == OLD


@pytest.mark.parametrize("depth", [199, 250, 499])
def test_nesting_the_parser_refuses_is_refused_on_save(cp: Any, depth: int) -> None:
    _saved_old(cp, "deep")
    state = AgentStateSnapshot()
    state.scratchpad["deep"] = deep_json(depth)  # beyond what validation would build
    with pytest.raises(InvalidStateError, match=r"loaded back|cannot be encoded"):
        cp.save_state("deep", state)
    _old_intact(cp, "deep")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_mutated_in_are_refused(cp: Any, value: float) -> None:
    _saved_old(cp, "nan")
    state = AgentStateSnapshot()
    state.scratchpad["x"] = {"list": [1, value]}  # after validation, as an app would
    with pytest.raises(InvalidStateError):
        cp.save_state("nan", state)
    _old_intact(cp, "nan")


@pytest.mark.parametrize("large", [False, True], ids=["head", "pieces"])
@pytest.mark.parametrize("value", ["nan", "deep"])
def test_what_is_mutated_into_a_map_of_strings_is_refused(cp: Any, value: str, large: bool) -> None:
    # ``files`` maps strings to strings: while it holds only strings, the save does not parse
    # its JSON back (strings always read back). Anything else mutated in is parsed like the rest.
    _saved_old(cp, "files")
    state = AgentStateSnapshot(files={"a.py": "x" * (40_000 if large else 100)})
    state.files["b.py"] = math.nan if value == "nan" else deep_json(250)  # type: ignore[assignment]
    with pytest.warns(UserWarning, match="serializ"), pytest.raises(InvalidStateError):
        cp.save_state("files", state)
    _old_intact(cp, "files")


@pytest.mark.parametrize("where", ["key", "value"])
def test_lone_surrogates_are_refused_in_keys_and_values(cp: Any, where: str) -> None:
    _saved_old(cp, "surrogate")
    state = AgentStateSnapshot()
    if where == "key":
        state.scratchpad["k\ud800"] = 1
    else:
        state.scratchpad["k"] = "v\udfff"
    with pytest.raises(InvalidStateError):
        cp.save_state("surrogate", state)
    _old_intact(cp, "surrogate")


def test_a_replacement_character_of_its_own_is_kept(cp: Any) -> None:
    state = AgentStateSnapshot(scratchpad={"k\ufffd": "v\ufffd"})
    cp.save_state("fffd", state)
    assert cp.load_state("fffd") == state


@pytest.mark.parametrize("version", [-1, MAX_VERSION, 2**63, 2**64, 10**40])
def test_versions_outside_every_store_range_are_refused_before_io(cp: Any, version: int) -> None:
    _saved_old(cp, "range")
    with pytest.raises(InvalidArgumentError, match="expected_version"):
        cp.save_state("range", AgentStateSnapshot(), expected_version=version)
    _old_intact(cp, "range")


def test_the_largest_version_is_a_conflict_not_an_error(cp: Any) -> None:
    _saved_old(cp, "top")
    with pytest.raises(CheckpointerError) as caught:
        cp.save_state("top", AgentStateSnapshot(), expected_version=MAX_VERSION - 1)
    assert type(caught.value).__name__ == "ConflictError"
    _old_intact(cp, "top")


# JSON values that stress the encoder and the parsers: deep nesting, extreme numbers,
# keys and text across the whole of Unicode (surrogates included).
_TEXT = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=8)
_NUMBERS = (
    st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([1e308, -1e308, 5e-324, 3.8e16, 0.1, -0.0])
)
_LEAVES = st.none() | st.booleans() | _NUMBERS | _TEXT


def _nested(depth: int) -> st.SearchStrategy[object]:
    return st.integers(min_value=0, max_value=depth).map(deep_json)


_JSON = st.recursive(
    _LEAVES | _nested(260),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=12,
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scratchpad=st.dictionaries(_TEXT, _JSON, max_size=3))
def test_a_save_is_refused_intact_or_loads_equal(cp: Any, scratchpad: dict[str, Any]) -> None:
    cp.save_state("prop", OLD, expected_version=None)
    before = cp.load_checkpoint("prop")
    state = AgentStateSnapshot()
    state.scratchpad.update(scratchpad)  # unvalidated, as an app mutating its state
    try:
        info = cp.save_state("prop", state)
    except (InvalidStateError, InvalidArgumentError):
        after = cp.load_checkpoint("prop")
        assert after.info == before.info
        assert after.state == OLD
    else:
        loaded = cp.load_checkpoint("prop")
        assert loaded.info == info
        assert json_value(loaded.state) == json_value(state)

"""Bad input raises the typed error and writes nothing; corrupt records never load as None."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from agents_persistence import (
    AgentStateSnapshot,
    ConfigurationError,
    CorruptStateError,
    InvalidArgumentError,
    InvalidStateError,
    InvalidThreadIdError,
    StateTooLargeError,
)

BAD_IDS = [
    "",
    "x" * 257,
    "tab\there",
    "nul\x00",
    "bell\x07",
    "new\nline",
    "del\x7f",
    None,
    42,
    b"bytes",
]


@pytest.mark.parametrize("thread_id", BAD_IDS, ids=repr)
def test_bad_thread_ids_are_refused_everywhere(cp: Any, harness: Any, thread_id: Any) -> None:
    with pytest.raises(InvalidThreadIdError):
        cp.save_state(thread_id, AgentStateSnapshot())
    with pytest.raises(InvalidThreadIdError):
        cp.load_state(thread_id)
    with pytest.raises(InvalidThreadIdError):
        cp.load_checkpoint(thread_id)
    with pytest.raises(InvalidThreadIdError):
        cp.delete_thread(thread_id)
    assert harness.kit.stored_count(harness.namespace) == 0


def test_thread_id_of_256_characters_is_fine(cp: Any) -> None:
    thread_id = "é" * 256
    cp.save_state(thread_id, AgentStateSnapshot())
    assert cp.load_state(thread_id) == AgentStateSnapshot()


def test_invalid_thread_id_error_is_a_value_error(cp: Any) -> None:
    with pytest.raises(ValueError, match="thread id"):
        cp.save_state("", AgentStateSnapshot())


def test_state_above_limit_is_refused_and_old_state_stays(harness: Any) -> None:
    cp = harness.make(max_state_bytes=2000)
    small = AgentStateSnapshot(files={"a": "x" * 100})
    cp.save_state("t", small)
    big = AgentStateSnapshot(files={"a": "x" * 5000})
    with pytest.raises(StateTooLargeError) as caught:
        cp.save_state("t", big)
    assert caught.value.limit == 2000
    assert caught.value.size > 2000
    with pytest.raises(StateTooLargeError):
        cp.save_state("new", big)
    checkpoint = cp.load_checkpoint("t")
    assert checkpoint.state == small
    assert checkpoint.info.version == 1
    assert cp.load_state("new") is None


class Other(BaseModel):
    x: int = 0


def test_wrong_state_type_is_refused(cp: Any, harness: Any) -> None:
    for wrong in (Other(), {"todos": []}, None, "{}"):
        with pytest.raises(InvalidStateError):
            cp.save_state("t", wrong)
    assert harness.kit.stored_count(harness.namespace) == 0


@pytest.mark.parametrize("expected", [-1, 1.0, "1", True])
def test_bad_expected_version_is_refused(cp: Any, expected: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        cp.save_state("t", AgentStateSnapshot(), expected_version=expected)
    assert cp.load_state("t") is None


@pytest.mark.parametrize(
    "namespace", ["", "has space", "x" * 65, "semi;colon", "quote'", "slash/", "ünï"]
)
def test_bad_namespaces_are_refused(harness: Any, namespace: str) -> None:
    with pytest.raises(ConfigurationError):
        harness.make(namespace=namespace)


@pytest.mark.parametrize("max_bytes", [0, -5, 1.5, "10"])
def test_bad_max_state_bytes_is_refused(harness: Any, max_bytes: Any) -> None:
    with pytest.raises(ConfigurationError):
        harness.make(max_state_bytes=max_bytes)


def test_corrupt_record_raises_never_none(cp: Any, harness: Any) -> None:
    cp.save_state("t", AgentStateSnapshot(todos=[]))
    harness.kit.corrupt(harness.namespace, "t")
    with pytest.raises(CorruptStateError) as caught:
        cp.load_state("t")
    assert caught.value.thread_id == "t"
    with pytest.raises(CorruptStateError):
        cp.load_checkpoint("t")
    # the thread is still listed and can be repaired or deleted
    assert [t.thread_id for t in cp.list_threads().threads] == ["t"]
    cp.save_state("t", AgentStateSnapshot())
    assert cp.load_state("t") == AgentStateSnapshot()


class Custom(BaseModel):
    counter: int
    tags: list[str] = []


def test_custom_state_type(harness: Any) -> None:
    cp = harness.make(state_type=Custom)
    cp.save_state("t", Custom(counter=3, tags=["a"]))
    loaded = cp.load_state("t")
    assert isinstance(loaded, Custom)
    assert loaded == Custom(counter=3, tags=["a"])
    with pytest.raises(InvalidStateError):
        cp.save_state("t", AgentStateSnapshot())


def test_state_type_mismatch_on_load_is_corruption(harness: Any) -> None:
    writer = harness.make()
    writer.save_state("t", AgentStateSnapshot())
    reader = harness.make(state_type=Custom)
    with pytest.raises(CorruptStateError):
        reader.load_state("t")

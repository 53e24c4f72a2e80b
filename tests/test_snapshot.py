"""The snapshot reads and writes the Rust SDK's serde JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    HumanInLoopInterrupt,
    InvalidStateError,
    MemoryCheckpointer,
    TodoItem,
)

RUST_RECORD = (
    '{"todos":[{"content":"Test todo","status":"pending"}],'
    '"files":{"test.txt":"content"},"scratchpad":{"key":"value"}}'
)

RUST_WITH_INTERRUPT = {
    "todos": [
        {"content": "plan", "status": "completed"},
        {"content": "act", "status": "in_progress"},
    ],
    "files": {},
    "scratchpad": {"n": 1, "deep": {"a": [1, 2, {"b": None}]}},
    "pending_interrupts": [
        {
            "type": "human_in_loop",
            "tool_name": "delete_file",
            "tool_args": {"path": "/etc/passwd"},
            "policy_note": "File deletion requires approval",
            "created_at": "2025-03-04T05:06:07.123456789Z",
            "call_id": "call_42",
        },
        {
            "type": "human_in_loop",
            "tool_name": "send_email",
            "tool_args": {"to": "a@b.c"},
            "created_at": "2025-03-04T07:06:07+02:00",
            "call_id": "call_43",
        },
    ],
}


def test_rust_record_loads_and_writes_back_identically() -> None:
    snapshot = AgentStateSnapshot.model_validate_json(RUST_RECORD)
    assert snapshot.todos == [TodoItem(content="Test todo", status="pending")]
    assert snapshot.files == {"test.txt": "content"}
    assert snapshot.scratchpad == {"key": "value"}
    assert snapshot.model_dump_json() == RUST_RECORD


def test_interrupts_with_rfc3339_timestamps_load() -> None:
    snapshot = AgentStateSnapshot.model_validate(RUST_WITH_INTERRUPT)
    first, second = snapshot.pending_interrupts
    assert isinstance(first, HumanInLoopInterrupt)
    assert first.created_at == datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
    assert first.policy_note == "File deletion requires approval"
    assert second.created_at == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert second.policy_note is None
    dumped = json.loads(snapshot.model_dump_json())
    assert "policy_note" not in dumped["pending_interrupts"][1]
    assert dumped["pending_interrupts"][0]["type"] == "human_in_loop"
    assert dumped["pending_interrupts"][1]["created_at"] == "2025-03-04T05:06:07Z"
    assert AgentStateSnapshot.model_validate_json(snapshot.model_dump_json()) == snapshot


def test_empty_interrupts_and_messages_are_omitted() -> None:
    dumped = json.loads(AgentStateSnapshot().model_dump_json())
    assert dumped == {"todos": [], "files": {}, "scratchpad": {}}


def test_messages_use_the_rust_message_format() -> None:
    snapshot = AgentStateSnapshot(
        messages=[
            AgentMessage.text("User", "hi"),
            AgentMessage.model_validate(
                {
                    "role": "Tool",
                    "content": {"type": "Json", "value": {"ok": True}},
                    "metadata": {"tool_call_id": "c1", "cache_control": {"type": "ephemeral"}},
                }
            ),
        ]
    )
    dumped = json.loads(snapshot.model_dump_json())
    assert dumped["messages"] == [
        {"role": "User", "content": {"type": "Text", "value": "hi"}},
        {
            "role": "Tool",
            "content": {"type": "Json", "value": {"ok": True}},
            "metadata": {"tool_call_id": "c1", "cache_control": {"type": "ephemeral"}},
        },
    ]


def test_unknown_fields_survive_load_and_save() -> None:
    record = json.loads(RUST_RECORD)
    record["agent_version"] = "0.9"
    record["todos"][0]["priority"] = 3
    snapshot = AgentStateSnapshot.model_validate(record)
    assert json.loads(snapshot.model_dump_json()) == record


def test_unknown_fields_survive_a_store_round_trip() -> None:
    record = json.loads(RUST_RECORD) | {"agent_version": "0.9"}
    cp = MemoryCheckpointer()
    cp.save_state("t", AgentStateSnapshot.model_validate(record))
    assert json.loads(cp.load_state("t").model_dump_json()) == record


@pytest.mark.parametrize(
    "bad",
    [
        {"todos": [{"content": "x", "status": "done"}]},
        {"todos": "nope"},
        {"pending_interrupts": [{"type": "other", "tool_name": "x", "call_id": "c"}]},
        {
            "pending_interrupts": [
                {
                    "type": "human_in_loop",
                    "tool_name": "x",
                    "created_at": "2025-01-01T00:00:00",  # no offset: not RFC 3339
                    "call_id": "c",
                }
            ]
        },
        {"messages": [{"role": "Robot", "content": {"type": "Text", "value": "x"}}]},
        {"scratchpad": {"x": float("nan")}},
    ],
)
def test_invalid_records_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AgentStateSnapshot.model_validate(bad)


def test_unencodable_state_is_a_typed_error() -> None:
    cp = MemoryCheckpointer()
    with pytest.raises(InvalidStateError):
        cp.save_state("t", AgentStateSnapshot(files={"bad": "\udc80"}))
    assert cp.load_state("t") is None

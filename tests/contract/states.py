"""Snapshots and strategies the contract tests share."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import strategies as st

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    HumanInLoopInterrupt,
    JsonContent,
    MessageMetadata,
    TodoItem,
)

# NUL is excluded: PostgreSQL's JSONB cannot hold it (a store-specific test covers that case).
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
THREAD_IDS = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=256
).filter(lambda s: len(s) <= 256)

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | TEXT
)
JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=30,
)


@st.composite
def snapshots(draw: st.DrawFn) -> AgentStateSnapshot:
    todos = draw(
        st.lists(
            st.builds(
                TodoItem,
                content=TEXT,
                status=st.sampled_from(["pending", "in_progress", "completed"]),
            ),
            max_size=5,
        )
    )
    interrupts = draw(
        st.lists(
            st.builds(
                HumanInLoopInterrupt,
                tool_name=TEXT,
                tool_args=JSON,
                policy_note=st.none() | TEXT,
                created_at=st.datetimes(
                    min_value=datetime(2000, 1, 1),
                    max_value=datetime(2100, 1, 1),
                    timezones=st.just(UTC),
                ),
                call_id=TEXT,
            ),
            max_size=2,
        )
    )
    messages = draw(
        st.lists(
            st.one_of(
                st.builds(
                    AgentMessage.text,
                    role=st.sampled_from(["User", "Agent", "Tool", "System"]),
                    value=TEXT,
                ),
                st.builds(
                    AgentMessage,
                    role=st.just("Tool"),
                    content=st.builds(JsonContent, value=JSON),
                    metadata=st.none() | st.builds(MessageMetadata, tool_call_id=st.none() | TEXT),
                ),
            ),
            max_size=4,
        )
    )
    return AgentStateSnapshot(
        todos=todos,
        files=draw(st.dictionaries(TEXT, TEXT, max_size=4)),
        scratchpad=draw(st.dictionaries(TEXT, JSON, max_size=4)),
        pending_interrupts=interrupts,
        messages=messages,
    )


def deep_json(depth: int) -> object:
    """A JSON value nested ``depth`` levels deep, alternating objects and arrays."""
    value: object = "leaf"
    for level in range(depth):
        value = {"level": level, "child": value} if level % 2 else [level, value]
    return value


def rich_state(marker: str = "") -> AgentStateSnapshot:
    """A snapshot that uses every field, with unicode in keys and values."""
    return AgentStateSnapshot.model_validate(
        {
            "todos": [
                {"content": f"écrire le rapport {marker}", "status": "in_progress"},
                {"content": "✅ done", "status": "completed"},
            ],
            "files": {"notes/日本語.md": "# 見出し\n\nテキスト 🚀", "a.txt": "line1\nline2\ttab"},
            "scratchpad": {"nested": {"list": [1, 2.5, None, True, "x"]}, "ключ": "значение"},
            "pending_interrupts": [
                {
                    "type": "human_in_loop",
                    "tool_name": "delete_file",
                    "tool_args": {"path": "/tmp/x"},
                    "policy_note": "needs approval",
                    "created_at": "2025-01-02T03:04:05.123456Z",
                    "call_id": "call-1",
                }
            ],
            "messages": [
                {"role": "User", "content": {"type": "Text", "value": "héllo"}},
                {
                    "role": "Tool",
                    "content": {"type": "Json", "value": {"ok": True}},
                    "metadata": {"tool_call_id": "call-1"},
                },
            ],
            "future_field": {"kept": [1, 2, 3]},
        }
    )

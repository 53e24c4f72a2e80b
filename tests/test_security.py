"""No state content leaves the library in an exception, a log record or telemetry.

A secret is put in every part of a state (a message, a file path and its text, a scratchpad key
and value, a todo, an interrupt's arguments), then every operation runs, including the ones that
fail: refused saves (too large, not encodable, conflicting), a corrupt record, a record that no
longer validates. The secret must not appear in any exception text (message, str, repr, args,
causes and contexts), any log record of the library at DEBUG, or any span attribute or event.
Thread ids do appear (identifiers, not content): the secret is never one here.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    CheckpointerError,
    HumanInLoopInterrupt,
    MemoryCheckpointer,
    MemoryStore,
    TodoItem,
)

from .support import GuardedState, exception_texts

SECRET = "sk-live-SECRET-4242"


def _secret_state() -> AgentStateSnapshot:
    return AgentStateSnapshot(
        todos=[TodoItem(content=f"rotate {SECRET}")],
        files={f"keys/{SECRET}.txt": f"token={SECRET}\n" * 400},
        scratchpad={SECRET: SECRET, "nested": {"deep": [SECRET] * 50}},
        pending_interrupts=[
            HumanInLoopInterrupt(
                tool_name="send",
                tool_args={"body": SECRET},
                created_at=datetime.now(UTC),
                call_id="c1",
            )
        ],
        messages=[AgentMessage.text("User", f"my key is {SECRET}")] * 40,
    )


def _failures(store: MemoryStore) -> list[BaseException]:
    """Run every failing path with the secret in the state; return what was raised."""
    raised: list[BaseException] = []

    def attempt(fn: Any, *args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except CheckpointerError as exc:
            raised.append(exc)
        else:
            pytest.fail(f"{fn.__name__} did not raise")

    cp = MemoryCheckpointer(store=store, namespace="sec", max_state_bytes=10**6)
    state = _secret_state()
    cp.save_state("t1", state)
    cp.load_state("t1")
    attempt(cp.save_state, "t1", state, expected_version=7)  # conflict
    tiny = MemoryCheckpointer(store=store, namespace="sec", max_state_bytes=100)
    attempt(tiny.save_state, "t", state)  # too large
    broken = _secret_state()
    broken.scratchpad["nan"] = [math.nan, SECRET]  # mutated in after validation
    attempt(cp.save_state, "t", broken)
    attempt(cp.save_state, "t", {"files": SECRET})  # not a state
    store.replace_payload("sec", "t1", '{"todos": [{"content": 1, "status": "' + SECRET + '"}]}')
    attempt(cp.load_state, "t1")  # stored record no longer validates
    store.replace_payload("sec", "t1", '{"files": {"a": "' + SECRET)
    attempt(cp.load_state, "t1")  # not JSON
    guarded = MemoryCheckpointer(store=store, namespace="guard", state_type=GuardedState)
    guarded.save_state("g", GuardedState(api_key="sk-test-1"))
    store.replace_payload("guard", "g", '{"api_key": "' + SECRET + '"}')
    attempt(guarded.load_state, "g")  # an app validator's message quotes the value
    return raised


def test_no_state_content_in_errors_logs_or_telemetry(
    otel: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="agents_persistence"):
        raised = _failures(MemoryStore())
    assert len(raised) == 7
    for exc in raised:
        for text in exception_texts(exc):
            assert SECRET not in text, (type(exc).__name__, text)
    assert caplog.records, "refusals are logged at DEBUG"
    for record in caplog.records:
        assert SECRET not in record.getMessage()
    spans = otel.spans("sec") + otel.spans("guard")
    assert spans
    for span in spans:
        for key, value in (span.attributes or {}).items():
            assert SECRET not in str(value), (span.name, key)
        for event in span.events:
            assert SECRET not in str(dict(event.attributes or {})), (span.name, event.name)

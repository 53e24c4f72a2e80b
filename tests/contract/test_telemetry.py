"""Every public call is one OpenTelemetry span with the database attributes, on every store."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from agents_persistence import (
    AgentStateSnapshot,
    BackendUnavailableError,
    ConflictError,
    CorruptStateError,
    InvalidThreadIdError,
)

from ..telemetry_support import P, Recorder

SECRET = "s3cr3t-value-never-in-telemetry"


def _state(n: int = 0) -> AgentStateSnapshot:
    return AgentStateSnapshot(scratchpad={"secret": SECRET, "n": n}, files={"a.txt": "x" * 1000})


def _texts(span: Any) -> str:
    """Every attribute and event value of a span, as one string."""
    parts = [repr(dict(span.attributes or {}))]
    parts += [repr((e.name, dict(e.attributes or {}))) for e in span.events]
    parts.append(repr(span.status.description))
    return " ".join(parts)


def test_one_span_per_public_call(harness: Any, otel: Recorder) -> None:
    cp = harness.make()
    first = cp.save_state("t1", _state(1))
    second = cp.save_state("t2", _state(2), expected_version=0)
    cp.load_state("t1")
    checkpoint = cp.load_checkpoint("t2")
    assert cp.load_state("missing") is None
    cp.list_threads(limit=10)
    assert len(list(cp.iter_threads(page_size=1))) == 2
    cp.restore_checkpoint("t3", checkpoint.state, checkpoint.info)
    assert cp.delete_thread("t3") is True
    cp.purge_expired()

    spans = otel.spans(harness.namespace)
    ops = [s.attributes["db.operation.name"] for s in spans]
    assert ops == [
        "save_state",
        "save_state",
        "load_state",
        "load_checkpoint",
        "load_state",
        "list_threads",
        "iter_threads",
        "iter_threads",
        "restore_checkpoint",
        "delete_thread",
        "purge_expired",
    ]
    kind = SpanKind.INTERNAL if harness.kit.db_system == "memory" else SpanKind.CLIENT
    for span in spans:
        attrs = span.attributes
        assert attrs["db.system.name"] == harness.kit.db_system
        assert attrs[P + "namespace"] == harness.namespace
        assert attrs[P + "store"] in ("memory", "sql", "redis", "dynamodb")
        assert span.name.split()[0] == attrs["db.operation.name"]
        assert span.kind is kind
        assert span.status.status_code is StatusCode.UNSET
        assert SECRET not in _texts(span)
        assert span.parent is None  # nothing nested: one span per call

    save1, save2, load1, load2, missing = spans[:5]
    assert save1.attributes[P + "thread_id"] == "t1"
    assert save1.attributes[P + "version"] == first.version == 1
    assert save1.attributes[P + "payload.size"] == first.size
    assert save1.attributes[P + "conflict"] is False
    assert save1.attributes[P + "retries"] >= 0
    assert P + "expected_version" not in save1.attributes
    assert save2.attributes[P + "expected_version"] == 0
    assert save2.attributes[P + "payload.size"] == second.size
    assert load1.attributes[P + "found"] is True
    assert load1.attributes[P + "payload.size"] == first.size
    assert load2.attributes[P + "version"] == 1
    assert missing.attributes[P + "found"] is False
    assert P + "payload.size" not in missing.attributes
    assert spans[5].attributes[P + "threads"] == 2
    assert [s.attributes[P + "threads"] for s in spans[6:8]] == [1, 1]
    assert spans[9].attributes[P + "found"] is True
    assert spans[10].attributes[P + "purged"] >= 0


def test_conflict_is_an_error_span_and_counted(harness: Any, otel: Recorder) -> None:
    cp = harness.make()
    cp.save_state("t", _state())
    with pytest.raises(ConflictError):
        cp.save_state("t", _state(), expected_version=5)

    span = otel.spans(harness.namespace)[-1]
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "ConflictError"
    assert span.attributes[P + "conflict"] is True
    assert span.attributes[P + "expected_version"] == 5
    assert span.attributes[P + "actual_version"] == 1
    events = {e.name: dict(e.attributes or {}) for e in span.events}
    assert events[P + "conflict"] == {P + "expected_version": 5, P + "actual_version": 1}
    assert events["exception"] == {"exception.type": "agents_persistence.errors.ConflictError"}

    system = harness.kit.db_system
    conflicts = [p for a, p in otel.points(P + "conflicts") if a["db.system.name"] == system]
    assert sum(p.value for p in conflicts) >= 1
    errors = otel.points(P + "errors")
    assert any(a["error.type"] == "ConflictError" and p.value >= 1 for a, p in errors)


def test_failures_are_error_spans_without_state_content(harness: Any, otel: Recorder) -> None:
    cp = harness.make()
    with pytest.raises(InvalidThreadIdError):
        cp.save_state("", _state())
    cp.save_state("t", _state())
    harness.kit.corrupt(harness.namespace, "t")
    with pytest.raises(CorruptStateError):
        cp.load_state("t")

    refused, _, corrupt = otel.spans(harness.namespace)
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes["error.type"] == "InvalidThreadIdError"
    assert corrupt.status.status_code is StatusCode.ERROR
    assert corrupt.attributes["error.type"] == "CorruptStateError"
    for span in (refused, corrupt):
        assert SECRET not in _texts(span)
        # Exception messages stay out: a decoding error quotes the stored input.
        assert all("exception.message" not in (e.attributes or {}) for e in span.events)


def test_metrics_per_operation(harness: Any, otel: Recorder) -> None:
    cp = harness.make()
    info = cp.save_state("t", _state())
    cp.load_state("t")

    system = harness.kit.db_system
    durations = {
        a["db.operation.name"]: p
        for a, p in otel.points("db.client.operation.duration")
        if a["db.system.name"] == system
    }
    assert durations["save_state"].count >= 1
    assert durations["load_state"].count >= 1
    assert "error.type" not in durations["save_state"].attributes
    sizes = {
        a["db.operation.name"]: p
        for a, p in otel.points(P + "payload.size")
        if a["db.system.name"] == system
    }
    assert sizes["save_state"].min <= info.size <= sizes["save_state"].max
    assert sizes["load_state"].min <= info.size <= sizes["load_state"].max


@pytest.mark.timeout(60)
def test_unreachable_server_is_an_error_span(harness: Any, otel: Recorder) -> None:
    if not harness.kit.has_server:
        pytest.skip(f"{harness.kit.name} has no server")
    cp = harness.make_unreachable()
    with pytest.raises(BackendUnavailableError):
        cp.load_state("t")

    (span,) = otel.spans(harness.namespace)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "BackendUnavailableError"
    errors = otel.points(P + "errors")
    assert any(a["error.type"] == "BackendUnavailableError" for a, _ in errors)

"""The pure layer: cursors, validation and URL dispatch."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from agents_persistence import (
    AsyncMemoryCheckpointer,
    ConfigurationError,
    InvalidCursorError,
    MemoryCheckpointer,
    open_async_checkpointer,
    open_checkpointer,
)
from agents_persistence._core import (
    decode_cursor,
    encode_cursor,
    from_epoch_micros,
    to_epoch_micros,
    validate_identifier,
)


def test_cursor_round_trips_exactly() -> None:
    moment = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    cursor = encode_cursor(moment, "thread/ü 1")
    assert decode_cursor(cursor) == (moment, "thread/ü 1")
    assert "ü" not in cursor


@pytest.mark.parametrize("bad", ["", "!!!", "W10", "WzEsMl0", "WyJ4IiwieSJd"])
def test_bad_cursors(bad: str) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(bad)


def test_epoch_micros_are_exact() -> None:
    moment = datetime(2300, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert from_epoch_micros(to_epoch_micros(moment)) == moment


@pytest.mark.parametrize("name", ["x; drop table", "1abc", "", "a-b", "a" * 64, "ta ble"])
def test_identifiers_are_validated(name: str) -> None:
    with pytest.raises(ConfigurationError):
        validate_identifier(name, "table name")


def test_open_memory() -> None:
    with open_checkpointer("memory://", namespace="n1") as cp:
        assert isinstance(cp, MemoryCheckpointer)
        assert cp.namespace == "n1"
    assert isinstance(open_async_checkpointer("memory://"), AsyncMemoryCheckpointer)


def test_memory_accepts_the_call_budget_every_store_takes() -> None:
    with open_checkpointer("memory://", call_timeout=2.5) as cp:
        assert isinstance(cp, MemoryCheckpointer)
    assert isinstance(open_async_checkpointer("memory://", call_timeout=1), AsyncMemoryCheckpointer)
    for bad in (0, -1.0, float("nan"), "5", True):
        with pytest.raises(ConfigurationError, match="call_timeout"):
            open_checkpointer("memory://", call_timeout=bad)
        with pytest.raises(ConfigurationError, match="call_timeout"):
            open_async_checkpointer("memory://", call_timeout=bad)


@pytest.mark.parametrize("url", ["ftp://x", "nothing", "", "mongodb://localhost"])
def test_unknown_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_checkpointer(url)


def test_clock_must_be_aware() -> None:
    cp = MemoryCheckpointer(clock=lambda: datetime(2026, 1, 1))
    with pytest.raises(ConfigurationError):
        cp.load_state("t")

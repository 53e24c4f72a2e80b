"""Reading the Rust SDK's layouts: listing in pages, loading, expiry, stale entries, errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest

from agents_persistence import AgentStateSnapshot
from agents_persistence.errors import (
    BackendUnavailableError,
    ConfigurationError,
    CorruptStateError,
    SchemaNotReadyError,
)
from agents_persistence.rust import open_rust_source

from ..kits.base import closed_port
from .conftest import CORRUPT_STATE, INTERRUPT_TIME, RUST_STATES

if TYPE_CHECKING:
    from .conftest import Layout


def test_lists_every_thread_once_in_pages_and_loads_rust_json(layout: Layout) -> None:
    ids = [f"thread-{n}" for n in range(7)]
    for n, thread_id in enumerate(ids):
        layout.write(thread_id, list(RUST_STATES.values())[n % len(RUST_STATES)])
    with open_rust_source(layout.url) as source:
        listed = list(source.iter_thread_ids(page_size=2))
        assert sorted(listed) == ids
        for n, thread_id in enumerate(ids):
            expected = AgentStateSnapshot.model_validate_json(
                list(RUST_STATES.values())[n % len(RUST_STATES)]
            )
            assert source.load_state(thread_id) == expected
        assert source.load("never-written") is None


def test_interrupts_and_unknown_fields_survive(layout: Layout) -> None:
    layout.write("t", RUST_STATES["interrupted"])
    with open_rust_source(layout.url) as source:
        state = source.load_state("t")
    assert state is not None
    interrupt = state.pending_interrupts[0]
    assert (interrupt.tool_name, interrupt.call_id) == ("write_file", "call_1")
    assert interrupt.created_at == INTERRUPT_TIME
    assert interrupt.policy_note == "needs approval"
    assert state.model_extra == {"rust_only_field": {"kept": True, "list": [1, "two"]}}
    assert state.scratchpad["nested"] == {"a": [1, 2.5, None, True]}


@pytest.mark.parametrize("layout", ["redis", "dynamodb"], indirect=True)
def test_expired_records_and_stale_entries_are_skipped(layout: Layout) -> None:
    layout.write("live", RUST_STATES["plain"], ttl=3600)
    layout.write("gone", RUST_STATES["plain"], ttl=3600)
    layout.expire("gone")
    with open_rust_source(layout.url) as source:
        assert source.load("gone") is None
        live = source.load("live")
        assert [record.thread_id for record in source.iter_records()] == ["live"]
    assert live is not None
    assert live.expires_at is not None
    # The Rust TTL is carried: about an hour from now.
    remaining = live.expires_at - datetime.now(UTC)
    assert timedelta(minutes=58) < remaining <= timedelta(hours=1, seconds=1)


def test_undecodable_json_names_the_thread(layout: Layout) -> None:
    layout.write("bad", CORRUPT_STATE)
    with open_rust_source(layout.url) as source:
        record = source.load("bad")
        assert record is not None  # reading the raw record works
        with pytest.raises(CorruptStateError) as caught:
            source.load_state("bad")
    assert caught.value.thread_id == "bad"
    assert "todos" in str(caught.value)


def test_postgresql_timestamps_are_the_rust_rows(rust_pg: Layout) -> None:
    rust_pg.write("t", RUST_STATES["plain"])
    with open_rust_source(rust_pg.url) as source:
        record = source.load("t")
    assert record is not None
    assert record.created_at is not None
    assert record.updated_at is not None
    assert record.updated_at.tzinfo is not None
    assert abs(record.updated_at - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://localhost/db",  # not rust+
        "rust+mysql://localhost/db",
        "rust+postgresql://localhost/db?table=drop;table",
        "rust+postgresql://localhost/db?tabel=x",
        "rust+postgresql+asyncpg://localhost/db",
        "rust+redis://localhost:6379/0?namespace=with space",
        "rust+redis://localhost:6379/0?prefix=agents",
        "rust+dynamodb://table?region=us-east-1&read_timeout=-1",
        "rust+dynamodb://table?region=us-east-1&retries=x",
        "rust+dynamodb://?region=us-east-1",
    ],
)
def test_bad_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_rust_source(url)


def test_unreachable_servers_are_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    port = closed_port()
    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}.items():
        monkeypatch.setenv(name, value)
    urls = [
        f"rust+postgresql://postgres@127.0.0.1:{port}/db",
        f"rust+redis://127.0.0.1:{port}/0",
        f"rust+dynamodb://t?region=us-east-1&endpoint=http://127.0.0.1:{port}"
        "&connect_timeout=0.5&read_timeout=0.5&retries=0",
    ]
    for url in urls:
        with open_rust_source(url) as source, pytest.raises(BackendUnavailableError):
            list(source.iter_thread_ids())


@pytest.mark.parametrize("layout", ["postgresql", "dynamodb"], indirect=True)
def test_missing_table_says_which(layout: Layout) -> None:
    url = layout.url.replace(
        getattr(layout, "table", ""), "missing_" + getattr(layout, "table", "")
    )
    with open_rust_source(url) as source, pytest.raises(SchemaNotReadyError, match="Rust"):
        list(source.iter_thread_ids())

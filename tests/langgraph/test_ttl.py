"""Thread TTL of the SQL savers: refreshed by every write, invisible at once when expired."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from agents_persistence.errors import ConfigurationError
from agents_persistence.langgraph import AsyncSQLCheckpointSaver, SQLCheckpointSaver
from agents_persistence.models.langgraph import langgraph_models

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_core.runnables import RunnableConfig


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


Pair = tuple[SQLCheckpointSaver, SQLCheckpointSaver]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def savers(
    lg_url: str, clock: FakeClock
) -> Iterator[tuple[SQLCheckpointSaver, SQLCheckpointSaver]]:
    """A saver with a 60 s TTL, and one without a TTL on the same tables and clock."""
    with (
        SQLCheckpointSaver.from_url(lg_url, ttl=60, clock=clock) as with_ttl,
        SQLCheckpointSaver.from_url(lg_url, clock=clock) as without,
    ):
        yield with_ttl, without


def _put(saver: SQLCheckpointSaver, thread_id: str, value: str) -> RunnableConfig:
    checkpoint = generate_checkpoint(channel_values={"v": value}, channel_versions={"v": value})
    return saver.put(generate_config(thread_id), checkpoint, generate_metadata(), {"v": value})


def _rows(url: str, thread_id: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            return sum(
                int(
                    conn.execute(
                        sa.select(sa.func.count())
                        .select_from(model.__table__)
                        .where(model.__table__.c.thread_id == thread_id)
                    ).scalar_one()
                )
                for model in langgraph_models()
            )
    finally:
        engine.dispose()


def test_every_write_refreshes_the_ttl(savers: Pair, clock: FakeClock) -> None:
    saver, _ = savers
    thread_id = str(uuid.uuid4())
    stored = _put(saver, thread_id, "one")
    clock.advance(59)
    saver.put_writes(stored, [("v", "pending")], "task")
    clock.advance(59)
    assert saver.get_tuple(generate_config(thread_id)) is not None, "put_writes refreshed it"
    _put(saver, thread_id, "two")
    clock.advance(59)
    assert len(list(saver.list(generate_config(thread_id)))) == 2


def test_an_expired_thread_is_invisible_at_once_to_every_saver(
    savers: Pair, clock: FakeClock
) -> None:
    with_ttl, without = savers
    thread_id, other = str(uuid.uuid4()), str(uuid.uuid4())
    stored = _put(with_ttl, thread_id, "one")
    _put(without, other, "kept")

    clock.advance(60)

    for saver in (with_ttl, without):
        assert saver.get_tuple(stored) is None
        assert saver.get_tuple(generate_config(thread_id)) is None
        assert list(saver.list(generate_config(thread_id))) == []
        listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
        assert thread_id not in listed
        assert other in listed, "threads without a TTL never expire"


def test_a_write_to_an_expired_thread_starts_it_afresh(
    savers: Pair, clock: FakeClock, lg_url: str
) -> None:
    with_ttl, without = savers
    thread_id = str(uuid.uuid4())
    old = _put(with_ttl, thread_id, "old")
    clock.advance(61)

    with_ttl.put_writes(old, [("v", "late")], "task")
    assert _rows(lg_url, thread_id) == 0, "the expired thread went, the late writes with it"

    _put(without, thread_id, "new")
    assert [t.checkpoint["channel_values"] for t in without.list(generate_config(thread_id))] == [
        {"v": "new"}
    ]
    clock.advance(3600)
    assert without.get_tuple(generate_config(thread_id)) is not None, "restarted without a TTL"


def test_purge_deletes_the_rows_of_expired_threads(
    savers: Pair, clock: FakeClock, lg_url: str
) -> None:
    with_ttl, without = savers
    expired, live = str(uuid.uuid4()), str(uuid.uuid4())
    stored = _put(with_ttl, expired, "x")
    with_ttl.put_writes(stored, [("v", "w")], "task")
    clock.advance(30)
    _put(with_ttl, live, "y")
    clock.advance(40)
    assert _rows(lg_url, expired) == 4, "checkpoint, blob, write and expiry are still stored"

    assert without.purge_expired() >= 1

    assert _rows(lg_url, expired) == 0
    assert with_ttl.get_tuple(generate_config(live)) is not None


def test_copying_an_expired_thread_copies_nothing(savers: Pair, clock: FakeClock) -> None:
    with_ttl, _ = savers
    source, target, fresh = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    _put(with_ttl, source, "x")
    with_ttl.copy_thread(source, fresh)
    clock.advance(61)

    with_ttl.copy_thread(source, target)

    assert with_ttl.get_tuple(generate_config(target)) is None
    assert with_ttl.get_tuple(generate_config(fresh)) is None, "the copy had its own TTL"


def test_the_async_twin_expires_threads_too(lg_url: str, clock: FakeClock) -> None:
    thread_id = str(uuid.uuid4())

    async def scenario() -> tuple[bool, bool, int]:
        async with AsyncSQLCheckpointSaver.from_url(lg_url, ttl=10, clock=clock) as saver:
            checkpoint = generate_checkpoint()
            stored = await saver.aput(generate_config(thread_id), checkpoint, {}, {})
            before = await saver.aget_tuple(stored) is not None
            clock.advance(10)
            after = await saver.aget_tuple(stored) is not None
            return before, after, await saver.apurge_expired()

    assert asyncio.run(scenario()) == (True, False, 1)


@pytest.mark.parametrize("ttl", [0, 0.5, -1, "60", True])
def test_a_ttl_must_be_a_duration_of_a_second_or_more(ttl: object) -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        SQLCheckpointSaver(sa.create_engine("sqlite://"), ttl=ttl)  # type: ignore[arg-type]

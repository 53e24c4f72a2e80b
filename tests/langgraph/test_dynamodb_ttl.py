"""Thread TTL of the DynamoDB savers: refreshed by every write, invisible at once when expired."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from agents_persistence._core import to_epoch_micros
from agents_persistence.errors import ConfigurationError
from agents_persistence.langgraph import AsyncDynamoDBCheckpointSaver, DynamoDBCheckpointSaver
from tests.langgraph.test_dynamodb import items, kinds
from tests.langgraph.test_ttl import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator

    from langchain_core.runnables import RunnableConfig

Pair = tuple[DynamoDBCheckpointSaver, DynamoDBCheckpointSaver]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def savers(dynamodb_options: dict[str, Any], clock: FakeClock) -> Iterator[Pair]:
    """A saver with a 60 s TTL, and one without a TTL, on the same table and clock."""
    with (
        DynamoDBCheckpointSaver(**dynamodb_options, ttl=60, clock=clock) as with_ttl,
        DynamoDBCheckpointSaver(**dynamodb_options, clock=clock) as without,
    ):
        yield with_ttl, without


def _put(saver: DynamoDBCheckpointSaver, thread_id: str, value: str) -> RunnableConfig:
    checkpoint = generate_checkpoint(channel_values={"v": value}, channel_versions={"v": value})
    return saver.put(generate_config(thread_id), checkpoint, generate_metadata(), {"v": value})


def test_the_header_carries_the_tables_ttl_attribute(
    savers: Pair, clock: FakeClock, dynamodb_options: dict[str, Any]
) -> None:
    saver, _ = savers
    thread_id = str(uuid.uuid4())
    _put(saver, thread_id, "one")

    (header,) = [item for item in items(dynamodb_options, thread_id) if item["sk"]["S"] == "T"]
    expiry = clock.now.timestamp() + 60
    assert int(header["expires_at"]["N"]) == int(expiry)
    assert int(header["expires_at_us"]["N"]) == to_epoch_micros(clock.now) + 60_000_000
    client = boto3.client(
        "dynamodb",
        region_name=dynamodb_options["region"],
        endpoint_url=dynamodb_options["endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    ttl = client.describe_time_to_live(TableName=dynamodb_options["table_name"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"


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
    savers: Pair, clock: FakeClock, dynamodb_options: dict[str, Any]
) -> None:
    with_ttl, without = savers
    thread_id = str(uuid.uuid4())
    old = _put(with_ttl, thread_id, "old")
    clock.advance(61)

    with_ttl.put_writes(old, [("v", "late")], "task")
    assert "W" not in kinds(dynamodb_options, thread_id), "late writes to an expired thread drop"

    _put(without, thread_id, "new")
    assert [t.checkpoint["channel_values"] for t in without.list(generate_config(thread_id))] == [
        {"v": "new"}
    ]
    assert kinds(dynamodb_options, thread_id) == {"T": 1, "C": 1, "B": 1}, "old items swept"
    clock.advance(3600)
    assert without.get_tuple(generate_config(thread_id)) is not None, "restarted without a TTL"


def test_a_thread_whose_header_dynamodb_removed_stays_invisible(
    savers: Pair, dynamodb_options: dict[str, Any]
) -> None:
    with_ttl, _ = savers
    thread_id = str(uuid.uuid4())
    _put(with_ttl, thread_id, "one")
    client = boto3.client(
        "dynamodb",
        region_name=dynamodb_options["region"],
        endpoint_url=dynamodb_options["endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    # What DynamoDB's Time to Live does, late, to an expired thread's header.
    client.delete_item(
        TableName=dynamodb_options["table_name"],
        Key={"pk": {"S": thread_id}, "sk": {"S": "T"}},
    )

    assert with_ttl.get_tuple(generate_config(thread_id)) is None
    assert with_ttl.purge_expired() >= 1
    assert items(dynamodb_options, thread_id) == []


def test_purge_deletes_the_items_of_expired_threads(
    savers: Pair, clock: FakeClock, dynamodb_options: dict[str, Any]
) -> None:
    with_ttl, without = savers
    expired, live = str(uuid.uuid4()), str(uuid.uuid4())
    stored = _put(with_ttl, expired, "x")
    with_ttl.put_writes(stored, [("v", "w")], "task")
    clock.advance(30)
    _put(with_ttl, live, "y")
    clock.advance(40)
    assert kinds(dynamodb_options, expired) == {"T": 1, "C": 1, "B": 1, "W": 1}

    assert without.purge_expired() >= 1

    assert items(dynamodb_options, expired) == []
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


def test_the_async_twin_expires_threads_too(
    dynamodb_options: dict[str, Any], clock: FakeClock
) -> None:
    thread_id = str(uuid.uuid4())

    async def scenario() -> tuple[bool, bool, int]:
        async with AsyncDynamoDBCheckpointSaver(**dynamodb_options, ttl=10, clock=clock) as saver:
            stored = await saver.aput(generate_config(thread_id), generate_checkpoint(), {}, {})
            before = await saver.aget_tuple(stored) is not None
            clock.advance(10)
            after = await saver.aget_tuple(stored) is not None
            return before, after, await saver.apurge_expired()

    before, after, purged = asyncio.run(scenario())
    assert (before, after) == (True, False)
    assert purged >= 1


@pytest.mark.parametrize("ttl", [0, 0.5, -1, "60", True])
def test_a_ttl_must_be_a_duration_of_a_second_or_more(ttl: object) -> None:
    with pytest.raises(ConfigurationError):
        DynamoDBCheckpointSaver(ttl=ttl, region="us-east-1")  # type: ignore[arg-type]

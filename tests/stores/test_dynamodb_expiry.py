"""DynamoDB expiry: items past their TTL that the service has not deleted yet are invisible;
the TTL attribute never expires an item early; purge only touches its own namespace."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from agents_persistence import AgentStateSnapshot, ConflictError

from ..kits.dynamodb import SINGLE_ITEM_KIT, DynamoDBKit, started
from ..support import FakeClock, Harness

TTL = 60


@pytest.fixture
def kit() -> DynamoDBKit:
    """A DynamoDB kit with a table of the single-item format, also behind the harness."""
    return started(SINGLE_ITEM_KIT)


def _stored(kit: DynamoDBKit, namespace: str, thread_id: str) -> dict[str, Any]:
    item = kit.client.get_item(
        TableName=kit.table, Key={"pk": {"S": f"{namespace}#{thread_id}"}}, ConsistentRead=True
    )
    return dict(item.get("Item", {}))


def test_expired_but_stored_item_is_invisible(kit: DynamoDBKit, harness: Harness) -> None:
    clock = FakeClock()
    cp = harness.make(ttl=TTL, clock=clock)
    cp.save_state("t", AgentStateSnapshot(scratchpad={"v": 1}))
    clock.advance(TTL)
    assert kit.stored_count(harness.namespace) == 1  # DynamoDB (and moto) delete late
    assert cp.load_state("t") is None
    assert cp.load_checkpoint("t") is None
    assert cp.list_threads().threads == []
    assert cp.delete_thread("t") is False
    assert kit.stored_count(harness.namespace) == 1
    assert cp.purge_expired() == 1
    assert kit.stored_count(harness.namespace) == 0


def _write_behind(kit: DynamoDBKit, namespace: str, thread_id: str, expires: datetime) -> None:
    """A well-formed item written with boto3, as another writer (or an older version) would."""
    now = datetime.now(UTC) - timedelta(hours=2)
    stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%f+0000")
    micros = int(expires.timestamp() * 1_000_000)
    kit.client.put_item(
        TableName=kit.table,
        Item={
            "pk": {"S": f"{namespace}#{thread_id}"},
            "list_pk": {"S": namespace},
            "list_sk": {"S": f"{stamp}#{thread_id}"},
            "state": {"S": '{"todos":[],"files":{},"scratchpad":{"behind":true}}'},
            "version": {"N": "3"},
            "created_at": {"S": stamp},
            "updated_at": {"S": stamp},
            "size": {"N": "52"},
            "expires_at": {"N": str(math.ceil(expires.timestamp()))},
            "expires_at_us": {"N": str(micros)},
        },
    )


def test_item_written_with_a_past_ttl_is_invisible(kit: DynamoDBKit, harness: Harness) -> None:
    cp = harness.make()
    now = datetime.now(UTC)
    _write_behind(kit, harness.namespace, "past", now - timedelta(minutes=5))
    _write_behind(kit, harness.namespace, "future", now + timedelta(minutes=5))

    assert cp.load_state("future") == AgentStateSnapshot(scratchpad={"behind": True})
    assert cp.load_state("past") is None
    assert [t.thread_id for t in cp.list_threads().threads] == ["future"]
    assert cp.delete_thread("past") is False
    info = cp.save_state("past", AgentStateSnapshot(), expected_version=0)
    assert (info.version, info.created_at == info.updated_at) == (1, True)


def test_ttl_attribute_is_whole_seconds_rounded_up(kit: DynamoDBKit, harness: Harness) -> None:
    clock = FakeClock(datetime(2030, 1, 2, 3, 4, 5, 250_000, tzinfo=UTC))
    cp = harness.make(ttl=TTL, clock=clock)
    info = cp.save_state("t", AgentStateSnapshot())
    item = _stored(kit, harness.namespace, "t")
    exact = datetime(2030, 1, 2, 3, 5, 5, 250_000, tzinfo=UTC)
    assert info.expires_at == exact
    assert int(item["expires_at_us"]["N"]) == int(exact.timestamp()) * 1_000_000 + 250_000
    assert int(item["expires_at"]["N"]) == math.ceil(exact.timestamp())

    clock.advance(0.75)  # lands on a whole second: nothing to round
    cp.save_state("t", AgentStateSnapshot())
    assert int(_stored(kit, harness.namespace, "t")["expires_at"]["N"]) == int(
        exact.timestamp() + 0.75
    )

    forever = harness.make(namespace=harness.namespace)
    forever.save_state("t", AgentStateSnapshot())
    item = _stored(kit, harness.namespace, "t")
    assert "expires_at" not in item
    assert "expires_at_us" not in item


def test_purge_keeps_other_namespaces_and_live_threads(kit: DynamoDBKit, harness: Harness) -> None:
    clock = FakeClock()
    mine = harness.make(ttl=TTL, clock=clock)
    other_namespace = harness.namespace + "-other"
    other = harness.make(namespace=other_namespace, ttl=TTL, clock=clock)
    for n in range(3):
        mine.save_state(f"t{n}", AgentStateSnapshot())
        other.save_state(f"t{n}", AgentStateSnapshot())
    clock.advance(TTL)
    mine.save_state("t0", AgentStateSnapshot())  # saved again: live, must survive
    assert mine.purge_expired() == 2
    assert kit.stored_count(harness.namespace) == 1
    assert kit.stored_count(other_namespace) == 3
    assert mine.load_state("t0") is not None


def test_checkpointers_with_stale_views_never_lose_updates(harness: Harness) -> None:
    clock = FakeClock()
    first = harness.make(clock=clock)
    second = harness.make(clock=clock)
    assert first.save_state("t", AgentStateSnapshot()).version == 1
    assert second.save_state("t", AgentStateSnapshot()).version == 2
    assert first.save_state("t", AgentStateSnapshot()).version == 3  # first last saw version 1
    assert first.save_state("t", AgentStateSnapshot(), expected_version=3).version == 4
    with pytest.raises(ConflictError, match="found version 4") as raised:
        second.save_state("t", AgentStateSnapshot(), expected_version=2)
    assert (raised.value.expected, raised.value.actual) == (2, 4)
    assert second.delete_thread("t") is True
    clock.advance(1)
    again = first.save_state("t", AgentStateSnapshot())  # first last saw version 4
    assert again.version == 1
    assert again.created_at == clock()

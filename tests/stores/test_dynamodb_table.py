"""DynamoDB table life cycle: create_table is idempotent and sets the index and TTL; nothing
is created implicitly; a table of the wrong shape is refused with a clear error."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import AgentStateSnapshot, ConfigurationError, SchemaNotReadyError

from ..kits.dynamodb import PIECES_KIT, DynamoDBKit, started

if TYPE_CHECKING:
    from ..support import Harness


@pytest.fixture
def kit() -> DynamoDBKit:
    """The session's DynamoDB kit (moto server and table), also behind the harness."""
    return started(PIECES_KIT)


def _checkpointer(harness: Harness, table: str) -> Any:
    """The raw checkpointer (not the harness adapter): table methods are not in the contract."""
    if harness.mode == "sync":
        return harness.kit.make(namespace=harness.namespace, table=table)
    return harness.portal.call(harness.kit.make_async, namespace=harness.namespace, table=table)


def _call(harness: Harness, cp: Any, method: str, **kwargs: Any) -> Any:
    result = getattr(cp, method)(**kwargs)
    return harness.portal.call(lambda: result) if harness.mode == "async" else result


def _close(harness: Harness, cp: Any) -> None:
    _call(harness, cp, "close")


def test_create_table_is_idempotent_with_index_and_ttl(kit: DynamoDBKit, harness: Harness) -> None:
    table = kit.new_table_name()
    cp = _checkpointer(harness, table)
    try:
        assert _call(harness, cp, "create_table") is True
        assert _call(harness, cp, "create_table") is False

        description = kit.client.describe_table(TableName=table)["Table"]
        assert description["TableStatus"] == "ACTIVE"
        assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert description["KeySchema"] == [
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "sk", "KeyType": "RANGE"},
        ]
        (index,) = description["GlobalSecondaryIndexes"]
        assert index["IndexName"] == "by_updated"
        assert {(k["AttributeName"], k["KeyType"]) for k in index["KeySchema"]} == {
            ("list_pk", "HASH"),
            ("list_sk", "RANGE"),
        }
        assert index["Projection"]["ProjectionType"] == "INCLUDE"
        assert "state" not in index["Projection"]["NonKeyAttributes"]
        ttl = kit.client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}

        cp2 = harness.make(table=table)
        cp2.save_state("t", AgentStateSnapshot(scratchpad={"ok": True}))
        assert cp2.load_state("t") == AgentStateSnapshot(scratchpad={"ok": True})
    finally:
        assert _call(harness, cp, "delete_table") is True
        assert _call(harness, cp, "delete_table") is False
        _close(harness, cp)
    assert table not in kit.client.list_tables()["TableNames"]


def test_create_table_enables_ttl_on_an_existing_table(kit: DynamoDBKit) -> None:
    table = kit.new_table_name()
    kit.client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "list_pk", "AttributeType": "S"},
            {"AttributeName": "list_sk", "AttributeType": "S"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": "by_updated",
                "KeySchema": [
                    {"AttributeName": "list_pk", "KeyType": "HASH"},
                    {"AttributeName": "list_sk", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
    )
    before = kit.client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert before["TimeToLiveStatus"] == "DISABLED"
    with kit.make(namespace="n", table=table) as cp:
        assert cp.create_table() is False
        ttl = kit.client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}
        cp.delete_table()


def test_create_table_refuses_a_table_without_the_index(kit: DynamoDBKit) -> None:
    table = kit.new_table_name()
    kit.client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    with kit.make(namespace="n", table=table) as cp:
        with pytest.raises(SchemaNotReadyError, match="by_updated"):
            cp.create_table()
        with pytest.raises(SchemaNotReadyError, match="index"):
            cp.list_threads()
        cp.delete_table()


def test_create_table_refuses_another_key_schema(kit: DynamoDBKit) -> None:
    table = kit.new_table_name()
    kit.client.create_table(
        TableName=table,
        BillingMode="PAY_PER_REQUEST",
        KeySchema=[
            {"AttributeName": "pk", "KeyType": "HASH"},
            {"AttributeName": "at", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "at", "AttributeType": "N"},
        ],
    )
    with kit.make(namespace="n", table=table) as cp:
        with pytest.raises(SchemaNotReadyError, match="key schema"):
            cp.create_table()
        with pytest.raises(SchemaNotReadyError, match="key schema"):
            cp.create_table(table_format="pieces")
        cp.delete_table()


def test_create_table_makes_either_format_and_accepts_both(kit: DynamoDBKit) -> None:
    for table_format, keys in [
        ("single-item", [{"AttributeName": "pk", "KeyType": "HASH"}]),
        (
            "pieces",
            [
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
        ),
    ]:
        table = kit.new_table_name()
        with kit.make(namespace="n", table=table) as cp:
            assert cp.create_table(table_format=table_format) is True
            try:
                assert kit.client.describe_table(TableName=table)["Table"]["KeySchema"] == keys
                # Existing deployments call create_table() unchanged: either format passes.
                assert cp.create_table() is False
                other = "pieces" if table_format == "single-item" else "single-item"
                with pytest.raises(SchemaNotReadyError, match="key schema"):
                    cp.create_table(table_format=other)
                with pytest.raises(ConfigurationError, match="table_format"):
                    cp.create_table(table_format="flat")
                cp.save_state("t", AgentStateSnapshot(files={"f": "x"}))
                assert cp.load_state("t") == AgentStateSnapshot(files={"f": "x"})
            finally:
                cp.delete_table()


def test_a_missing_table_is_reported_and_never_created(kit: DynamoDBKit, harness: Harness) -> None:
    table = kit.new_table_name()
    cp = harness.make(table=table)
    with pytest.raises(SchemaNotReadyError, match="create_table"):
        cp.save_state("t", AgentStateSnapshot())
    with pytest.raises(SchemaNotReadyError):
        cp.load_state("t")
    with pytest.raises(SchemaNotReadyError):
        cp.list_threads()
    with pytest.raises(SchemaNotReadyError):
        cp.delete_thread("t")
    assert table not in kit.client.list_tables()["TableNames"]

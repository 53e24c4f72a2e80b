"""The PynamoDB model is the single source of the DynamoDB item and table.

Every attribute and index name the store sends is read from the model: these tests check the
schema against the model's attributes, and run the store on a test-built model whose attributes
and index have other names, on moto, to see every request and the stored item follow it.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection

from agents_persistence import (
    AgentStateSnapshot,
    ConfigurationError,
    DynamoDBCheckpointer,
    SchemaNotReadyError,
)
from agents_persistence.models.dynamodb import (
    INDEX_NAME,
    TTL_ATTRIBUTE,
    CheckpointItem,
    ListingIndex,
)
from agents_persistence.repositories._dynamodb_mapping import meta_attributes
from agents_persistence.repositories._dynamodb_schema import TableSchema
from agents_persistence.repositories._dynamodb_table import DynamoDBTable

from ..kits.dynamodb import SINGLE_ITEM_KIT, DynamoDBKit, record_requests, started


@pytest.fixture
def kit() -> DynamoDBKit:
    return started(SINGLE_ITEM_KIT)


def test_the_schema_is_read_from_the_model() -> None:
    attributes = CheckpointItem.get_attributes()
    schema = TableSchema.of(CheckpointItem)
    (hash_key,) = [a.attr_name for a in attributes.values() if a.is_hash_key]
    assert schema.hash_key == hash_key
    assert schema.index_name == INDEX_NAME == ListingIndex.Meta.index_name
    index_keys = ListingIndex.Meta.attributes.values()
    assert {schema.index_hash_key, schema.index_range_key} == {a.attr_name for a in index_keys}
    assert schema.ttl_attribute == TTL_ATTRIBUTE
    (ttl,) = [a.attr_name for a in attributes.values() if isinstance(a, TTLAttribute)]
    assert ttl == TTL_ATTRIBUTE
    names = {a.attr_name for a in attributes.values()}
    assert set(schema.projection) <= names
    assert CheckpointItem.state.attr_name not in schema.projection
    assert set(meta_attributes(CheckpointItem)) <= names
    assert CheckpointItem.state.attr_name not in meta_attributes(CheckpointItem)


class _TerseIndex(GlobalSecondaryIndex["_Terse"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "by_time"
        projection = IncludeProjection(
            ["version", "created_at", "updated_at", "size", "expires_at_us"]
        )

    list_pk = UnicodeAttribute(hash_key=True, attr_name="lp")
    list_sk = UnicodeAttribute(range_key=True, attr_name="ls")


class _Terse(CheckpointItem):
    """The checkpoint item with short stored names and another index."""

    pk = UnicodeAttribute(hash_key=True, attr_name="k")
    list_pk = UnicodeAttribute(attr_name="lp")
    list_sk = UnicodeAttribute(attr_name="ls")
    state = UnicodeAttribute(null=True, attr_name="s")
    version = NumberAttribute(attr_name="v")
    expires_at = TTLAttribute(null=True, attr_name="ttl")
    expires_at_us = NumberAttribute(null=True, attr_name="exp")
    write_id = UnicodeAttribute(null=True, attr_name="w")

    by_updated = _TerseIndex()


_TERSE = {"k", "lp", "ls", "s", "v", "ttl", "exp", "w"}
_DEFAULT = {"pk", "list_pk", "list_sk", "state", "version", "expires_at", "expires_at_us"}


def _names_in(value: Any) -> set[str]:
    """Every attribute name a request mentions: item keys, key schemas, expression names."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("Item", "Key"):
                found.update(inner)
            elif key == "ExpressionAttributeNames":
                found.update(inner.values())
            elif key == "AttributeName":
                found.add(inner)
            found |= _names_in(inner)
    elif isinstance(value, list):
        for inner in value:
            found |= _names_in(inner)
    return found


def test_a_model_with_other_names_drives_every_request(kit: DynamoDBKit) -> None:
    table = kit.new_table_name()
    cp = DynamoDBCheckpointer(table, namespace="n", ttl=timedelta(hours=1), **kit.connection())
    cp._table = DynamoDBTable(
        dataclasses.replace(cp.settings, table_name=table), "n", 1, model=_Terse
    )
    calls = record_requests(cp)
    try:
        assert cp.create_table(table_format="single-item") is True
        info = cp.save_state("t", AgentStateSnapshot(scratchpad={"n": 1}))
        assert cp.save_state("t", AgentStateSnapshot(), expected_version=1).version == 2
        assert cp.load_checkpoint("t").info.version == info.version + 1
        assert [thread.thread_id for thread in cp.list_threads().threads] == ["t"]
        assert cp.purge_expired() == 0
        assert cp.delete_thread("t") is True

        mentioned = set().union(*(_names_in(params) for _, params, _ in calls))
        assert mentioned >= _TERSE
        assert not mentioned & _DEFAULT

        description = kit.client.describe_table(TableName=table)["Table"]
        assert description["KeySchema"] == [{"AttributeName": "k", "KeyType": "HASH"}]
        (index,) = description["GlobalSecondaryIndexes"]
        assert index["IndexName"] == "by_time"
        assert set(index["Projection"]["NonKeyAttributes"]) == {
            "v",
            "created_at",
            "updated_at",
            "size",
            "exp",
        }
        ttl = kit.client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
        assert ttl["AttributeName"] == "ttl"

        cp.save_state("u", AgentStateSnapshot())
        (item,) = kit.client.scan(TableName=table)["Items"]
        assert set(item) == {"k", "lp", "ls", "s", "v", "created_at", "updated_at", "size"} | {
            "ttl",
            "exp",
            "w",
        }
        assert item["k"] == {"S": "n#u"}
    finally:
        cp.delete_table()
        cp.close()


def test_a_table_of_the_default_model_is_not_the_terse_models(kit: DynamoDBKit) -> None:
    # The default table (pk, list_pk/list_sk, by_updated) is refused by the terse model.
    cp = kit.make(namespace="n" + uuid.uuid4().hex[:8])
    cp._table = DynamoDBTable(cp.settings, cp.namespace, 1, model=_Terse)
    with pytest.raises(SchemaNotReadyError, match="key schema"):
        cp.create_table(table_format="single-item")
    cp.close()


def test_an_inconsistent_model_is_refused() -> None:
    class Projecting(GlobalSecondaryIndex["Odd"]):  # type: ignore[no-untyped-call]
        class Meta:
            index_name = "by_updated"
            projection = IncludeProjection(["version", "colour"])

        list_pk = UnicodeAttribute(hash_key=True)
        list_sk = UnicodeAttribute(range_key=True)

    class Odd(CheckpointItem):
        by_updated = Projecting()

    with pytest.raises(ConfigurationError, match="colour"):
        TableSchema.of(Odd)

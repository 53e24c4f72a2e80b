"""The DynamoDB model: one item per thread and one index to list a namespace. No I/O here.

Table design (attribute names as stored):

- ``pk`` (S, table hash key): ``"<namespace>#<thread_id>"``. Every thread is its own partition
  key, so writes spread over the table's partitions however busy one namespace is; namespaces
  cannot contain ``#``, so the key splits back unambiguously.
- ``list_pk`` / ``list_sk`` (S, hash and range key of the `ListingIndex` ``by_updated``): the
  namespace (or ``"<namespace>#<shard>"`` with index shards) and ``"<updated_at>#<thread_id>"``,
  so a Query with ``ScanIndexForward=False`` lists a namespace newest first, ties broken by
  thread id, exactly the contract's order.
- ``state`` (S): the state's JSON text as the library encoded it.
- ``version``, ``size`` (N); ``created_at``, ``updated_at`` (S, UTC with microseconds, which sort
  as text).
- ``write_id`` (S): a random token per save, so that a save whose request was retried by the
  client after the service had already applied it recognizes its own write.
- ``expires_at`` (N, the table's TTL attribute): epoch seconds rounded *up*, so the service never
  deletes an item before the library considers it expired. ``expires_at_us`` (N) is the exact
  expiry in microseconds that reads compare against, because DynamoDB deletes expired items
  late (up to days) and the TTL attribute has only whole seconds.

Model classes are built per table and connection settings by `checkpoint_model`; each gets a
unique class name so that several checkpointers (tables, endpoints) coexist in one process.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pynamodb.attributes import (
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.constants import PAY_PER_REQUEST_BILLING_MODE
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import Model

__all__ = [
    "INDEX_NAME",
    "TTL_ATTRIBUTE",
    "CheckpointItem",
    "ConnectionSettings",
    "ItemDecodeError",
    "ListingIndex",
    "checkpoint_model",
]

INDEX_NAME = "by_updated"
"""Name of the global secondary index that lists a namespace newest first."""

TTL_ATTRIBUTE = "expires_at"
"""The attribute the table's Time to Live setting reads."""

_LISTED = ["version", "created_at", "updated_at", "size", "expires_at_us"]
"""Non-key attributes projected into the index: everything a listing shows, never the state."""


class ItemDecodeError(Exception):
    """A stored item whose attributes do not have the model's types.

    Attributes:
        key: The item's ``pk`` (``"<namespace>#<thread_id>"``), or ``""`` if it has none.
    """

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        self.detail = detail
        super().__init__(f"item {key!r}: {detail}")


class ListingIndex(GlobalSecondaryIndex["CheckpointItem"]):  # type: ignore[no-untyped-call]
    """Lists one namespace (or one shard of it) by ``updated_at`` then thread id."""

    class Meta:
        """PynamoDB index settings."""

        index_name = INDEX_NAME
        projection = IncludeProjection(_LISTED)

    list_pk = UnicodeAttribute(hash_key=True)
    list_sk = UnicodeAttribute(range_key=True)


_Item = TypeVar("_Item", bound="CheckpointItem")


class CheckpointItem(Model):
    """One thread's checkpoint. Use a subclass from `checkpoint_model`, which names the table."""

    pk = UnicodeAttribute(hash_key=True)
    list_pk = UnicodeAttribute()
    list_sk = UnicodeAttribute()
    state = UnicodeAttribute(null=True)
    version = NumberAttribute()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    size = NumberAttribute()
    expires_at = TTLAttribute(null=True)
    expires_at_us = NumberAttribute(null=True)
    write_id = UnicodeAttribute(null=True)

    by_updated = ListingIndex()

    @classmethod
    def from_raw_data(cls: type[_Item], data: dict[str, Any]) -> _Item:
        """Build an item from DynamoDB's wire format; `ItemDecodeError` if a type is wrong."""
        try:
            return super().from_raw_data(data)
        except (TypeError, ValueError) as exc:
            key = data.get("pk", {}).get("S", "") if isinstance(data, dict) else ""
            raise ItemDecodeError(key if isinstance(key, str) else "", str(exc)) from exc


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Where the table lives and how to reach it.

    Attributes:
        table_name: The DynamoDB table.
        region: AWS region; ``None`` uses the standard configuration (``AWS_DEFAULT_REGION``,
            ``~/.aws/config``).
        endpoint_url: Custom endpoint (moto, LocalStack, a VPC endpoint); ``None`` for AWS.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for a response.
        max_retries: Retries after the first attempt for throttling, 5xx and network errors.
        max_pool_connections: HTTP connections kept to the endpoint.
        aws_access_key_id: Explicit credentials; ``None`` uses the standard credential chain.
        aws_secret_access_key: Explicit credentials (with the key id).
        aws_session_token: Session token of temporary credentials.
    """

    table_name: str
    region: str | None = None
    endpoint_url: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    max_retries: int = 3
    max_pool_connections: int = 10
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)


_serial = itertools.count(1)


def checkpoint_model(settings: ConnectionSettings) -> type[CheckpointItem]:
    """A new `CheckpointItem` subclass bound to ``settings`` (its own connection, no I/O yet).

    Args:
        settings: Table name, region, endpoint, credentials, timeouts and retries.

    Returns:
        A model class whose ``by_updated`` index and connection belong to it alone.
    """
    meta = type(
        "Meta",
        (),
        {
            "table_name": settings.table_name,
            "region": settings.region,
            "host": settings.endpoint_url,
            "connect_timeout_seconds": settings.connect_timeout,
            "read_timeout_seconds": settings.read_timeout,
            "max_retry_attempts": settings.max_retries,
            "max_pool_connections": settings.max_pool_connections,
            "aws_access_key_id": settings.aws_access_key_id,
            "aws_secret_access_key": settings.aws_secret_access_key,
            "aws_session_token": settings.aws_session_token,
            "billing_mode": PAY_PER_REQUEST_BILLING_MODE,
        },
    )
    name = f"CheckpointItem_{next(_serial)}"
    namespace = {"Meta": meta, "__module__": __name__, "__qualname__": name}
    return type(name, (CheckpointItem,), namespace)

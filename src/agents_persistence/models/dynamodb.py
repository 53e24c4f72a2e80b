"""The DynamoDB models: the items of a thread and one index to list a namespace. No I/O here.

A table of the pieces format (the default) keeps a thread as one partition: a `ThreadHeadItem`
plus `PieceItem`s (see their docstrings and ``docs/dynamodb.md``). A table of the single-item
format (earlier versions) keeps one `CheckpointItem` per thread. `ThreadHeadItem` extends
`CheckpointItem`: the attributes below are those of both.

Attributes as stored:

- ``pk`` (S, table hash key): ``"<namespace>#<thread_id>"``. Every thread is its own partition
  key, so writes spread over the table's partitions however busy one namespace is; namespaces
  cannot contain ``#``, so the key splits back unambiguously.
- ``list_pk`` / ``list_sk`` (S, hash and range key of the `ListingIndex` ``by_updated``): the
  namespace (or ``"<namespace>#<shard>"`` with index shards) and ``"<updated_at>#<thread_id>"``,
  so a Query with ``ScanIndexForward=False`` lists a namespace newest first, ties broken by
  thread id, exactly the contract's order.
- ``state`` (S): the state's JSON text as the library encoded it (in a head item: the head's
  JSON, the state without its transcript and large maps).
- ``version``, ``size`` (N); ``created_at``, ``updated_at`` (S, UTC with microseconds, which sort
  as text).
- ``write_id`` (S): a random token per save, so that a save whose request was retried by the
  client after the service had already applied it recognizes its own write.
- ``expires_at`` (N, the table's TTL attribute): epoch seconds rounded *up*, so the service never
  deletes an item before the library considers it expired. ``expires_at_us`` (N) is the exact
  expiry in microseconds that reads compare against, because DynamoDB deletes expired items
  late (up to days) and the TTL attribute has only whole seconds.

`CheckpointItem` is the single declaration of these names: the store reads every attribute
and index name from it (``get_attributes()``, ``attr_name``, the index's ``Meta``), never from a
string of its own. The model is not bound to a table: PynamoDB's `TableConnection`, owned by
each checkpointer, does the I/O, and the model describes, serializes and deserializes items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pynamodb.attributes import (
    Attribute,
    BinaryAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import GlobalSecondaryIndex, IncludeProjection
from pynamodb.models import Model

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "HEAD_SORT_KEY",
    "INDEX_NAME",
    "TTL_ATTRIBUTE",
    "CheckpointItem",
    "ConnectionSettings",
    "ItemDecodeError",
    "ListingIndex",
    "PieceItem",
    "ThreadHeadItem",
]


class ItemDecodeError(Exception):
    """A stored item whose attributes do not have the model's types.

    Attributes:
        key: The item's ``pk`` (``"<namespace>#<thread_id>"``), or ``""`` if it has none.
    """

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        self.detail = detail
        super().__init__(f"item {key!r}: {detail}")


_T = TypeVar("_T")


def _decoded(build: Callable[[dict[str, Any]], _T], hash_key: str, data: dict[str, Any]) -> _T:
    """``build(data)``, PynamoDB's type errors while decoding turned into `ItemDecodeError`."""
    try:
        return build(data)
    except (TypeError, ValueError) as exc:
        key = data.get(hash_key, {}).get("S", "") if isinstance(data, dict) else ""
        raise ItemDecodeError(key if isinstance(key, str) else "", str(exc)) from exc


class ListingIndex(GlobalSecondaryIndex["CheckpointItem"]):  # type: ignore[no-untyped-call]
    """Lists one namespace (or one shard of it) by ``updated_at`` then thread id."""

    class Meta:
        """PynamoDB index settings.

        The projection names the model's attributes a listing reads (never the state).
        """

        index_name = "by_updated"
        projection = IncludeProjection(
            ["version", "created_at", "updated_at", "size", "expires_at_us"]
        )
        attributes: dict[str, Attribute[Any]]  # the index keys, filled in by PynamoDB

    list_pk = UnicodeAttribute(hash_key=True)
    list_sk = UnicodeAttribute(range_key=True)


_Item = TypeVar("_Item", bound="CheckpointItem")


class CheckpointItem(Model):
    """One thread's checkpoint: every attribute and the listing index, declared once."""

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
        return _decoded(super().from_raw_data, cls.pk.attr_name, data)


class ThreadHeadItem(CheckpointItem):
    """The head item of a thread in a table of the pieces format (see ``docs/dynamodb.md``).

    The table's key is the thread's partition (``pk``) plus a sort key ``sk``: `HEAD_SORT_KEY`
    for the head, ``p#<piece key>#<n>`` for the chunks of its pieces (`PieceItem`) and
    ``o#<write id>#<n>`` for a head too large to hold inline. Only heads carry the listing
    index's attributes, so the index (a sparse one) lists threads, never pieces.

    ``state`` holds the head's JSON (the state without its transcript and large maps) and
    ``manifest`` the layout manifest naming the pieces, unless they are too large for one item:
    then ``overflow`` counts the items holding them, ``head_bytes`` is the head's length in
    their joined text. A checkpointer with keys seals the head (and the whole manifest with
    it): the sealed bytes go in ``sealed`` (B) instead of ``state``, and ``manifest`` keeps
    only what is stored in clear (`agents_persistence._codec`). ``token`` is the manifest's
    token (a save's delta applies only on it); ``pieces_expire`` is the earliest time to live
    of the pieces (epoch seconds), which a save must not outlive without rewriting them.
    """

    sk = UnicodeAttribute(range_key=True)
    sealed = BinaryAttribute(null=True, legacy_encoding=False)
    manifest = UnicodeAttribute(null=True)
    overflow = NumberAttribute(null=True)
    head_bytes = NumberAttribute(null=True)
    token = UnicodeAttribute(null=True)
    pieces_expire = NumberAttribute(null=True)

    by_updated = ListingIndex()


_Piece = TypeVar("_Piece", bound="PieceItem")


class PieceItem(Model):
    """One chunk of a piece (or of an overflowing head) in a table of the pieces format.

    ``body`` is the chunk of the packed piece (`agents_persistence._layout.pack`), ``parts``
    how many chunks the piece has, ``expires_at`` the table's TTL attribute (at or after the
    head's expiry, so the service removes pieces no earlier than their head).
    """

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    body = BinaryAttribute(legacy_encoding=False)
    parts = NumberAttribute()
    expires_at = TTLAttribute(null=True)

    @classmethod
    def from_raw_data(cls: type[_Piece], data: dict[str, Any]) -> _Piece:
        """Build an item from DynamoDB's wire format; `ItemDecodeError` if a type is wrong."""
        return _decoded(super().from_raw_data, cls.pk.attr_name, data)


HEAD_SORT_KEY = "h"
"""The sort key of a thread's head item in the pieces format."""

INDEX_NAME: str = ListingIndex.Meta.index_name
"""Name of the global secondary index that lists a namespace newest first."""

TTL_ATTRIBUTE: str = CheckpointItem.expires_at.attr_name
"""The attribute the table's Time to Live setting reads."""


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
        call_timeout: Seconds one call of the store may take in all, retries included.
        max_pool_connections: HTTP connections kept to the endpoint.
        aws_access_key_id: Explicit credentials; ``None`` uses the standard credential chain.
        aws_secret_access_key: Explicit credentials (with the key id).
        aws_session_token: Session token of temporary credentials.
    """

    table_name: str
    region: str | None = None
    endpoint_url: str | None = None
    connect_timeout: float = 1.0
    read_timeout: float = 2.0
    max_retries: int = 3
    call_timeout: float = 5.0
    max_pool_connections: int = 10
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = field(default=None, repr=False)
    aws_session_token: str | None = field(default=None, repr=False)

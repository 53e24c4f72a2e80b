"""The LangGraph DynamoDB table: one PynamoDB model, its sort keys, its schema. No I/O here.

One partition per thread (hash key ``pk`` = the thread id), every item of the thread in it,
told apart by the sort key ``sk``:

- ``T``: the thread's header: its generation (``gen``) and expiry (``expires_at``, the table's
  Time to Live attribute, in whole seconds rounded up; ``expires_at_us``, the exact expiry reads
  compare against, since DynamoDB deletes expired items late).
- ``C#<ns>#<checkpoint_id>``: a checkpoint (its body without channel values, and its metadata,
  as JSON), so a Query of ``C#<ns>#`` lists a namespace by checkpoint id.
- ``B#<ns>#<channel>#<version>``: one channel value (a serializer payload).
- ``W#<ns>#<checkpoint_id>#<task_id>#<idx>``: one pending write.
- ``P#<part_key>#<n>``: part ``n`` of a payload too large for one item (see `split`).
- ``H#<ns>``: a namespace's head, written only by savers with write ownership: the id of the
  checkpoint the last such ``put`` stored, in the same transaction as that checkpoint, so a
  ``put`` conditioned on the head it read never races another.

Each item carries the generation of the thread it was written for. A thread starts (first write,
or first write after it expired) with a fresh random generation in its header; items of any
other generation are invisible. So expiry, deletion and restart take effect at once, whatever
is left to clean up, and a header that DynamoDB's TTL removed leaves its thread invisible.

The ``<ns>``, channel, version and task id parts are escaped (``%`` and ``#``) so that a
prefix never matches a longer namespace or channel.
"""

from __future__ import annotations

from typing import Any

from pynamodb.attributes import (
    BinaryAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.constants import (
    ATTR_DEFINITIONS,
    ATTR_NAME,
    ATTR_TYPE,
    KEY_SCHEMA,
    KEY_TYPE,
    TABLE_NAME,
)
from pynamodb.models import Model
from pynamodb.types import HASH, RANGE

__all__ = [
    "HEADER",
    "PART_BYTES",
    "SORT_KEY_BYTES",
    "LangGraphItem",
    "blob_key",
    "blob_prefix",
    "checkpoint_key",
    "checkpoint_prefix",
    "create_table_arguments",
    "head_key",
    "meta_table_description",
    "part_key",
    "split",
    "write_key",
    "write_prefix",
]

HEADER = "T"
"""Sort key of a thread's header item."""

PART_BYTES = 350_000
"""Payload bytes per item: a larger payload is split over several items (DynamoDB holds at most
400 KB per item, names and keys included)."""


class LangGraphItem(Model):
    """Any item of the LangGraph table: header, checkpoint, value, write or payload part.

    Attributes not used by a kind of item are absent from it.
    """

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    gen = UnicodeAttribute(null=True)
    ns = UnicodeAttribute(null=True)
    checkpoint_id = UnicodeAttribute(null=True)
    parent_id = UnicodeAttribute(null=True)
    run_id = UnicodeAttribute(null=True)
    channel = UnicodeAttribute(null=True)
    version = UnicodeAttribute(null=True)
    task_id = UnicodeAttribute(null=True)
    task_path = UnicodeAttribute(null=True)
    idx = NumberAttribute(null=True)
    type = UnicodeAttribute(null=True)
    data = BinaryAttribute(null=True, legacy_encoding=False)
    parts = NumberAttribute(null=True)
    part_key = UnicodeAttribute(null=True)
    expires_at = TTLAttribute(null=True)
    expires_at_us = NumberAttribute(null=True)


SORT_KEY_BYTES = 1024
"""DynamoDB's limit on a sort key."""


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace("#", "%23")


def checkpoint_prefix(namespace: str | None) -> str:
    """The sort key prefix of a namespace's checkpoints (of every namespace with ``None``)."""
    return "C#" if namespace is None else f"C#{_escape(namespace)}#"


def checkpoint_key(namespace: str, checkpoint_id: str) -> str:
    """The sort key of a checkpoint."""
    return f"{checkpoint_prefix(namespace)}{checkpoint_id}"


def head_key(namespace: str) -> str:
    """The sort key of a namespace's head: the checkpoint its last owned ``put`` stored."""
    return f"H#{_escape(namespace)}"


def blob_prefix(namespace: str) -> str:
    """The sort key prefix of a namespace's channel values."""
    return f"B#{_escape(namespace)}#"


def blob_key(namespace: str, channel: str, version: str) -> str:
    """The sort key of one version of a channel's value."""
    return f"{blob_prefix(namespace)}{_escape(channel)}#{_escape(version)}"


def write_prefix(namespace: str, checkpoint_id: str, task_id: str | None = None) -> str:
    """The sort key prefix of a checkpoint's writes (of one task's, with ``task_id``)."""
    prefix = f"W#{_escape(namespace)}#{checkpoint_id}#"
    return prefix if task_id is None else f"{prefix}{_escape(task_id)}#"


def write_key(namespace: str, checkpoint_id: str, task_id: str, idx: int) -> str:
    """The sort key of one pending write."""
    return f"{write_prefix(namespace, checkpoint_id, task_id)}{idx}"


def part_key(token: str, number: int) -> str:
    """The sort key of part ``number`` (from 1) of the payload ``token`` names."""
    return f"P#{token}#{number:06d}"


def split(data: bytes) -> list[bytes]:
    """``data`` in pieces of at most `PART_BYTES` (one piece, maybe empty, if it fits)."""
    return [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)] or [b""]


def _key_schema() -> list[dict[str, str]]:
    return [
        {ATTR_NAME: LangGraphItem.pk.attr_name, KEY_TYPE: HASH},
        {ATTR_NAME: LangGraphItem.sk.attr_name, KEY_TYPE: RANGE},
    ]


def _definitions() -> list[dict[str, str]]:
    return [
        {ATTR_NAME: LangGraphItem.pk.attr_name, ATTR_TYPE: "S"},
        {ATTR_NAME: LangGraphItem.sk.attr_name, ATTR_TYPE: "S"},
    ]


def create_table_arguments() -> dict[str, Any]:
    """Keyword arguments of `TableConnection.create_table`: the two string keys, no index."""
    return {"attribute_definitions": _definitions(), "key_schema": _key_schema()}


def meta_table_description(table_name: str) -> dict[str, Any]:
    """The table description PynamoDB's `TableConnection` builds its requests from."""
    return {TABLE_NAME: table_name, KEY_SCHEMA: _key_schema(), ATTR_DEFINITIONS: _definitions()}

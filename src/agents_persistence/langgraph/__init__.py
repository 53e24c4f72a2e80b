"""LangGraph checkpoint savers on the library's stores (extra ``langgraph``).

`SQLCheckpointSaver` and its asyncio twin `AsyncSQLCheckpointSaver` implement LangGraph's
``BaseCheckpointSaver`` (``get_tuple``, ``list``, ``put``, ``put_writes``, ``delete_thread``,
``delete_for_runs``, ``copy_thread``, ``prune``, ``get_next_version`` and the async methods) on
SQLite, PostgreSQL and MySQL/MariaDB, in tables the library's Alembic migrations create.
`DynamoDBCheckpointSaver` and `AsyncDynamoDBCheckpointSaver` do the same on a DynamoDB table
(extra ``dynamodb`` as well).
`RedisCheckpointSaver` and `AsyncRedisCheckpointSaver` do the same on Redis 7 without modules,
Redis Cluster included (extra ``redis`` as well).
Values go through LangGraph's msgpack serializer without its pickle fallback (`default_serde`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# First, before any dependency: without the extra this raises MissingExtraError naming it.
from agents_persistence.langgraph import _extra  # noqa: F401

# isort: split

from agents_persistence.langgraph._async import AsyncSQLCheckpointSaver
from agents_persistence.langgraph._serde import (
    DEFAULT_ALLOWLIST,
    NoPickleSerializer,
    default_serde,
)
from agents_persistence.langgraph._sync import SQLCheckpointSaver

if TYPE_CHECKING:
    from agents_persistence.langgraph._dynamodb_async import AsyncDynamoDBCheckpointSaver
    from agents_persistence.langgraph._dynamodb_sync import DynamoDBCheckpointSaver
    from agents_persistence.langgraph._redis_async import AsyncRedisCheckpointSaver
    from agents_persistence.langgraph._redis_sync import RedisCheckpointSaver

__all__ = [
    "DEFAULT_ALLOWLIST",
    "AsyncDynamoDBCheckpointSaver",
    "AsyncRedisCheckpointSaver",
    "AsyncSQLCheckpointSaver",
    "DynamoDBCheckpointSaver",
    "NoPickleSerializer",
    "RedisCheckpointSaver",
    "SQLCheckpointSaver",
    "default_serde",
]


def __getattr__(name: str) -> object:
    # The DynamoDB savers need the ``dynamodb`` extra too: imported when first named.
    if name == "DynamoDBCheckpointSaver":
        from agents_persistence.langgraph._dynamodb_sync import DynamoDBCheckpointSaver

        return DynamoDBCheckpointSaver
    if name == "AsyncDynamoDBCheckpointSaver":
        from agents_persistence.langgraph._dynamodb_async import AsyncDynamoDBCheckpointSaver

        return AsyncDynamoDBCheckpointSaver
    # The Redis savers need the ``redis`` extra too.
    if name == "RedisCheckpointSaver":
        from agents_persistence.langgraph._redis_sync import RedisCheckpointSaver

        return RedisCheckpointSaver
    if name == "AsyncRedisCheckpointSaver":
        from agents_persistence.langgraph._redis_async import AsyncRedisCheckpointSaver

        return AsyncRedisCheckpointSaver
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

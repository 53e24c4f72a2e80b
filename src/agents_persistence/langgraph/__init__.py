"""LangGraph checkpoint savers on the library's stores (extra ``langgraph``).

`SQLCheckpointSaver` and its asyncio twin `AsyncSQLCheckpointSaver` implement LangGraph's
``BaseCheckpointSaver`` (``get_tuple``, ``list``, ``put``, ``put_writes``, ``delete_thread``,
``delete_for_runs``, ``copy_thread``, ``prune``, ``get_next_version`` and the async methods) on
SQLite, PostgreSQL and MySQL/MariaDB, in tables the library's Alembic migrations create.
Values go through LangGraph's msgpack serializer without its pickle fallback (`default_serde`).
`RedisCheckpointSaver` and `AsyncRedisCheckpointSaver` (extras ``langgraph`` and ``redis``) do
the same on Redis 7 without modules, Redis Cluster included; they are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    from agents_persistence.langgraph._redis_async import AsyncRedisCheckpointSaver
    from agents_persistence.langgraph._redis_sync import RedisCheckpointSaver

_REDIS = {
    "RedisCheckpointSaver": "agents_persistence.langgraph._redis_sync",
    "AsyncRedisCheckpointSaver": "agents_persistence.langgraph._redis_async",
}


def __getattr__(name: str) -> Any:
    """The Redis savers, imported on first use (they need the ``redis`` extra too)."""
    if name in _REDIS:
        return getattr(importlib.import_module(_REDIS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_ALLOWLIST",
    "AsyncRedisCheckpointSaver",
    "AsyncSQLCheckpointSaver",
    "NoPickleSerializer",
    "RedisCheckpointSaver",
    "SQLCheckpointSaver",
    "default_serde",
]

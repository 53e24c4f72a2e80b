"""LangGraph checkpoint savers on the library's stores (extra ``langgraph``).

`SQLCheckpointSaver` and its asyncio twin `AsyncSQLCheckpointSaver` implement LangGraph's
``BaseCheckpointSaver`` (``get_tuple``, ``list``, ``put``, ``put_writes``, ``delete_thread``,
``delete_for_runs``, ``copy_thread``, ``prune``, ``get_next_version`` and the async methods) on
SQLite, PostgreSQL and MySQL/MariaDB, in tables the library's Alembic migrations create.
Values go through LangGraph's msgpack serializer without its pickle fallback (`default_serde`).
"""

from __future__ import annotations

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

__all__ = [
    "DEFAULT_ALLOWLIST",
    "AsyncSQLCheckpointSaver",
    "NoPickleSerializer",
    "SQLCheckpointSaver",
    "default_serde",
]

"""agents-persistence: durable, versioned agent state per conversation thread.

One contract (`Checkpointer` / `AsyncCheckpointer`), several stores: in memory, SQL
(SQLAlchemy + Alembic), Redis and DynamoDB. Store classes are imported on first use, so the core
needs only pydantic and each store only its own extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agents_persistence._open import open_async_checkpointer, open_checkpointer
from agents_persistence.base import BaseAsyncCheckpointer, BaseCheckpointer
from agents_persistence.contract import (
    AsyncCheckpointer,
    Checkpoint,
    Checkpointer,
    CheckpointInfo,
    ThreadInfo,
    ThreadPage,
)
from agents_persistence.errors import (
    AccessDeniedError,
    AuthenticationError,
    BackendUnavailableError,
    CallTimeoutError,
    CheckpointerError,
    ConfigurationError,
    ConflictError,
    CorruptStateError,
    DatabaseNotFoundError,
    DecryptionError,
    InvalidArgumentError,
    InvalidCursorError,
    InvalidStateError,
    InvalidThreadIdError,
    MissingExtraError,
    MissingUpcasterError,
    PayloadVersionError,
    SchemaNotReadyError,
    StateTooLargeError,
    ThreadForkError,
    TransactionAbortedError,
    UnknownKeyError,
)
from agents_persistence.repositories.memory import (
    AsyncMemoryCheckpointer,
    MemoryCheckpointer,
    MemoryStore,
)
from agents_persistence.snapshot import (
    AgentInterrupt,
    AgentMessage,
    AgentStateSnapshot,
    HumanInLoopInterrupt,
    JsonContent,
    MessageMetadata,
    TextContent,
    TodoItem,
)

if TYPE_CHECKING:
    from agents_persistence.repositories.dynamodb import (
        AsyncDynamoDBCheckpointer,
        DynamoDBCheckpointer,
    )
    from agents_persistence.repositories.redis import AsyncRedisCheckpointer, RedisCheckpointer
    from agents_persistence.repositories.sql import AsyncSQLCheckpointer, SQLCheckpointer

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "AgentInterrupt",
    "AgentMessage",
    "AgentStateSnapshot",
    "AsyncCheckpointer",
    "AsyncDynamoDBCheckpointer",
    "AsyncMemoryCheckpointer",
    "AsyncRedisCheckpointer",
    "AsyncSQLCheckpointer",
    "AuthenticationError",
    "BackendUnavailableError",
    "CallTimeoutError",
    "BaseAsyncCheckpointer",
    "BaseCheckpointer",
    "Checkpoint",
    "CheckpointInfo",
    "Checkpointer",
    "CheckpointerError",
    "ConfigurationError",
    "ConflictError",
    "CorruptStateError",
    "DatabaseNotFoundError",
    "DecryptionError",
    "DynamoDBCheckpointer",
    "HumanInLoopInterrupt",
    "InvalidArgumentError",
    "InvalidCursorError",
    "InvalidStateError",
    "InvalidThreadIdError",
    "JsonContent",
    "MemoryCheckpointer",
    "MemoryStore",
    "MessageMetadata",
    "MissingExtraError",
    "MissingUpcasterError",
    "PayloadVersionError",
    "RedisCheckpointer",
    "SQLCheckpointer",
    "SchemaNotReadyError",
    "StateTooLargeError",
    "ThreadForkError",
    "TextContent",
    "ThreadInfo",
    "ThreadPage",
    "TodoItem",
    "TransactionAbortedError",
    "UnknownKeyError",
    "__version__",
    "open_async_checkpointer",
    "open_checkpointer",
]

_LAZY = {
    "SQLCheckpointer": "agents_persistence.repositories.sql",
    "AsyncSQLCheckpointer": "agents_persistence.repositories.sql",
    "RedisCheckpointer": "agents_persistence.repositories.redis",
    "AsyncRedisCheckpointer": "agents_persistence.repositories.redis",
    "DynamoDBCheckpointer": "agents_persistence.repositories.dynamodb",
    "AsyncDynamoDBCheckpointer": "agents_persistence.repositories.dynamodb",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

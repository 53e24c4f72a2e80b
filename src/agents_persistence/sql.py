"""The SQL store for applications on SQLAlchemy: checkpointers, the mapped model, queries.

Everything an app on SQLAlchemy needs from one import (it requires SQLAlchemy, the ``sqlite``,
``postgres`` or ``mysql`` extra)::

    from agents_persistence.sql import AgentCheckpoint, SQLCheckpointer, has_state_key

- `SQLCheckpointer` / `AsyncSQLCheckpointer`, and their unit of work ``cp.using(session)``
  (`BoundSQLCheckpointer` / `AsyncBoundSQLCheckpointer`).
- `AgentCheckpoint`, the mapped class of the default table ``agent_checkpoints`` (one row per
  thread, key ``(namespace, thread_id)``), and `checkpoint_model` for another table name or
  schema: ``select()`` them and join the app's own tables on ``(namespace, thread_id)``.
- `has_state_key`, a PostgreSQL JSONB key test; with ``"pending_interrupts"`` a partial index
  serves it.
- `pieces_model` / `pieces_table`: the table ``<table>_pieces`` holding the transcript and the
  large ``files``/``scratchpad`` entries of each state, outside ``state`` (which holds the rest).

The model is for reading. Write through a checkpointer: it keeps versions, expiry and the
payload's size consistent.
"""

from __future__ import annotations

from agents_persistence.errors import TransactionAbortedError
from agents_persistence.models.sql import (
    DEFAULT_TABLE_NAME,
    AgentCheckpoint,
    CheckpointRow,
    checkpoint_model,
    checkpoint_table,
    has_state_key,
    pieces_model,
    pieces_table,
)
from agents_persistence.repositories.sql import (
    AsyncBoundSQLCheckpointer,
    AsyncSQLCheckpointer,
    BoundSQLCheckpointer,
    SQLCheckpointer,
)

__all__ = [
    "DEFAULT_TABLE_NAME",
    "AgentCheckpoint",
    "AsyncBoundSQLCheckpointer",
    "AsyncSQLCheckpointer",
    "BoundSQLCheckpointer",
    "CheckpointRow",
    "SQLCheckpointer",
    "TransactionAbortedError",
    "checkpoint_model",
    "checkpoint_table",
    "has_state_key",
    "pieces_model",
    "pieces_table",
]

"""The SQL model: one declarative table of agent checkpoints. No I/O here.

``agent_checkpoints`` by default; `checkpoint_model` builds the same model under another table
name or schema (each in its own `MetaData`). Column types are chosen per dialect:
JSONB on PostgreSQL, JSON elsewhere; microsecond timestamps everywhere (``DATETIME(6)`` on
MySQL/MariaDB); a binary, no-pad collation for thread ids on MySQL/MariaDB so that ``"a"``,
``"A"`` and ``"a "`` stay three different threads.
"""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - SQLAlchemy resolves Mapped[] at run time
from functools import cache
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, MetaData, String, Table
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agents_persistence._core import validate_identifier

__all__ = [
    "DEFAULT_TABLE_NAME",
    "NAMING_CONVENTION",
    "AgentCheckpoint",
    "CheckpointRow",
    "checkpoint_model",
    "checkpoint_table",
]

DEFAULT_TABLE_NAME = "agent_checkpoints"

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Constraint names are deterministic from the first revision, so later migrations can alter
them (also under SQLite's batch mode)."""

_Timestamp = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
_Json = JSON().with_variant(postgresql.JSONB(), "postgresql")


def _key(length: int) -> String:
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_nopad_bin"),
        "mysql",
        "mariadb",
    )


class CheckpointRow:
    """The columns every checkpoint model has (a mixin; each model has its own metadata)."""

    namespace: Mapped[str] = mapped_column(_key(64), primary_key=True)
    thread_id: Mapped[str] = mapped_column(_key(256), primary_key=True)
    state: Mapped[Any] = mapped_column(_Json, nullable=False)
    state_bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[datetime] = mapped_column(_Timestamp, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(_Timestamp, nullable=False)
    expires_at: Mapped[datetime | None] = mapped_column(_Timestamp, nullable=True)


@cache
def checkpoint_model(
    table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None
) -> type[CheckpointRow]:
    """The declarative model for ``table_name`` in ``schema`` (built once, then cached).

    Args:
        table_name: A SQL identifier (letters, digits, ``_``); validated, never pasted raw.
        schema: An optional schema (PostgreSQL) or database (MySQL) name, validated the same way.
    """
    validate_identifier(table_name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema name")

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    attrs: dict[str, Any] = {
        "__tablename__": table_name,
        "__table_args__": (
            Index(None, "namespace", "updated_at", "thread_id"),
            Index(None, "namespace", "expires_at"),
            {"schema": schema},
        ),
    }
    name = "AgentCheckpoint" if table_name == DEFAULT_TABLE_NAME else f"Checkpoint_{table_name}"
    model = type(name, (CheckpointRow, Base), attrs)
    model.__qualname__ = f"checkpoint_model.<{schema}.{table_name}>"
    return model


AgentCheckpoint = checkpoint_model()
"""The default model: table ``agent_checkpoints``."""


def checkpoint_table(table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None) -> Table:
    """The `Table` of `checkpoint_model` (what Core statements and migrations use)."""
    table: Table = checkpoint_model(table_name, schema).__table__  # type: ignore[attr-defined]
    return table

"""The SQL model: the table of agent checkpoints and its pieces table. No I/O here.

``agent_checkpoints`` by default; `checkpoint_model` builds the same model under another table
name or schema (each in its own `MetaData`). Applications query it with ``select()`` and join
their own tables on ``(namespace, thread_id)``; ``agents_persistence.sql`` re-exports it.

A row's ``state`` is the head of the stored state (`agents_persistence._layout`): every field
but the transcript and the ``files``/``scratchpad`` maps, which live as immutable pieces in
``<table>_pieces`` (`pieces_model`), named by the row's ``manifest``. A row whose ``manifest``
is NULL holds the whole state in ``state`` (rows written before the layout existed).
A row written by a checkpointer with keys (`agents_persistence.encryption`) keeps its head
sealed in ``sealed_state`` (binary), ``state`` as the empty JSON object ``{}``, and in
``manifest`` only the redacted manifest (token, piece keys, schema version): JSON queries on
``state`` and the pending-interrupts index do not see encrypted threads.
Column types are chosen per dialect: JSONB on PostgreSQL, JSON elsewhere; microsecond
timestamps everywhere (``DATETIME(6)`` on MySQL/MariaDB); a binary, no-pad collation for thread
ids on MySQL/MariaDB so that ``"a"``, ``"A"`` and ``"a "`` stay three different threads.
"""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - SQLAlchemy resolves Mapped[] at run time
from functools import cache
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    literal,
    text,
)
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agents_persistence._core import validate_identifier

__all__ = [
    "DEFAULT_TABLE_NAME",
    "NAMING_CONVENTION",
    "DIALECTS_INFO_KEY",
    "TOKEN_LENGTH",
    "AgentCheckpoint",
    "CheckpointRow",
    "PieceRow",
    "checkpoint_model",
    "checkpoint_table",
    "has_state_key",
    "interrupts_index_name",
    "pieces_model",
    "pieces_table",
    "pieces_table_name",
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
_LongText = Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
_Bytes = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

TOKEN_LENGTH = 32
"""Longest manifest token (``manifest_token``) and, doubled, piece key the tables hold."""


def _key(length: int) -> String:
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_nopad_bin"),
        "mysql",
        "mariadb",
    )


DIALECTS_INFO_KEY = "agents_persistence.dialects"
"""``Index.info`` key naming the only dialects an index exists on (with ``Index.ddl_if``), so
the migrations' comparison skips it elsewhere; Alembic's autogenerate does not read ``ddl_if``."""

_INTERRUPTS_PREDICATE = "state ? 'pending_interrupts'"


def interrupts_index_name(table_name: str) -> str:
    """The PostgreSQL partial index of rows whose state has pending interrupts."""
    return f"ix_{table_name}_interrupts"


def has_state_key(state: Any, key: str) -> ColumnElement[bool]:
    """PostgreSQL: whether the JSONB ``state`` has the top-level ``key`` (``state ? 'key'``).

    The key is rendered inline, as in a partial index predicate, so that the planner can match
    it: ``has_state_key(AgentCheckpoint.state, "pending_interrupts")`` is served by the
    ``ix_<table>_interrupts`` index (``pending_interrupts`` is omitted from the JSON when
    there are none).

    Args:
        state: The ``state`` column of a checkpoint model (or of an alias of one).
        key: A top-level key of the stored JSON.
    """
    expression: ColumnElement[bool] = state.op("?", is_comparison=True)(
        literal(key, Text(), literal_execute=True)
    )
    return expression


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
    manifest: Mapped[str | None] = mapped_column(_LongText, nullable=True)
    """The pieces the row's state is made of (JSON); NULL: ``state`` is the whole state."""
    manifest_token: Mapped[str | None] = mapped_column(_key(TOKEN_LENGTH), nullable=True)
    """The token of ``manifest``, which a save compares to apply a delta (NULL with it)."""
    sealed_state: Mapped[bytes | None] = mapped_column(_Bytes, nullable=True)
    """The sealed head of an encrypted state (``state`` is then ``{}``); NULL in clear."""


class PieceRow:
    """The columns of a pieces table: one immutable piece of a stored state (a mixin)."""

    namespace: Mapped[str] = mapped_column(_key(64), primary_key=True)
    thread_id: Mapped[str] = mapped_column(_key(256), primary_key=True)
    piece: Mapped[str] = mapped_column(_key(2 * TOKEN_LENGTH), primary_key=True)
    body: Mapped[bytes] = mapped_column(_Bytes, nullable=False)


def pieces_table_name(table_name: str = DEFAULT_TABLE_NAME) -> str:
    """The pieces table of the checkpoint table ``table_name``: ``<table_name>_pieces``."""
    return f"{table_name}_pieces"


@cache
def _base(table_name: str, schema: str | None) -> type[DeclarativeBase]:
    """The declarative base (and `MetaData`) of one checkpoint table and its pieces table."""
    validate_identifier(table_name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema name")

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    return Base


def pieces_model(table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None) -> type[PieceRow]:
    """The declarative model of the pieces of ``table_name`` (in the same `MetaData`).

    Args:
        table_name: The checkpoint table's name (validated); the model's table is
            `pieces_table_name` of it.
        schema: Its schema, as in `checkpoint_model`.
    """
    return _pieces_model(table_name, schema)


@cache
def _pieces_model(table_name: str, schema: str | None) -> type[PieceRow]:
    base = _base(table_name, schema)
    attrs: dict[str, Any] = {
        "__tablename__": pieces_table_name(table_name),
        "__table_args__": {"schema": schema},
    }
    model = type(f"Pieces_{table_name}", (PieceRow, base), attrs)
    model.__qualname__ = f"pieces_model.<{schema}.{table_name}>"
    return model


def checkpoint_model(
    table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None
) -> type[CheckpointRow]:
    """The declarative model for ``table_name`` in ``schema`` (built once, then cached).

    Args:
        table_name: A SQL identifier (letters, digits, ``_``); validated, never pasted raw.
        schema: An optional schema (PostgreSQL) or database (MySQL) name, validated the same way.
    """
    return _checkpoint_model(table_name, schema)


@cache
def _checkpoint_model(table_name: str, schema: str | None) -> type[CheckpointRow]:
    base = _base(table_name, schema)
    interrupts = Index(
        interrupts_index_name(table_name),
        "namespace",
        "updated_at",
        postgresql_where=text(_INTERRUPTS_PREDICATE),
        info={DIALECTS_INFO_KEY: ("postgresql",)},
    ).ddl_if(dialect="postgresql")
    attrs: dict[str, Any] = {
        "__tablename__": table_name,
        "__table_args__": (
            Index(None, "namespace", "updated_at", "thread_id"),
            Index(None, "namespace", "expires_at"),
            # Threads waiting for a human, newest first; a partial index costs a write only
            # for the states that have interrupts, where a GIN index over whole states would
            # cost every save.
            interrupts,
            {"schema": schema},
        ),
    }
    name = "AgentCheckpoint" if table_name == DEFAULT_TABLE_NAME else f"Checkpoint_{table_name}"
    model = type(name, (CheckpointRow, base), attrs)
    model.__qualname__ = f"checkpoint_model.<{schema}.{table_name}>"
    pieces_model(table_name, schema)  # in the same MetaData: migrations compare both
    return model


AgentCheckpoint = checkpoint_model()
"""The default model: table ``agent_checkpoints``."""


def checkpoint_table(table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None) -> Table:
    """The `Table` of `checkpoint_model` (what Core statements and migrations use)."""
    table: Table = checkpoint_model(table_name, schema).__table__  # type: ignore[attr-defined]
    return table


def pieces_table(table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None) -> Table:
    """The `Table` of `pieces_model`."""
    table: Table = pieces_model(table_name, schema).__table__  # type: ignore[attr-defined]
    return table

"""The SQL model of the LangGraph checkpoint savers: three declarative tables. No I/O here.

Each checkpoint table of the library (``agent_checkpoints`` by default) has three companions,
named after it and created by the same migrations:

- ``<table>_lg_checkpoints``: one row per LangGraph checkpoint, keyed by ``(thread_id,
  checkpoint_ns, checkpoint_id)``. The checkpoint without its channel values and the metadata
  are JSON (JSONB on PostgreSQL, where ``list(filter=...)`` uses containment). ``run_id`` is
  copied out of the metadata so that ``delete_for_runs`` is an indexed delete.
- ``<table>_lg_blobs``: channel values, one row per ``(thread_id, checkpoint_ns, channel,
  version)``. A value is stored when its channel's version changes, not at every checkpoint,
  so an unchanged message history is written once.
- ``<table>_lg_writes``: pending writes, keyed as LangGraph keys them: ``(thread_id,
  checkpoint_ns, checkpoint_id, task_id, idx)``.
- ``<table>_lg_threads``: the expiry of each thread written with a TTL (no row: no expiry).

Values are bytes from the saver's serializer (never pickle); binary columns are ``LONGBLOB`` on
MySQL/MariaDB, whose ``BLOB`` stops at 64 KiB. Key columns use the same binary, no-pad collation
as the main table on MySQL/MariaDB, and the key lengths keep every primary key within InnoDB's
3072 bytes.
"""

from __future__ import annotations

from datetime import datetime  # noqa: TC003 - SQLAlchemy resolves Mapped[] at run time
from functools import cache
from typing import Any, NamedTuple

from sqlalchemy import JSON, DateTime, Index, Integer, LargeBinary, MetaData, String, Table, Text
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from agents_persistence._core import validate_identifier
from agents_persistence.models.sql import DEFAULT_TABLE_NAME, NAMING_CONVENTION

__all__ = [
    "CHANNEL_LENGTH",
    "CHECKPOINT_NS_LENGTH",
    "ID_LENGTH",
    "RUN_ID_LENGTH",
    "LangGraphModels",
    "langgraph_models",
    "langgraph_table_names",
]

CHECKPOINT_NS_LENGTH = 255
"""Longest ``checkpoint_ns`` (subgraph path) the tables hold."""
CHANNEL_LENGTH = 192
"""Longest channel name the tables hold."""
RUN_ID_LENGTH = 255
"""Longest ``run_id`` (metadata) the tables hold."""
ID_LENGTH = 64
"""Longest checkpoint id, task id and channel version (LangGraph's have at most 51 characters)."""
_TYPE_LENGTH = 32

_Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
_Bytes = LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_Timestamp = DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _key(length: int) -> String:
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_nopad_bin"),
        "mysql",
        "mariadb",
    )


def langgraph_table_names(table_name: str = DEFAULT_TABLE_NAME) -> tuple[str, str, str, str]:
    """The checkpoints, blobs, writes and threads tables of the checkpoint table ``table_name``."""
    return (
        f"{table_name}_lg_checkpoints",
        f"{table_name}_lg_blobs",
        f"{table_name}_lg_writes",
        f"{table_name}_lg_threads",
    )


class LangGraphModels(NamedTuple):
    """The four declarative models of one checkpoint table, sharing one `MetaData`."""

    checkpoints: type[Any]
    blobs: type[Any]
    writes: type[Any]
    threads: type[Any]

    @property
    def metadata(self) -> MetaData:
        """The `MetaData` holding the three tables (what the migrations compare)."""
        table: Table = self.checkpoints.__table__
        return table.metadata


@cache
def langgraph_models(
    table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None
) -> LangGraphModels:
    """The LangGraph models that go with checkpoint table ``table_name`` in ``schema`` (cached).

    Args:
        table_name: The library's checkpoint table (validated identifier).
        schema: Its schema (PostgreSQL) or database (MySQL/MariaDB).
    """
    validate_identifier(table_name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema name")
    checkpoints, blobs, writes, threads = langgraph_table_names(table_name)

    class Base(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    class Checkpoint(Base):
        __tablename__ = checkpoints
        __table_args__ = (
            # Named here: the convention's name would pass 63 characters for long table names.
            Index(f"ix_{table_name}_lgc_run_id", "run_id"),
            {"schema": schema},
        )

        thread_id: Mapped[str] = mapped_column(_key(256), primary_key=True)
        checkpoint_ns: Mapped[str] = mapped_column(_key(CHECKPOINT_NS_LENGTH), primary_key=True)
        checkpoint_id: Mapped[str] = mapped_column(_key(ID_LENGTH), primary_key=True)
        parent_checkpoint_id: Mapped[str | None] = mapped_column(_key(ID_LENGTH))
        run_id: Mapped[str | None] = mapped_column(_key(RUN_ID_LENGTH))
        checkpoint: Mapped[Any] = mapped_column(_Json, nullable=False)
        checkpoint_metadata: Mapped[Any] = mapped_column("metadata", _Json, nullable=False)

    class Blob(Base):
        __tablename__ = blobs
        __table_args__ = ({"schema": schema},)

        thread_id: Mapped[str] = mapped_column(_key(256), primary_key=True)
        checkpoint_ns: Mapped[str] = mapped_column(_key(CHECKPOINT_NS_LENGTH), primary_key=True)
        channel: Mapped[str] = mapped_column(_key(CHANNEL_LENGTH), primary_key=True)
        version: Mapped[str] = mapped_column(_key(ID_LENGTH), primary_key=True)
        type: Mapped[str] = mapped_column(String(_TYPE_LENGTH), nullable=False)
        blob: Mapped[bytes | None] = mapped_column(_Bytes)

    class Write(Base):
        __tablename__ = writes
        __table_args__ = ({"schema": schema},)

        thread_id: Mapped[str] = mapped_column(_key(256), primary_key=True)
        checkpoint_ns: Mapped[str] = mapped_column(_key(CHECKPOINT_NS_LENGTH), primary_key=True)
        checkpoint_id: Mapped[str] = mapped_column(_key(ID_LENGTH), primary_key=True)
        task_id: Mapped[str] = mapped_column(_key(ID_LENGTH), primary_key=True)
        idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
        channel: Mapped[str] = mapped_column(_key(CHANNEL_LENGTH), nullable=False)
        type: Mapped[str] = mapped_column(String(_TYPE_LENGTH), nullable=False)
        blob: Mapped[bytes | None] = mapped_column(_Bytes)
        task_path: Mapped[str] = mapped_column(Text, nullable=False, default="")

    class Thread(Base):
        __tablename__ = threads
        __table_args__ = (
            Index(f"ix_{table_name}_lgt_expires_at", "expires_at"),
            {"schema": schema},
        )

        thread_id: Mapped[str] = mapped_column(_key(256), primary_key=True)
        expires_at: Mapped[datetime] = mapped_column(_Timestamp, nullable=False)

    suffix = "" if table_name == DEFAULT_TABLE_NAME else f"_{table_name}"
    names = ("LangGraphCheckpoint", "LangGraphBlob", "LangGraphWrite", "LangGraphThread")
    for model, name in zip((Checkpoint, Blob, Write, Thread), names, strict=True):
        model.__name__ = model.__qualname__ = name + suffix
    return LangGraphModels(Checkpoint, Blob, Write, Thread)

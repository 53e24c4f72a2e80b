"""LangGraph checkpoint savers: checkpoints, channel blobs, pending writes, thread expiry.

Revision ID: 72a7f3de7a0f
Revises: 9b3e5f1c2d47
Create Date: 2026-11-28 22:10:00+00:00

Four tables named after the checkpoint table (``<table>_lg_checkpoints``, ``_lg_blobs``,
``_lg_writes``, ``_lg_threads``), as declared in models/langgraph.py: JSON (JSONB on
PostgreSQL) for the checkpoint body and its metadata, ``LONGBLOB`` on MySQL/MariaDB for
serialized values, binary no-pad utf8mb4 keys and ``DATETIME(6)`` there. Plain ``CREATE
INDEX`` in the migration's transaction: the tables are new and empty, so nothing needs
``CONCURRENTLY``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

from agents_persistence.migrations._app import migration_step
from agents_persistence.migrations._settings import migration_target

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "72a7f3de7a0f"
down_revision: str | Sequence[str] | None = "9b3e5f1c2d47"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _key(length: int) -> sa.String:
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_nopad_bin"),
        "mysql",
        "mariadb",
    )


def _json() -> sa.JSON:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _bytes() -> sa.LargeBinary:
    return sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _names(table: str) -> tuple[str, str, str, str]:
    return (
        f"{table}_lg_checkpoints",
        f"{table}_lg_blobs",
        f"{table}_lg_writes",
        f"{table}_lg_threads",
    )


@migration_step
def upgrade() -> None:
    target = migration_target()
    schema = target.schema
    checkpoints, blobs, writes, threads = _names(target.table_name)
    op.create_table(
        checkpoints,
        sa.Column("thread_id", _key(256), nullable=False),
        sa.Column("checkpoint_ns", _key(255), nullable=False),
        sa.Column("checkpoint_id", _key(64), nullable=False),
        sa.Column("parent_checkpoint_id", _key(64), nullable=True),
        sa.Column("run_id", _key(255), nullable=True),
        sa.Column("checkpoint", _json(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "checkpoint_id", name=op.f(f"pk_{checkpoints}")
        ),
        schema=schema,
    )
    op.create_index(
        op.f(f"ix_{target.table_name}_lgc_run_id"),
        checkpoints,
        ["run_id"],
        unique=False,
        schema=schema,
    )
    op.create_table(
        blobs,
        sa.Column("thread_id", _key(256), nullable=False),
        sa.Column("checkpoint_ns", _key(255), nullable=False),
        sa.Column("channel", _key(192), nullable=False),
        sa.Column("version", _key(64), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("blob", _bytes(), nullable=True),
        sa.PrimaryKeyConstraint(
            "thread_id", "checkpoint_ns", "channel", "version", name=op.f(f"pk_{blobs}")
        ),
        schema=schema,
    )
    op.create_table(
        writes,
        sa.Column("thread_id", _key(256), nullable=False),
        sa.Column("checkpoint_ns", _key(255), nullable=False),
        sa.Column("checkpoint_id", _key(64), nullable=False),
        sa.Column("task_id", _key(64), nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("channel", _key(192), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("blob", _bytes(), nullable=True),
        sa.Column("task_path", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "thread_id",
            "checkpoint_ns",
            "checkpoint_id",
            "task_id",
            "idx",
            name=op.f(f"pk_{writes}"),
        ),
        schema=schema,
    )
    op.create_table(
        threads,
        sa.Column("thread_id", _key(256), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("thread_id", name=op.f(f"pk_{threads}")),
        schema=schema,
    )
    op.create_index(
        op.f(f"ix_{target.table_name}_lgt_expires_at"),
        threads,
        ["expires_at"],
        unique=False,
        schema=schema,
    )


@migration_step
def downgrade() -> None:
    target = migration_target()
    schema = target.schema
    checkpoints, blobs, writes, threads = _names(target.table_name)
    op.drop_index(op.f(f"ix_{target.table_name}_lgt_expires_at"), table_name=threads, schema=schema)
    op.drop_table(threads, schema=schema)
    op.drop_table(writes, schema=schema)
    op.drop_table(blobs, schema=schema)
    op.drop_index(op.f(f"ix_{target.table_name}_lgc_run_id"), table_name=checkpoints, schema=schema)
    op.drop_table(checkpoints, schema=schema)

"""Create the checkpoint table and its indexes.

Revision ID: 4c1d2a9e7b30
Revises:
Create Date: 2026-11-27 04:38:00+00:00

Types per dialect as in models/sql.py: JSONB on PostgreSQL, JSON elsewhere; microsecond
DATETIME(6) and binary no-pad utf8mb4 keys on MySQL/MariaDB. Constraint and index names follow
NAMING_CONVENTION, so later revisions (batch mode on SQLite included) can address them.
The branch label names the library's line of revisions inside an app's own Alembic environment.
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

revision: str = "4c1d2a9e7b30"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("agents_persistence",)
depends_on: str | Sequence[str] | None = None


def _key(length: int) -> sa.String:
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_nopad_bin"),
        "mysql",
        "mariadb",
    )


def _timestamp() -> sa.DateTime:
    return sa.DateTime(timezone=True).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


@migration_step
def upgrade() -> None:
    target = migration_target()
    table, schema = target.table_name, target.schema
    op.create_table(
        table,
        sa.Column("namespace", _key(64), nullable=False),
        sa.Column("thread_id", _key(256), nullable=False),
        sa.Column(
            "state",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("state_bytes", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.Column("expires_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("namespace", "thread_id", name=op.f(f"pk_{table}")),
        schema=schema,
    )
    op.create_index(
        op.f(f"ix_{table}_namespace_updated_at_thread_id"),
        table,
        ["namespace", "updated_at", "thread_id"],
        unique=False,
        schema=schema,
    )
    op.create_index(
        op.f(f"ix_{table}_namespace_expires_at"),
        table,
        ["namespace", "expires_at"],
        unique=False,
        schema=schema,
    )


@migration_step
def downgrade() -> None:
    target = migration_target()
    table, schema = target.table_name, target.schema
    op.drop_index(op.f(f"ix_{table}_namespace_expires_at"), table_name=table, schema=schema)
    op.drop_index(
        op.f(f"ix_{table}_namespace_updated_at_thread_id"), table_name=table, schema=schema
    )
    op.drop_table(table, schema=schema)

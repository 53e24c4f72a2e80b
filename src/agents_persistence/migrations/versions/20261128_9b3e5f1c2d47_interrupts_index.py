"""PostgreSQL: a partial index of the threads whose state has pending interrupts.

Revision ID: 9b3e5f1c2d47
Revises: 4c1d2a9e7b30
Create Date: 2026-11-28 19:40:00+00:00

``(namespace, updated_at) WHERE state ? 'pending_interrupts'`` serves "threads waiting for a
human, newest first" (`agents_persistence.sql.has_state_key`). Only rows with interrupts are
in it, so a save without interrupts pays nothing, unlike a GIN index over whole states. Other
dialects get nothing: their JSON columns have no such operator, and the revision is a no-op
there (the model declares the index with ``ddl_if(dialect="postgresql")``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op

from agents_persistence.migrations._app import migration_step
from agents_persistence.migrations._settings import migration_target

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "9b3e5f1c2d47"
down_revision: str | Sequence[str] | None = "4c1d2a9e7b30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _postgresql() -> bool:
    return bool(op.get_context().dialect.name == "postgresql")


@migration_step
def upgrade() -> None:
    if not _postgresql():
        return
    target = migration_target()
    table = target.table_name
    op.create_index(
        op.f(f"ix_{table}_interrupts"),
        table,
        ["namespace", "updated_at"],
        unique=False,
        schema=target.schema,
        postgresql_where=sa.text("state ? 'pending_interrupts'"),
    )


@migration_step
def downgrade() -> None:
    if not _postgresql():
        return
    target = migration_target()
    table = target.table_name
    op.drop_index(op.f(f"ix_{table}_interrupts"), table_name=table, schema=target.schema)

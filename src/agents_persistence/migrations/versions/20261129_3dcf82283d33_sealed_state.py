"""An encrypted state's head is kept sealed, in a binary column beside ``state``.

Revision ID: 3dcf82283d33
Revises: 5e8d2b6c1f04
Create Date: 2026-11-29 04:00:00+00:00

One nullable column on the checkpoint table, ``sealed_state`` (``bytea`` / ``BLOB`` /
``LONGBLOB``), as declared in models/sql.py. A checkpointer with keys writes the sealed head
there; its row keeps ``state`` as the empty JSON object ``{}`` (the column stays NOT NULL),
``manifest`` the redacted manifest and ``manifest_token`` the token. Existing rows keep
``sealed_state`` NULL and load as before. Nothing is rewritten, so the upgrade costs the same
on a table of any size.

The downgrade refuses, before any change, while a row holds a sealed head: the previous
revision has nowhere to keep it, and dropping the column would lose those states (their
``state`` is ``{}``). Otherwise it drops the column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from agents_persistence.errors import ConfigurationError
from agents_persistence.migrations._app import migration_step
from agents_persistence.migrations._settings import migration_target

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "3dcf82283d33"
down_revision: str | Sequence[str] | None = "5e8d2b6c1f04"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


@migration_step
def upgrade() -> None:
    target = migration_target()
    with op.batch_alter_table(target.table_name, schema=target.schema) as batch:
        batch.add_column(
            sa.Column(
                "sealed_state",
                sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
                nullable=True,
            )
        )


@migration_step
def downgrade() -> None:
    target = migration_target()
    _refuse_sealed_rows(target.table_name, target.schema, target.qualified_name)
    with op.batch_alter_table(target.table_name, schema=target.schema) as batch:
        batch.drop_column("sealed_state")


def _refuse_sealed_rows(table: str, schema: str | None, qualified: str) -> None:
    """Raise `ConfigurationError` if any row of ``table`` holds a sealed head."""
    if op.get_context().as_sql:
        return  # offline SQL: no rows to read
    rows = sa.Table(table, sa.MetaData(), sa.Column("sealed_state", sa.LargeBinary), schema=schema)
    found = op.get_bind().execute(
        sa.select(sa.func.count()).select_from(rows).where(rows.c.sealed_state.is_not(None))
    )
    count = int(found.scalar_one())
    if count:
        raise ConfigurationError(
            f"cannot downgrade {qualified} below revision {revision}: {count} row(s) hold an"
            " encrypted state, which the previous revision has no column for (their data would"
            " be lost). Load those threads with a checkpointer that has their keys and save"
            " them through one without keys (or delete them), then downgrade again."
        )

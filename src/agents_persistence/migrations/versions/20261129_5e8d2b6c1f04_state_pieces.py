"""A save writes what changed: the state's manifest on the checkpoint table, and its pieces.

Revision ID: 5e8d2b6c1f04
Revises: 72a7f3de7a0f
Create Date: 2026-11-29 01:20:00+00:00

Two nullable columns on the checkpoint table, ``manifest`` (text; ``LONGTEXT`` on
MySQL/MariaDB) and ``manifest_token``, and the table ``<table>_pieces`` (namespace, thread_id,
piece, body: ``bytea`` / ``BLOB`` / ``LONGBLOB``), as declared in models/sql.py. Existing rows
keep ``manifest`` NULL: their ``state`` is the whole state and loads as before; their next save
writes them in the new layout. Nothing is rewritten here, so the upgrade costs the same on a
table of any size.

The downgrade first puts every state stored in pieces back into its row's ``state``
(assembled in Python, batch by batch), then drops the pieces table and the two columns: a
database taken back to the previous revision loads with the previous library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

from agents_persistence.migrations._app import migration_step
from agents_persistence.migrations._settings import migration_target

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = "5e8d2b6c1f04"
down_revision: str | Sequence[str] | None = "72a7f3de7a0f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 200


def _key(length: int) -> sa.String:
    return sa.String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_nopad_bin"),
        "mysql",
        "mariadb",
    )


@migration_step
def upgrade() -> None:
    target = migration_target()
    table, schema = target.table_name, target.schema
    with op.batch_alter_table(table, schema=schema) as batch:
        batch.add_column(
            sa.Column(
                "manifest",
                sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb"),
                nullable=True,
            )
        )
        batch.add_column(sa.Column("manifest_token", _key(32), nullable=True))
    pieces = f"{table}_pieces"
    op.create_table(
        pieces,
        sa.Column("namespace", _key(64), nullable=False),
        sa.Column("thread_id", _key(256), nullable=False),
        sa.Column("piece", _key(64), nullable=False),
        sa.Column(
            "body",
            sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("namespace", "thread_id", "piece", name=op.f(f"pk_{pieces}")),
        schema=schema,
    )


@migration_step
def downgrade() -> None:
    target = migration_target()
    table, schema = target.table_name, target.schema
    _store_whole(table, f"{table}_pieces", schema)
    op.drop_table(f"{table}_pieces", schema=schema)
    with op.batch_alter_table(table, schema=schema) as batch:
        batch.drop_column("manifest_token")
        batch.drop_column("manifest")


def _store_whole(table: str, pieces: str, schema: str | None) -> None:
    """Write each row stored in pieces back as one whole state (``manifest`` NULL)."""
    from agents_persistence._layout import Manifest, assemble, unpack

    if op.get_context().as_sql:
        return  # offline SQL: no rows to read
    conn = op.get_bind()
    meta = sa.MetaData()

    def thread_table(name: str, *columns: tuple[str, Any]) -> sa.Table:
        keys = (("namespace", sa.String), ("thread_id", sa.String), *columns)
        return sa.Table(name, meta, *(sa.Column(*c) for c in keys), schema=schema)

    rows = thread_table(
        table, ("state", sa.Text), ("manifest", sa.Text), ("manifest_token", sa.String)
    )
    parts = thread_table(pieces, ("piece", sa.String), ("body", sa.LargeBinary))
    on_postgresql = conn.dialect.name == "postgresql"
    state_text: Any = sa.cast(rows.c.state, sa.Text) if on_postgresql else rows.c.state
    whole: Any = sa.bindparam("whole", type_=sa.Text)
    rewrite = (
        sa.update(rows)
        .where(rows.c.namespace == sa.bindparam("ns"), rows.c.thread_id == sa.bindparam("tid"))
        .values(
            state=sa.cast(whole, postgresql.JSONB()) if on_postgresql else whole,
            manifest=None,
            manifest_token=None,
        )
    )
    while True:
        batch = conn.execute(
            sa.select(rows.c.namespace, rows.c.thread_id, state_text, rows.c.manifest)
            .where(rows.c.manifest.is_not(None))
            .limit(_BATCH)
        ).all()
        for namespace, thread_id, head, text in batch:
            manifest = Manifest.from_json(thread_id, text)
            bodies = {
                piece: unpack(thread_id, bytes(body))
                for piece, body in conn.execute(
                    sa.select(parts.c.piece, parts.c.body).where(
                        parts.c.namespace == namespace, parts.c.thread_id == thread_id
                    )
                )
            }
            state = assemble(thread_id, head, manifest, bodies).decode()
            conn.execute(rewrite, {"ns": namespace, "tid": thread_id, "whole": state})
        if len(batch) < _BATCH:
            return

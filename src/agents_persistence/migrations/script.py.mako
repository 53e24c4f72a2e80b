"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

The table name and schema are parameters of every run: take them from migration_target(),
never from a literal (autogenerate writes "agent_checkpoints"; replace it). Keep
@migration_step on both functions: it lets an app's own Alembic environment run this revision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
from agents_persistence.migrations._app import migration_step
from agents_persistence.migrations._settings import migration_target

if TYPE_CHECKING:
    from collections.abc import Sequence

revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}


@migration_step
def upgrade() -> None:
    target = migration_target()
    ${upgrades if upgrades else "pass"}


@migration_step
def downgrade() -> None:
    target = migration_target()
    ${downgrades if downgrades else "pass"}

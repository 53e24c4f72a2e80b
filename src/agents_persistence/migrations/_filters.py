"""Alembic ``include_name`` hooks: what autogenerate looks at, ours and an app's.

Our environment compares only the checkpoint table and its LangGraph tables (the database may
hold anything else), and an app's environment passes `include_name` so that its autogenerate
never proposes to drop our tables, their indexes or our version table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from agents_persistence.migrations._settings import MigrationTarget, version_table
from agents_persistence.models.langgraph import langgraph_table_names
from agents_persistence.models.sql import DEFAULT_TABLE_NAME, DIALECTS_INFO_KEY

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType
    from sqlalchemy.sql.schema import SchemaItem

__all__ = [
    "IncludeName",
    "include_name",
    "make_include_name",
    "own_include_name",
    "own_include_object",
    "rust_compatibility_index_names",
]

IncludeName = Callable[[str | None, "NameFilterType", "NameFilterParentNames"], bool]
"""The signature Alembic expects of ``context.configure(include_name=...)``."""


def make_include_name(table_names: Iterable[str] = (DEFAULT_TABLE_NAME,)) -> IncludeName:
    """Build an ``include_name`` hook that hides agents-persistence tables from autogenerate.

    Use it in an app's own ``env.py`` when the checkpoint tables have custom names (the
    default `include_name` covers ``agent_checkpoints``). Tables are matched by name in every
    schema; their indexes, constraints and columns go with them, and so do their version tables
    and the LangGraph tables named after them (``<table>_lg_checkpoints``, ``_lg_blobs``,
    ``_lg_writes``, ``_lg_threads``).

    Args:
        table_names: The checkpoint table names the app uses.

    Returns:
        A function for ``context.configure(include_name=...)``.

    Raises:
        ConfigurationError: A name is not a valid table name.
    """
    hidden = frozenset(
        name
        for table in table_names
        for name in (table, version_table(table), *langgraph_table_names(table))
    )

    def include_name(
        name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        if type_ == "table":
            return name not in hidden
        return parent_names.get("table_name") not in hidden

    include_name.__doc__ = f"Exclude {', '.join(sorted(hidden))} from autogenerate."
    return include_name


include_name: IncludeName = make_include_name()
"""``include_name`` hook for an app's ``env.py``: ignores ``agent_checkpoints`` and its version
table. Combine with the app's own filter by calling both."""


def own_include_name(target: MigrationTarget) -> IncludeName:
    """The hook of our own environment: ``target``'s tables (never its version table)."""
    own = frozenset((target.table_name, *langgraph_table_names(target.table_name)))

    def include(
        name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
    ) -> bool:
        if type_ == "schema":
            return name == target.schema
        if type_ == "table":
            return name in own and parent_names.get("schema_name") == target.schema
        return parent_names.get("table_name") in own

    return include


def rust_compatibility_index_names(table_name: str) -> tuple[str, str]:
    """The indexes a table adopted from the Rust SDK keeps beyond the library's model.

    The Rust ``ensure_table()``'s ``idx_<table>_updated_at`` (it recreates it at each start)
    and the unique index on ``thread_id`` its ``ON CONFLICT (thread_id)`` needs
    (`agents_persistence.rust.adopt_rust_table`).
    """
    return f"idx_{table_name}_updated_at", f"uq_{table_name}_rust_thread_id"


def own_include_object(
    dialect_name: str, target: MigrationTarget | None = None
) -> Callable[[SchemaItem, str | None, str, bool, SchemaItem | None], bool]:
    """The ``include_object`` hook of our own environment, for ``dialect_name``.

    Leaves out the model's indexes that exist on other dialects only (``Index.ddl_if`` creates
    them there; Alembic's autogenerate does not read ``ddl_if``, so the model marks them in
    ``Index.info``), and the indexes an adopted Rust table keeps for the Rust service.
    """
    kept = frozenset(rust_compatibility_index_names(target.table_name)) if target else frozenset()

    def include(
        obj: SchemaItem, name: str | None, type_: str, reflected: bool, compare_to: object
    ) -> bool:
        if type_ != "index":
            return True
        if reflected:
            return name not in kept
        dialects = obj.info.get(DIALECTS_INFO_KEY)
        return dialects is None or dialect_name in dialects

    return include

"""Dialect-aware statements of the SQL savers: inserts that ignore or overwrite, list filters.

Pure: builds SQLAlchemy Core statements and clauses, runs nothing.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, and_, bindparam, false, func, literal, or_, select
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping, Sequence

    from sqlalchemy import ColumnElement, Insert

__all__ = [
    "HEX_BLOB",
    "copy_rows",
    "insert_ignoring",
    "keys_in",
    "matches",
    "metadata_prefilter",
    "upsert",
]


HEX_BLOB = "blob_hex"
"""Parameter carrying a blob as hexadecimal text, for drivers that cannot send bytes."""


def _insert(dialect: str, model: type[Any], hex_blob: bool = False) -> Any:
    table = model.__table__
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(table)
    elif dialect == "sqlite":
        statement = sqlite.insert(table)
    elif dialect in ("mysql", "mariadb"):
        statement = mysql.insert(table)
    else:
        raise NotImplementedError(f"the LangGraph savers do not support {dialect!r}")
    if hex_blob:
        # aiomysql cannot escape bytes with the PyMySQL releases that replaced
        # escape_bytes_prefixed: such blobs travel as hex text, decoded by the server.
        statement = statement.values(blob=func.unhex(bindparam(HEX_BLOB, type_=String())))
    return statement


def insert_returning(dialect: str, model: type[Any]) -> Any:
    """The dialect's ``INSERT`` of ``model`` (PostgreSQL and SQLite: upserts with RETURNING)."""
    return _insert(dialect, model)


def _primary_key(model: type[Any]) -> list[str]:
    return [column.name for column in model.__table__.primary_key.columns]


def insert_ignoring(dialect: str, model: type[Any], hex_blob: bool = False) -> Insert:
    """``INSERT`` that leaves an existing row with the same primary key as it is."""
    statement = _insert(dialect, model, hex_blob)
    if dialect in ("mysql", "mariadb"):
        # Not INSERT IGNORE, which would also turn data errors into warnings.
        first = _primary_key(model)[0]
        return statement.on_duplicate_key_update(  # type: ignore[no-any-return]
            {first: statement.inserted[first]}
        )
    return statement.on_conflict_do_nothing(  # type: ignore[no-any-return]
        index_elements=_primary_key(model)
    )


def upsert(
    dialect: str, model: type[Any], columns: Sequence[str], hex_blob: bool = False
) -> Insert:
    """``INSERT`` that overwrites ``columns`` of an existing row with the same primary key."""
    statement = _insert(dialect, model, hex_blob)
    if dialect in ("mysql", "mariadb"):
        return statement.on_duplicate_key_update(  # type: ignore[no-any-return]
            {name: statement.inserted[name] for name in columns}
        )
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=_primary_key(model),
        set_={name: statement.excluded[name] for name in columns},
    )


def upsert_keeping(dialect: str, model: type[Any], column: str) -> Insert:
    """``INSERT`` that leaves an existing row as it is, but locks it (a no-op update)."""
    statement = _insert(dialect, model)
    existing = model.__table__.c[column]
    if dialect in ("mysql", "mariadb"):
        return statement.on_duplicate_key_update({column: existing})  # type: ignore[no-any-return]
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=_primary_key(model), set_={column: existing}
    )


def copy_rows(model: type[Any], source: str, target: str) -> Insert:
    """``INSERT INTO model SELECT ...`` copying thread ``source``'s rows to thread ``target``."""
    table = model.__table__
    names = [column.name for column in table.columns]
    chosen = [
        literal(target, String()).label("thread_id") if name == "thread_id" else table.c[name]
        for name in names
    ]
    query = select(*chosen).where(table.c.thread_id == source)
    result: Insert = table.insert().from_select(names, query)
    return result


def _plain_key(key: str) -> bool:
    """Whether ``key`` can go into a JSON path literal as is."""
    return bool(key) and '"' not in key and "\\" not in key and key.isprintable()


def metadata_prefilter(
    dialect: str, column: Any, wanted: Mapping[str, Any]
) -> list[ColumnElement[bool]]:
    """SQL conditions every row matching ``wanted`` satisfies (a superset; Python checks exactly).

    PostgreSQL: JSONB containment of the scalar entries (``metadata @> '{"source": "loop"}'``).
    SQLite and MySQL/MariaDB: ``json_extract`` equality for string entries. Other entries are
    left to the exact check in Python (`matches`).
    """
    if dialect == "postgresql":
        scalars = {
            key: value
            for key, value in wanted.items()
            if isinstance(value, str | int | float | bool) and "\x00" not in key
        }
        if not scalars:
            return []
        contained = bindparam(None, json.loads(json.dumps(scalars)), type_=JSONB)
        return [column.op("@>", is_comparison=True)(contained)]
    conditions: list[ColumnElement[bool]] = []
    for key, value in wanted.items():
        if not isinstance(value, str) or not _plain_key(key):
            continue
        path = f'$."{key}"'
        extracted = func.json_extract(column, path)
        if dialect in ("mysql", "mariadb"):
            extracted = func.json_unquote(extracted)
        conditions.append(extracted == value)
    return conditions


def matches(metadata: Mapping[str, Any], wanted: Mapping[str, Any] | None) -> bool:
    """Whether every entry of ``wanted`` equals the metadata's (a missing key reads as ``None``)."""
    if not wanted:
        return True
    return all(metadata.get(key) == value for key, value in wanted.items())


def keys_in(
    table: Any, groups: Mapping[tuple[str, str], Collection[Any]], column: str
) -> ColumnElement[bool]:
    """Rows whose ``(thread_id, checkpoint_ns)`` is a key of ``groups`` and ``column`` in its list.

    ``column`` may name one column or, with a tuple clause given as the values, several.
    """
    clauses = [
        and_(
            table.c.thread_id == thread_id,
            table.c.checkpoint_ns == namespace,
            table.c[column].in_(sorted(values)),
        )
        for (thread_id, namespace), values in groups.items()
        if values
    ]
    if not clauses:
        return false()
    return or_(*clauses)

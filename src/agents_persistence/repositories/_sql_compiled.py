"""Statements compiled once per dialect and run by `_sql_run.fetch`. No I/O."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import CompoundSelect, Delete, Insert, Select, Update

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy.engine import Dialect

__all__ = ["Compiled", "Statement"]

Statement = Select[Any] | CompoundSelect[Any] | Insert | Update | Delete
"""What `Compiled` compiles."""


class Compiled:
    """A statement compiled once for one dialect, run by `_sql_run.fetch`.

    Holds the SQL string, the binds in the dialect's parameter order (a tuple for a positional
    paramstyle, a dict for a named one) and the bind and result processors of the column types
    (``TypeEngine.bind_processor`` / ``result_processor`` of each type's dialect
    implementation), so values cross the driver exactly as through `Connection.execute`, on
    either of `fetch`'s paths.
    """

    __slots__ = ("_names", "_positional", "_results", "returns_rows", "sql")

    def __init__(self, statement: Statement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise RuntimeError("statement needs SQLAlchemy's parameter expansion")
        self.sql = compiled.string
        escaped = getattr(compiled, "escaped_bind_names", None) or {}
        self._positional = bool(compiled.positional)
        order = list(compiled.positiontup or ()) if self._positional else list(compiled.binds)
        # (bind name, SQL name, processor or None, value): a literal of the statement
        # (``version + 1``) has no bind name and its processed value; the others are looked up.
        names: list[tuple[str | None, str, Any, Any]] = []
        for name in order:
            bind = compiled.binds[name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if bind.required:
                names.append((bind.key, escaped.get(name, name), processor, None))
            else:
                value = bind.effective_value
                value = value if processor is None else processor(value)
                names.append((None, escaped.get(name, name), None, value))
        self._names = tuple(names)
        self._results = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.exported_columns
        )
        # Whether it returns rows (a SELECT, or RETURNING): known without the cursor's
        # ``description``, which psycopg builds at a cost on every result.
        self.returns_rows = bool(self._results)

    def parameters(self, params: dict[str, Any]) -> Any:
        """The DBAPI parameters for ``params`` (keyed by bind name)."""
        values = [
            value if key is None else params[key] if proc is None else proc(params[key])
            for key, _, proc, value in self._names
        ]
        if self._positional:
            return tuple(values)
        return {entry[1]: value for entry, value in zip(self._names, values, strict=True)}

    def process(self, rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        """``rows`` with the result processors applied."""
        results = self._results
        if not any(results):
            return [tuple(row) for row in rows]
        return [
            tuple(
                value if proc is None or value is None else proc(value)
                for proc, value in zip(results, row, strict=True)
            )
            for row in rows
        ]

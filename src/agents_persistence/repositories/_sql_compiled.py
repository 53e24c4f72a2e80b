"""Statements compiled once per dialect and run by `_sql_run.fetch`. No I/O."""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from sqlalchemy import CompoundSelect, Delete, Insert, Select, Update

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

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

    __slots__ = (
        "_get",
        "_literals",
        "_positional",
        "_processed",
        "_processed_results",
        "_results",
        "_sql_names",
        "returns_rows",
        "sql",
    )

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
        # What `parameters` runs: one lookup of every value (a statement's literals are keyed
        # apart, never a bind name), then the processors at their positions.
        keys: list[object] = [
            name if name is not None else ("literal", index)
            for index, (name, _, _, _) in enumerate(names)
        ]
        self._literals = {
            key: value for key, (name, _, _, value) in zip(keys, names, strict=True) if name is None
        }
        self._get = _getter(keys)
        self._processed = tuple(
            (index, proc) for index, (_, _, proc, _) in enumerate(names) if proc is not None
        )
        self._sql_names = tuple(sql_name for _, sql_name, _, _ in names)
        self._results = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None)
            for column in statement.exported_columns
        )
        self._processed_results = tuple(
            (index, proc) for index, proc in enumerate(self._results) if proc is not None
        )
        # Whether it returns rows (a SELECT, or RETURNING): known without the cursor's
        # ``description``, which psycopg builds at a cost on every result.
        self.returns_rows = bool(self._results)

    def parameters(self, params: dict[str, Any]) -> Any:
        """The DBAPI parameters for ``params`` (keyed by bind name)."""
        values = self._get({**params, **self._literals} if self._literals else params)
        for index, proc in self._processed:
            values[index] = proc(values[index])
        if self._positional:
            return tuple(values)
        return dict(zip(self._sql_names, values, strict=True))

    def process(self, rows: Sequence[Any]) -> list[tuple[Any, ...]]:
        """``rows`` with the result processors applied."""
        processed = self._processed_results
        if not processed:
            return [tuple(row) for row in rows]
        out = []
        for row in rows:
            values = list(row)
            for index, proc in processed:
                value = values[index]
                if value is not None:
                    values[index] = proc(value)
            out.append(tuple(values))
        return out


def _getter(keys: list[object]) -> Callable[[dict[Any, Any]], list[Any]]:
    """A function of a mapping: its values at ``keys``, in order, as a new list."""
    if not keys:
        return lambda params: []
    if len(keys) == 1:
        key = keys[0]
        return lambda params: [params[key]]
    get = operator.itemgetter(*keys)
    return lambda params: list(get(params))

"""The Rust SDK's PostgreSQL layout, read only.

The Rust checkpointer's ``ensure_table()`` makes ``<table> (thread_id TEXT PRIMARY KEY, state
JSONB NOT NULL, created_at TIMESTAMPTZ, updated_at TIMESTAMPTZ)``; it has no TTL. Thread ids
are listed in keyset pages over the primary key, so memory stays flat with the table's size.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import Column, DateTime, MetaData, Table, Text, cast, create_engine, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from agents_persistence._core import as_utc, validate_identifier
from agents_persistence.errors import ConfigurationError
from agents_persistence.models.sql import DEFAULT_TABLE_NAME
from agents_persistence.repositories._sql_engine import translate_errors

from ._base import RustRecord, RustSource, query_options

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sqlalchemy.engine import URL, Engine

__all__ = ["PostgresRustSource", "rust_table"]

CONNECT_TIMEOUT = 10
"""Seconds a connection attempt may take before the source reports the server unavailable."""


def rust_table(table_name: str = DEFAULT_TABLE_NAME, schema: str | None = None) -> Table:
    """The columns of the Rust layout that reading needs (a `Table` in its own metadata)."""
    validate_identifier(table_name, "table name")
    if schema is not None:
        validate_identifier(schema, "schema name")
    return Table(
        table_name,
        MetaData(),
        Column("thread_id", Text, primary_key=True),
        Column("state", JSONB, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("updated_at", DateTime(timezone=True), nullable=False),
        schema=schema,
    )


def database_url(url: str) -> tuple[URL, dict[str, str]]:
    """The SQLAlchemy URL of a ``rust+postgresql://`` URL, and its ``table``/``schema`` options.

    Raises:
        ConfigurationError: Not a PostgreSQL URL, or an unknown option.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower().removeprefix("rust+")
    driver = scheme.split("+", 1)
    if driver[0] not in ("postgresql", "postgres"):
        raise ConfigurationError(f"not a rust+postgresql:// URL: {parts.scheme}://")
    if len(driver) == 2 and driver[1] != "psycopg":
        raise ConfigurationError(f"the Rust PostgreSQL source uses psycopg, not {driver[1]}")
    options = query_options(url, ("table", "schema"))
    plain = urlunsplit(("postgresql+psycopg", parts.netloc, parts.path, "", ""))
    try:
        return make_url(plain), options
    except ArgumentError as exc:
        raise ConfigurationError(f"invalid PostgreSQL URL: {exc}") from exc


class PostgresRustSource(RustSource):
    """The Rust SDK's PostgreSQL checkpoint table, read only.

    Args:
        engine: An engine on the database (left open), or ``None`` with ``url``.
        table_name: The Rust table (``agent_checkpoints`` by default, as the Rust builder).
        schema: Its schema, if not the search path's.
    """

    layout = "postgresql"

    def __init__(
        self,
        engine: Engine,
        *,
        table_name: str = DEFAULT_TABLE_NAME,
        schema: str | None = None,
    ) -> None:
        self.table = rust_table(table_name, schema)
        self.engine = engine
        self._owns_engine = False

    @classmethod
    def from_url(cls, url: str) -> PostgresRustSource:
        """Open ``rust+postgresql://USER@HOST/DB?table=agent_checkpoints&schema=...``.

        Raises:
            ConfigurationError: A malformed URL or table name.
        """
        target, options = database_url(url)
        engine = create_engine(
            target,
            pool_size=1,
            max_overflow=1,
            connect_args={"connect_timeout": CONNECT_TIMEOUT},
        )
        try:
            source = cls(
                engine,
                table_name=options.get("table") or DEFAULT_TABLE_NAME,
                schema=options.get("schema") or None,
            )
        except BaseException:
            engine.dispose()
            raise
        source._owns_engine = True
        return source

    def describe(self) -> str:
        where = self.engine.url.render_as_string(hide_password=True)
        return f"Rust PostgreSQL table {self.table.fullname} at {where}"

    def _not_ready(self, problem: str) -> str:
        return (
            f"the Rust checkpoint table {self.table.fullname} cannot be read: {problem}"
            " (check ?table= and ?schema= in the URL)"
        )

    def iter_thread_ids(self, *, page_size: int = 500) -> Iterator[str]:
        column = self.table.c.thread_id
        after: str | None = None
        while True:
            query = select(column).order_by(column).limit(page_size)
            if after is not None:
                query = query.where(column > after)
            with translate_errors(self._not_ready, action="listing"), self.engine.connect() as conn:
                page = list(conn.execute(query).scalars())
            yield from page
            if len(page) < page_size:
                return
            after = page[-1]

    def load(self, thread_id: str) -> RustRecord | None:
        c = self.table.c
        query = select(cast(c.state, Text), c.created_at, c.updated_at).where(
            c.thread_id == thread_id
        )
        with (
            translate_errors(self._not_ready, thread_id, action="load"),
            self.engine.connect() as conn,
        ):
            row: Any = conn.execute(query).first()
        if row is None:
            return None
        return RustRecord(
            thread_id,
            row[0],
            created_at=as_utc(row[1]),
            updated_at=as_utc(row[2]),
        )

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

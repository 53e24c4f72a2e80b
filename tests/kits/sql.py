"""The SQL store's kits: SQLite (a temporary file), PostgreSQL and MariaDB.

Each kit migrates the default table once (through the library's own migrations), then shares
one sync engine and one async engine across tests; every test works in its own namespace.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Engine,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agents_persistence import AsyncSQLCheckpointer, SQLCheckpointer
from agents_persistence.migrations import upgrade
from agents_persistence.models.sql import checkpoint_table, pieces_table

from .base import StoreKit, closed_port, tcp_reachable
from .encrypted import EncryptedKit

TABLE = checkpoint_table()
PIECES = pieces_table()
# Valid JSON of the wrong shape: PostgreSQL's JSONB and MariaDB's JSON refuse invalid text.
WRONG_SHAPE = {"todos": "not a list"}
INVALID_JSON = '{"todos": "not a list"'


class SQLKit(StoreKit):
    """A database reached through SQLAlchemy; subclasses say which one."""

    host: str | None = None
    port: int | None = None

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._async: tuple[AsyncEngine, asyncio.AbstractEventLoop] | None = None

    # -- what subclasses provide ---------------------------------------------------------
    def sync_url(self) -> str:
        raise NotImplementedError

    def async_url(self) -> str:
        raise NotImplementedError

    def unreachable_url(self, port: int) -> str:
        raise NotImplementedError

    # -- the kit ---------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        if self.host is None or self.port is None:
            return None
        if tcp_reachable(self.host, self.port):
            return None
        return f"nothing listens on {self.host}:{self.port}"

    def start(self) -> None:
        upgrade(self.engine)

    def stop(self) -> None:
        if self._async is not None:
            engine, loop = self._async
            self._async = None
            _dispose_on(engine, loop)
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def tune(self, engine: Engine) -> None:
        """Engine hooks an application would add for this database (none by default)."""

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = create_engine(self.sync_url(), pool_size=10, max_overflow=20)
            self.tune(self._engine)
        return self._engine

    async def async_engine(self) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        if self._async is None or self._async[1] is not loop:
            if self._async is not None:
                await self._async[0].dispose()
            engine = create_async_engine(self.async_url(), pool_size=10, max_overflow=20)
            self.tune(engine.sync_engine)
            self._async = (engine, loop)
        return self._async[0]

    def make(self, *, namespace: str, **options: Any) -> SQLCheckpointer[Any]:
        return SQLCheckpointer(self.engine, namespace=namespace, **options)

    async def make_async(self, *, namespace: str, **options: Any) -> AsyncSQLCheckpointer[Any]:
        return AsyncSQLCheckpointer(await self.async_engine(), namespace=namespace, **options)

    def corrupt(self, namespace: str, thread_id: str) -> None:
        statement = update(TABLE).where(
            TABLE.c.namespace == namespace, TABLE.c.thread_id == thread_id
        )
        with self.engine.begin() as conn:
            # An encrypted row's sealed head goes too: what is read is the state in clear.
            result = conn.execute(statement.values(state=WRONG_SHAPE, sealed_state=None))
        assert result.rowcount == 1

    def stored_count(self, namespace: str) -> int:
        query = select(func.count()).select_from(TABLE).where(TABLE.c.namespace == namespace)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def stored_values(self, namespace: str, thread_id: str) -> list[bytes]:
        """The row's head (``sealed_state``, else ``state`` as text) and every piece body."""
        thread = (TABLE.c.namespace == namespace, TABLE.c.thread_id == thread_id)
        head = select(TABLE.c.sealed_state, type_coerce(TABLE.c.state, Text())).where(*thread)
        bodies = select(PIECES.c.body).where(
            PIECES.c.namespace == namespace, PIECES.c.thread_id == thread_id
        )
        with self.engine.connect() as conn:
            sealed, state = conn.execute(head).one()
            pieces = [bytes(body) for body in conn.execute(bodies).scalars()]
        return [bytes(sealed) if sealed is not None else str(state).encode(), *pieces]

    def make_unreachable(self, *, namespace: str) -> SQLCheckpointer[Any]:
        return SQLCheckpointer.from_url(
            self.unreachable_url(closed_port()), connect_timeout=2, namespace=namespace
        )

    async def make_unreachable_async(self, *, namespace: str) -> AsyncSQLCheckpointer[Any]:
        return AsyncSQLCheckpointer.from_url(
            self.unreachable_url(closed_port()), connect_timeout=2, namespace=namespace
        )


def _dispose_on(engine: AsyncEngine, loop: asyncio.AbstractEventLoop) -> None:
    """Dispose an async engine on the loop its connections belong to (stopped or running)."""
    if loop.is_closed():
        engine.sync_engine.dispose(close=False)
    elif loop.is_running():
        asyncio.run_coroutine_threadsafe(engine.dispose(), loop).result(30)
    else:
        loop.run_until_complete(engine.dispose())


class SQLiteKit(SQLKit):
    name = "sqlite"
    db_system = "sqlite"
    has_server = False

    def __init__(self) -> None:
        super().__init__()
        self._dir: Path | None = None

    @property
    def path(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="agents-persistence-"))
        return self._dir / "checkpoints.db"

    def sync_url(self) -> str:
        return f"sqlite:///{self.path}?timeout=30"

    def tune(self, engine: Engine) -> None:
        # The injected-engine set-up docs/sql.md recommends (with the busy timeout in the URL):
        # WAL lets readers run beside the writer; NORMAL syncs the log at checkpoints only,
        # as a temporary file needs no durability across power loss.
        @event.listens_for(engine, "connect")
        def _wal(dbapi_connection: Any, connection_record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    def async_url(self) -> str:
        return f"sqlite+aiosqlite:///{self.path}?timeout=30"

    def corrupt(self, namespace: str, thread_id: str) -> None:
        # SQLite stores any text: make it invalid JSON, not just the wrong shape.
        statement = (
            update(TABLE)
            .where(TABLE.c.namespace == namespace, TABLE.c.thread_id == thread_id)
            .values(state=bindparam("raw", type_=Text()), sealed_state=None)
        )
        with self.engine.begin() as conn:
            result = conn.execute(statement, {"raw": INVALID_JSON})
        assert result.rowcount == 1

    def stop(self) -> None:
        super().stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


class PostgreSQLKit(SQLKit):
    name = "postgresql"
    db_system = "postgresql"
    host = "127.0.0.1"
    port = 5432
    url = os.environ.get(
        "AGENTS_PERSISTENCE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )

    def sync_url(self) -> str:
        return self.url

    def async_url(self) -> str:
        return self.url

    def unreachable_url(self, port: int) -> str:
        return make_url(self.url).set(port=port).render_as_string(hide_password=False)


class MariaDBKit(SQLKit):
    name = "mariadb"
    db_system = "mariadb"
    host = "127.0.0.1"
    port = 3306
    url = os.environ.get(
        "AGENTS_PERSISTENCE_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
    )

    def sync_url(self) -> str:
        return self.url + "?charset=utf8mb4"

    def async_url(self) -> str:
        return self.url.replace("+pymysql", "+aiomysql") + "?charset=utf8mb4"

    def unreachable_url(self, port: int) -> str:
        return make_url(self.url).set(port=port).render_as_string(hide_password=False)


class Traced:
    """Engines with cursor-execution listeners attached as OpenTelemetry's SQLAlchemy
    instrumentation attaches them (``before_cursor_execute`` with ``retval=True``,
    ``after_cursor_execute``, ``handle_error`` on the engine), counting what they see.

    Mixed in front of a kit: the whole contract suite then runs with listeners in SQLAlchemy's
    execution path, on a database of its own (a separate SQLite file; namespaces elsewhere).
    """

    seen: list[str]

    def tune(self, engine: Engine) -> None:
        super().tune(engine)  # type: ignore[misc]
        seen = self.seen = getattr(self, "seen", [])

        def before(conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> Any:
            if len(seen) >= 1000:  # bounded; tests clear it before they look
                seen.clear()
            seen.append(statement)
            return statement, params

        def after(*args: Any) -> None:
            """OpenTelemetry ends its span here."""

        def on_error(context: Any) -> None:
            """OpenTelemetry records the exception here."""

        event.listen(engine, "before_cursor_execute", before, retval=True)
        event.listen(engine, "after_cursor_execute", after)
        event.listen(engine, "handle_error", on_error)


class TracedSQLiteKit(Traced, SQLiteKit):
    name = "sqlite+traced"


class TracedPostgreSQLKit(Traced, PostgreSQLKit):
    name = "postgresql+traced"


class TracedMariaDBKit(Traced, MariaDBKit):
    name = "mariadb+traced"


PLAIN_KITS: list[SQLKit] = [SQLiteKit(), PostgreSQLKit(), MariaDBKit()]
"""The kits without listeners, for the SQL store's own tests (one database each)."""

KITS: list[StoreKit] = [
    *PLAIN_KITS,
    TracedSQLiteKit(),
    TracedPostgreSQLKit(),
    TracedMariaDBKit(),
    # PostgreSQL: the sealed head beside a JSONB ``state``; one encrypted kit keeps the suite
    # fast (tests/stores/test_sql_encryption.py covers SQLite and MariaDB).
    EncryptedKit(PostgreSQLKit()),
]

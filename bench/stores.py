"""The stores under test: one entry per store and dialect, skipped with a reason when absent.

Each entry opens our checkpointers (sync and async) and the raw-driver floor on the same
server, and knows how to clean up after a namespace. Servers and URLs come from the
environment (``BENCH_POSTGRES_URL``, ``BENCH_MARIADB_URL``, ``BENCH_REDIS_URL``) with the local
defaults of this project; PostgreSQL and MariaDB get a database of their own (``bench``) so the
benchmarks never touch the tables the test suites create and drop.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import tempfile
from datetime import datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from bench import raw as rawmod

PG_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/bench")
MY_URL = os.environ.get("BENCH_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
TABLE = "agent_checkpoints"
POOL_SIZE = 20


class Unavailable(Exception):
    """A store cannot be measured here; the message says why."""


def _reachable(url: str, default_port: int) -> str | None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"no server at {host}:{port} ({exc.strerror or exc})"


def _importable(module: str) -> str | None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{module} not importable ({exc})"
    return None


class Target:
    """One store (and dialect) the benchmarks run against."""

    name: ClassVar[str] = "?"
    label: ClassVar[str] = "?"
    module: ClassVar[str] = ""
    ops_factor: ClassVar[float] = 1.0  # share of the latency operations run (slow servers)

    def unavailable(self) -> str | None:
        """``None`` if the store can run here, else the reason it is skipped."""
        return _importable(self.module) if self.module else None

    def start(self) -> None:
        """Prepare the server side once (database, schema, local server)."""

    def stop(self) -> None:
        """Release what `start` opened."""

    def server_version(self) -> str:
        return ""

    def max_state_bytes(self) -> int:
        return 8 * 1024 * 1024

    def sync(self, namespace: str, **options: Any) -> Any:
        raise NotImplementedError

    async def async_(self, namespace: str, **options: Any) -> Any:
        raise NotImplementedError

    def sync_shipped(self, namespace: str) -> Any:
        """Our sync checkpointer with the pool it ships with (no sizing of the harness)."""
        return self.sync(namespace)

    async def async_shipped(self, namespace: str) -> Any:
        """Our async checkpointer with the pool it ships with."""
        return await self.async_(namespace)

    def raw(self, namespace: str) -> Any:
        raise NotImplementedError

    async def araw(self, namespace: str) -> Any:
        raise NotImplementedError

    def ours_variants(self) -> dict[str, dict[str, Any]]:
        """Other configurations of our store worth measuring (label: options for `sync`)."""
        return {}

    def analyze(self) -> None:
        """Refresh the planner's statistics (what autovacuum or a DBA does after a bulk load)."""

    def raw_variants(self, namespace: str) -> dict[str, Any]:
        """Other sync floors worth comparing with (by label), measured like the main one."""
        return {}

    def seed(self, namespace: str, count: int, now: datetime) -> int:
        """Put ``count`` threads in ``namespace``, 10% expired at ``now``; return that 10%."""
        raise NotImplementedError

    def cleanup(self, namespace: str) -> None:
        """Remove every record of ``namespace`` (best effort)."""


# --- memory ------------------------------------------------------------------------------------


class MemoryTarget(Target):
    name = "memory"
    label = "memory"
    module = "agents_persistence.repositories.memory"

    def sync(self, namespace: str, **options: Any) -> Any:
        from agents_persistence import MemoryCheckpointer

        return MemoryCheckpointer(namespace=namespace, **options)

    async def async_(self, namespace: str, **options: Any) -> Any:
        from agents_persistence import AsyncMemoryCheckpointer

        return AsyncMemoryCheckpointer(namespace=namespace, **options)

    def raw(self, namespace: str) -> Any:
        return rawmod.RawMemory()

    async def araw(self, namespace: str) -> Any:
        return rawmod.AsyncRawMemory()


# --- SQL ---------------------------------------------------------------------------------------


class SQLTarget(Target):
    """SQLAlchemy store on one dialect; the engine is ours and shared by every checkpointer."""

    module = "agents_persistence.repositories.sql"
    url: str = ""
    default_port = 0

    def __init__(self) -> None:
        self.engine: Any = None  # the harness's own: migrations, seeding, clean-up, sizes

    def unavailable(self) -> str | None:
        return super().unavailable() or self._server_reason()

    def _server_reason(self) -> str | None:
        return _reachable(self.url, self.default_port)

    def _create_database(self) -> None:
        """Create the bench database if the server lacks it."""

    def start(self) -> None:
        import sqlalchemy as sa

        from agents_persistence.migrations import upgrade

        self._create_database()
        self.engine = sa.create_engine(self.url)
        upgrade(self.engine)

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    # Our checkpointers open their own engines with from_url, as shipped (driver choice, pool
    # idle ping, timeouts, SQLite WAL); the pool is sized for the 16-worker throughput runs.
    def sync(self, namespace: str, **options: Any) -> Any:
        from agents_persistence.repositories.sql import SQLCheckpointer

        return SQLCheckpointer.from_url(
            self.url, pool_size=POOL_SIZE, max_overflow=0, namespace=namespace, **options
        )

    async def async_(self, namespace: str, **options: Any) -> Any:
        from agents_persistence.repositories.sql import AsyncSQLCheckpointer

        return AsyncSQLCheckpointer.from_url(
            self.url, pool_size=POOL_SIZE, max_overflow=0, namespace=namespace, **options
        )

    def sync_shipped(self, namespace: str) -> Any:
        from agents_persistence.repositories.sql import SQLCheckpointer

        return SQLCheckpointer.from_url(self.url, namespace=namespace)

    async def async_shipped(self, namespace: str) -> Any:
        from agents_persistence.repositories.sql import AsyncSQLCheckpointer

        return AsyncSQLCheckpointer.from_url(self.url, namespace=namespace)

    def cleanup(self, namespace: str) -> None:
        import sqlalchemy as sa

        with self.engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE namespace = :ns"), {"ns": namespace})

    def seed(self, namespace: str, count: int, now: datetime) -> int:
        """Bulk-insert ``count`` threads (10% expired at ``now``); return how many expired.

        Each row is the one our store writes for a first save: the state as compact JSON text
        (JSONB on PostgreSQL), its size, version 1, UTC timestamps. Only ``updated_at`` (one
        millisecond apart) and ``expires_at`` differ between rows.
        """
        import sqlalchemy as sa
        from sqlalchemy.dialects import postgresql

        from agents_persistence.models.sql import checkpoint_table

        table = checkpoint_table(TABLE)
        payload = seed_state().model_dump_json()
        state: Any = sa.bindparam("state", type_=sa.Text())
        if self.engine.dialect.name == "postgresql":
            state = sa.cast(state, postgresql.JSONB())
        stmt = table.insert().values(state=state)
        expired = 0
        rows = []
        with self.engine.begin() as conn:
            for i in range(count):
                updated = now - timedelta(milliseconds=i + 1)
                if i % 10 == 9:
                    expires, expired = now - timedelta(seconds=1), expired + 1
                else:
                    expires = now + timedelta(days=1)
                rows.append(
                    {
                        "namespace": namespace,
                        "thread_id": f"seed-{i:06d}",
                        "state": payload,
                        "state_bytes": len(payload),
                        "version": 1,
                        "created_at": updated,
                        "updated_at": updated,
                        "expires_at": expires,
                    }
                )
                if len(rows) == 5000:
                    conn.execute(stmt, rows)
                    rows = []
            if rows:
                conn.execute(stmt, rows)
        return expired

    def server_version(self) -> str:
        import sqlalchemy as sa

        with self.engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT version()")).scalar()).split(" on ")[0]

    def analyze(self) -> None:
        import sqlalchemy as sa

        statement = (
            "ANALYZE TABLE" if self.engine.dialect.name in ("mysql", "mariadb") else "ANALYZE"
        )
        with self.engine.begin() as conn:
            conn.execute(sa.text(f"{statement} {TABLE}"))

    def ours_variants(self) -> dict[str, dict[str, Any]]:
        # The cost of the alternative default: SQLAlchemy's pre-ping, a round trip each time a
        # connection is checked out of the pool (as shipped, only idle connections are pinged).
        return {"pre-ping": {"ping_idle_after": 0}}


class SQLiteTarget(SQLTarget):
    name = "sqlite"
    label = "SQLite"

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ap-bench-")
        self.path = os.path.join(self.dir, "bench.sqlite3")
        self.url = f"sqlite:///{self.path}"

    def _server_reason(self) -> str | None:
        return None

    def start(self) -> None:
        import sqlalchemy as sa

        from agents_persistence.migrations import upgrade

        self.engine = sa.create_engine(self.url)
        upgrade(self.engine)

    def pragmas(self) -> dict[str, Any]:
        """What our from_url engine sets on each SQLite connection (WAL journal, a busy
        timeout); the raw floor runs with the same, so both pay for the same durability."""
        return {"journal_mode": "WAL", "busy_timeout": 30000}

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def server_version(self) -> str:
        import sqlite3

        return f"SQLite {sqlite3.sqlite_version}"

    def raw(self, namespace: str) -> Any:
        return rawmod.RawSQLite(self.path, namespace, TABLE, pragmas=self.pragmas())

    async def araw(self, namespace: str) -> Any:
        return await rawmod.AsyncRawSQLite.open(self.path, namespace, TABLE, pragmas=self.pragmas())


class PostgresTarget(SQLTarget):
    name = "postgresql"
    label = "PostgreSQL"
    url = PG_URL
    default_port = 5432

    def dsn(self) -> str:
        return self.url.replace("postgresql+psycopg://", "postgresql://")

    def _create_database(self) -> None:
        import psycopg

        database = urlsplit(self.url).path.lstrip("/")
        admin = self.dsn().rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            if found.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{database}"')

    def raw(self, namespace: str) -> Any:
        return rawmod.RawPostgres(self.dsn(), namespace, TABLE)

    async def araw(self, namespace: str) -> Any:
        return await rawmod.AsyncRawPostgres.open(self.dsn(), namespace, TABLE)


class MariaDBTarget(SQLTarget):
    name = "mariadb"
    label = "MariaDB"
    url = MY_URL
    default_port = 3306

    def params(self, database: bool = True) -> dict[str, Any]:
        parts = urlsplit(self.url)
        out: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 3306,
            "user": parts.username or "root",
            "password": parts.password or "",
        }
        if database:
            out["database"] = parts.path.lstrip("/")
        return out

    def _create_database(self) -> None:
        import pymysql

        conn = pymysql.connect(**self.params(database=False))
        try:
            with conn.cursor() as cur:
                cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{urlsplit(self.url).path.lstrip('/')}`"
                )
        finally:
            conn.close()

    def raw(self, namespace: str) -> Any:
        return rawmod.RawMariaDB(self.params(), namespace, TABLE)

    async def araw(self, namespace: str) -> Any:
        return await rawmod.AsyncRawMariaDB.open(self.params(), namespace, TABLE)


def seed_state() -> Any:
    """The small snapshot every seeded thread holds (listing never reads it)."""
    from agents_persistence import AgentStateSnapshot, TodoItem

    return AgentStateSnapshot(todos=[TodoItem(content="seeded")], scratchpad={"turn": 1})

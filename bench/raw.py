"""The floor: each store's operations written by hand with the bare driver, same guarantees.

A raw save encodes the snapshot with pydantic, writes it and bumps the thread's version in one
atomic step (resetting it when the stored record has expired), and returns the new version; a
raw load reads the live record with one query and decodes it with pydantic. They write the same
table, keys or items as the store, in their own namespace, so the server does the same work.
What is left out is what the library adds: validation, its own mapping, SQLAlchemy, redis-om,
PynamoDB, error translation.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from agents_persistence import AgentStateSnapshot

State = AgentStateSnapshot


def _now() -> datetime:
    return datetime.now(UTC)


class RawMemory:
    """A dict of JSON text behind a lock: what the memory store does with nothing else."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, tuple[str, int]] = {}

    def save(self, thread_id: str, state: State) -> int:
        payload = state.model_dump_json()
        with self._lock:
            version = self._rows.get(thread_id, ("", 0))[1] + 1
            self._rows[thread_id] = (payload, version)
        return version

    def load(self, thread_id: str) -> State | None:
        with self._lock:
            row = self._rows.get(thread_id)
        return None if row is None else State.model_validate_json(row[0])

    def close(self) -> None:
        pass


class AsyncRawMemory(RawMemory):
    async def asave(self, thread_id: str, state: State) -> int:
        return self.save(thread_id, state)

    async def aload(self, thread_id: str) -> State | None:
        return self.load(thread_id)

    async def aclose(self) -> None:
        pass


# --- SQL ---------------------------------------------------------------------------------------

_COLUMNS = "namespace, thread_id, state, state_bytes, version, created_at, updated_at, expires_at"
_EXPIRED = "t.expires_at IS NOT NULL AND t.expires_at <= excluded.updated_at"

PG_UPSERT = f"""
INSERT INTO {{table}} AS t ({_COLUMNS})
VALUES (%s, %s, %s::jsonb, %s, 1, %s, %s, %s)
ON CONFLICT (namespace, thread_id) DO UPDATE SET
  state = excluded.state, state_bytes = excluded.state_bytes,
  version = CASE WHEN {_EXPIRED} THEN 1 ELSE t.version + 1 END,
  created_at = CASE WHEN {_EXPIRED} THEN excluded.created_at ELSE t.created_at END,
  updated_at = excluded.updated_at, expires_at = excluded.expires_at
RETURNING version, created_at
"""
PG_SELECT = """
SELECT state::text, version, created_at, updated_at, expires_at, state_bytes FROM {table}
WHERE namespace = %s AND thread_id = %s AND (expires_at IS NULL OR expires_at > %s)
"""

SQLITE_UPSERT = PG_UPSERT.replace("%s::jsonb", "?").replace("%s", "?")
SQLITE_SELECT = PG_SELECT.replace("state::text", "state").replace("%s", "?")

# MariaDB (10.5+) returns the row an INSERT .. ON DUPLICATE KEY UPDATE leaves, like PostgreSQL's
# ON CONFLICT .. RETURNING: one statement, one round trip. Assignments run left to right, so
# created_at sees the new version.
MY_UPSERT = f"""
INSERT INTO {{table}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, 1, %s, %s, %s)
ON DUPLICATE KEY UPDATE
  version = IF(expires_at IS NOT NULL AND expires_at <= VALUES(updated_at), 1, version + 1),
  created_at = IF(version = 1, VALUES(created_at), created_at),
  state = VALUES(state), state_bytes = VALUES(state_bytes),
  updated_at = VALUES(updated_at), expires_at = VALUES(expires_at)
RETURNING version, created_at
"""
MY_SELECT = PG_SELECT.replace("state::text", "state")


def sqlite_ts(moment: datetime) -> str:
    """How SQLAlchemy stores a datetime in SQLite (naive UTC text, microseconds)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class _RawSQL:
    def __init__(self, namespace: str, ttl: timedelta | None) -> None:
        self.namespace = namespace
        self.ttl = ttl

    def _row(self, thread_id: str, state: State) -> tuple[str, int, datetime, datetime | None]:
        payload = state.model_dump_json()
        now = _now()
        expires = None if self.ttl is None else now + self.ttl
        return payload, len(payload.encode()), now, expires


class RawPostgres(_RawSQL):
    """psycopg 3: an ``INSERT .. ON CONFLICT .. RETURNING`` upsert and one ``SELECT``."""

    def __init__(self, dsn: str, namespace: str, table: str, ttl: timedelta | None = None) -> None:
        import psycopg

        super().__init__(namespace, ttl)
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.upsert = PG_UPSERT.format(table=table)
        self.select = PG_SELECT.format(table=table)

    def save(self, thread_id: str, state: State) -> int:
        payload, size, now, expires = self._row(thread_id, state)
        row = self.conn.execute(
            self.upsert, (self.namespace, thread_id, payload, size, now, now, expires)
        ).fetchone()
        assert row is not None
        return int(row[0])

    def load(self, thread_id: str) -> State | None:
        row = self.conn.execute(self.select, (self.namespace, thread_id, _now())).fetchone()
        return None if row is None else State.model_validate_json(row[0])

    def close(self) -> None:
        self.conn.close()


class AsyncRawPostgres(_RawSQL):
    """psycopg 3 ``AsyncConnection``, the same statements as `RawPostgres`."""

    def __init__(self, namespace: str, table: str, ttl: timedelta | None = None) -> None:
        super().__init__(namespace, ttl)
        self.upsert = PG_UPSERT.format(table=table)
        self.select = PG_SELECT.format(table=table)
        self.conn: Any = None

    @classmethod
    async def open(
        cls, dsn: str, namespace: str, table: str, ttl: timedelta | None = None
    ) -> AsyncRawPostgres:
        import psycopg

        raw = cls(namespace, table, ttl)
        raw.conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        return raw

    async def asave(self, thread_id: str, state: State) -> int:
        payload, size, now, expires = self._row(thread_id, state)
        cur = await self.conn.execute(
            self.upsert, (self.namespace, thread_id, payload, size, now, now, expires)
        )
        row = await cur.fetchone()
        return int(row[0])

    async def aload(self, thread_id: str) -> State | None:
        cur = await self.conn.execute(self.select, (self.namespace, thread_id, _now()))
        row = await cur.fetchone()
        return None if row is None else State.model_validate_json(row[0])

    async def aclose(self) -> None:
        await self.conn.close()


class RawSQLite(_RawSQL):
    """sqlite3 in autocommit mode: the same upsert (SQLite has ``RETURNING``) and ``SELECT``."""

    def __init__(
        self,
        path: str,
        namespace: str,
        table: str,
        ttl: timedelta | None = None,
        pragmas: dict[str, Any] | None = None,
    ) -> None:
        import sqlite3

        super().__init__(namespace, ttl)
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for name, value in (pragmas or {}).items():
            self.conn.execute(f"PRAGMA {name}={value}")
        self.upsert = SQLITE_UPSERT.format(table=table)
        self.select = SQLITE_SELECT.format(table=table)

    def save(self, thread_id: str, state: State) -> int:
        payload, size, now, expires = self._row(thread_id, state)
        ts = sqlite_ts(now)
        exp = None if expires is None else sqlite_ts(expires)
        row = self.conn.execute(
            self.upsert, (self.namespace, thread_id, payload, size, ts, ts, exp)
        ).fetchone()
        return int(row[0])

    def load(self, thread_id: str) -> State | None:
        row = self.conn.execute(
            self.select, (self.namespace, thread_id, sqlite_ts(_now()))
        ).fetchone()
        return None if row is None else State.model_validate_json(row[0])

    def close(self) -> None:
        self.conn.close()


class AsyncRawSQLite(RawSQLite):
    """aiosqlite, the asyncio driver SQLAlchemy's async SQLite engine uses."""

    @classmethod
    async def open(
        cls,
        path: str,
        namespace: str,
        table: str,
        ttl: timedelta | None = None,
        pragmas: dict[str, Any] | None = None,
    ) -> AsyncRawSQLite:
        import aiosqlite

        raw = cls.__new__(cls)
        _RawSQL.__init__(raw, namespace, ttl)
        raw.aconn = await aiosqlite.connect(path, isolation_level=None)
        for name, value in (pragmas or {}).items():
            await raw.aconn.execute(f"PRAGMA {name}={value}")
        raw.upsert = SQLITE_UPSERT.format(table=table)
        raw.select = SQLITE_SELECT.format(table=table)
        return raw

    async def asave(self, thread_id: str, state: State) -> int:
        payload, size, now, expires = self._row(thread_id, state)
        ts = sqlite_ts(now)
        exp = None if expires is None else sqlite_ts(expires)
        cur = await self.aconn.execute(
            self.upsert, (self.namespace, thread_id, payload, size, ts, ts, exp)
        )
        row = await cur.fetchone()
        await cur.close()
        return int(row[0])

    async def aload(self, thread_id: str) -> State | None:
        cur = await self.aconn.execute(self.select, (self.namespace, thread_id, sqlite_ts(_now())))
        row = await cur.fetchone()
        await cur.close()
        return None if row is None else State.model_validate_json(row[0])

    async def aclose(self) -> None:
        await self.aconn.close()


def _naive(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.replace(tzinfo=None)


class RawMariaDB(_RawSQL):
    """PyMySQL in autocommit mode: one ``INSERT .. ON DUPLICATE KEY UPDATE``, one ``SELECT``."""

    def __init__(self, params: dict[str, Any], namespace: str, table: str, ttl=None) -> None:
        import pymysql

        super().__init__(namespace, ttl)
        self.conn = pymysql.connect(**params, autocommit=True, charset="utf8mb4")
        self.upsert = MY_UPSERT.format(table=table)
        self.select = MY_SELECT.format(table=table)

    def save(self, thread_id: str, state: State) -> int:
        payload, size, now, expires = self._row(thread_id, state)
        ts = _naive(now)
        with self.conn.cursor() as cur:
            cur.execute(
                self.upsert, (self.namespace, thread_id, payload, size, ts, ts, _naive(expires))
            )
            return int(cur.fetchone()[0])

    def load(self, thread_id: str) -> State | None:
        with self.conn.cursor() as cur:
            cur.execute(self.select, (self.namespace, thread_id, _naive(_now())))
            row = cur.fetchone()
        return None if row is None else State.model_validate_json(row[0])

    def close(self) -> None:
        self.conn.close()


class AsyncRawMariaDB(_RawSQL):
    """aiomysql, the same statements as `RawMariaDB`."""

    @classmethod
    async def open(
        cls, params: dict[str, Any], namespace: str, table: str, ttl=None
    ) -> AsyncRawMariaDB:
        import aiomysql

        raw = cls(namespace, ttl)
        args = dict(params)
        args["db"] = args.pop("database", None)
        raw.conn = await aiomysql.connect(**args, autocommit=True, charset="utf8mb4")
        raw.upsert = MY_UPSERT.format(table=table)
        raw.select = MY_SELECT.format(table=table)
        return raw

    async def asave(self, thread_id: str, state: State) -> int:
        payload, size, now, expires = self._row(thread_id, state)
        ts = _naive(now)
        async with self.conn.cursor() as cur:
            await cur.execute(
                self.upsert, (self.namespace, thread_id, payload, size, ts, ts, _naive(expires))
            )
            return int((await cur.fetchone())[0])

    async def aload(self, thread_id: str) -> State | None:
        async with self.conn.cursor() as cur:
            await cur.execute(self.select, (self.namespace, thread_id, _naive(_now())))
            row = await cur.fetchone()
        return None if row is None else State.model_validate_json(row[0])

    async def aclose(self) -> None:
        self.conn.close()


class ThreadedAsync:
    """The async twin of a sync raw floor for drivers without asyncio (boto3): a worker thread."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def asave(self, thread_id: str, state: State) -> int:
        return int(await asyncio.to_thread(self.inner.save, thread_id, state))

    async def aload(self, thread_id: str) -> State | None:
        return await asyncio.to_thread(self.inner.load, thread_id)

    async def aclose(self) -> None:
        self.inner.close()

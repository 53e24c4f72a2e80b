"""The Rust Deep Agents SDK's three layouts, made exactly as the Rust SDK makes and writes them.

PostgreSQL: the Rust ``ensure_table()`` DDL and its upsert, run through psycopg with
server-side prepared statements (as sqlx does). Redis: ``SET``/``SETEX`` and ``SADD`` with
redis-py. DynamoDB: ``put_item`` with boto3 on moto (the session's server). Each test gets its
own table, key namespace or DynamoDB table.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest

from ..cli.conftest import dynamodb_kit
from ..kits.base import IN_CI, tcp_reachable

if TYPE_CHECKING:
    from collections.abc import Iterator

POSTGRES_URL = os.environ.get(
    "AGENTS_PERSISTENCE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("AGENTS_PERSISTENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
LIBPQ_URL = POSTGRES_URL.replace("postgresql+psycopg://", "postgresql://", 1)

# From the Rust SDK's PostgresCheckpointer (crate agents-persistence), verbatim but for the
# table name; sqlx binds $1 and $2.
RUST_DDL = """
            CREATE TABLE IF NOT EXISTS {table} (
                thread_id TEXT PRIMARY KEY,
                state JSONB NOT NULL,
                created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
                updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW()
            )
            """
RUST_INDEX = """
            CREATE INDEX IF NOT EXISTS idx_{table}_updated_at 
            ON {table} (updated_at DESC)
            """  # noqa: W291 - the Rust source has the trailing space
RUST_SAVE = """
            INSERT INTO {table} (thread_id, state, created_at, updated_at)
            VALUES ($1, $2, NOW(), NOW())
            ON CONFLICT (thread_id) 
            DO UPDATE SET state = $2, updated_at = NOW()
            """  # noqa: W291
RUST_LOAD = "SELECT state FROM {table} WHERE thread_id = $1"
RUST_DELETE = "DELETE FROM {table} WHERE thread_id = $1"
RUST_LIST = "SELECT thread_id FROM {table} ORDER BY updated_at DESC"

# Rust serde JSON of AgentStateSnapshot: interrupts with chrono's RFC 3339 (nanoseconds, Z),
# fields this library does not know (a newer Rust SDK), nested scratchpad values.
RUST_STATES = {
    "plain": (
        '{"todos":[{"content":"Test todo","status":"pending"}],'
        '"files":{"test.txt":"content"},"scratchpad":{"key":"value"}}'
    ),
    "interrupted": (
        '{"todos":[{"content":"write the report","status":"in_progress"},'
        '{"content":"send it","status":"completed"}],"files":{"/notes.md":"# Notes\\nline"},'
        '"scratchpad":{"n":3,"nested":{"a":[1,2.5,null,true]}},'
        '"pending_interrupts":[{"type":"human_in_loop","tool_name":"write_file",'
        '"tool_args":{"path":"/report.md","content":"draft"},"policy_note":"needs approval",'
        '"created_at":"2026-11-28T10:15:30.123456789Z","call_id":"call_1"}],'
        '"rust_only_field":{"kept":true,"list":[1,"two"]}}'
    ),
    "unicode": '{"todos":[],"files":{"é/🦀.txt":"ü"},"scratchpad":{}}',
}
INTERRUPT_TIME = datetime(2026, 11, 28, 10, 15, 30, 123456, tzinfo=UTC)
CORRUPT_STATE = '{"todos":"not a list","files":{},"scratchpad":{}}'


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: an unreachable store fails the run)")
    pytest.skip(reason)


def libpq(sql: str) -> str:
    """A Rust statement for psycopg: ``$1``/``$2`` as named parameters (sent once each)."""
    return sql.replace("$1", "%(thread_id)s").replace("$2", "%(state)s")


class Layout:
    """One Rust store: write records the Rust way, and the URL that reads them."""

    name = ""
    url = ""

    def write(self, thread_id: str, state_json: str, *, ttl: int | None = None) -> None:
        raise NotImplementedError

    def expire(self, thread_id: str) -> None:
        """Make the record expired or gone while the layout may still name it."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class PostgresLayout(Layout):
    name = "postgresql"

    def __init__(self) -> None:
        import psycopg

        if not tcp_reachable("127.0.0.1", 5432):
            unavailable("PostgreSQL is not reachable at 127.0.0.1:5432")
        self.table = "rs_" + uuid.uuid4().hex[:12]
        # prepare_threshold=0: server-side prepared statements from the first run, like sqlx.
        self.conn = psycopg.connect(LIBPQ_URL, autocommit=True, prepare_threshold=0)
        self.ensure_table()
        self.url = "rust+" + LIBPQ_URL + "?" + urlencode({"table": self.table})

    def ensure_table(self) -> None:
        """What the Rust service runs at each start."""
        self.conn.execute(RUST_DDL.format(table=self.table))
        self.conn.execute(RUST_INDEX.format(table=self.table))

    def save(self, thread_id: str, state: Any) -> None:
        """The Rust upsert, with a JSON value as sqlx binds ``serde_json::Value``."""
        from psycopg.types.json import Jsonb

        self.conn.execute(
            libpq(RUST_SAVE.format(table=self.table)),
            {"thread_id": thread_id, "state": Jsonb(state)},
        )

    def write(self, thread_id: str, state_json: str, *, ttl: int | None = None) -> None:
        import json

        assert ttl is None, "the Rust PostgreSQL checkpointer has no TTL"
        self.save(thread_id, json.loads(state_json))

    def load(self, thread_id: str) -> Any:
        row = self.conn.execute(
            libpq(RUST_LOAD.format(table=self.table)), {"thread_id": thread_id}
        ).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        t = self.table
        self.conn.execute(
            f"DROP TABLE IF EXISTS {t}, {t}_alembic_version, {t}_lg_checkpoints, {t}_lg_blobs,"
            f" {t}_lg_writes, {t}_lg_threads CASCADE"
        )
        self.conn.execute(f"DROP FUNCTION IF EXISTS {t}_rust_writes() CASCADE")
        self.conn.close()


class RedisLayout(Layout):
    name = "redis"

    def __init__(self) -> None:
        import redis

        if not tcp_reachable("127.0.0.1", 6379):
            unavailable("Redis is not reachable at 127.0.0.1:6379")
        self.namespace = "rust" + uuid.uuid4().hex[:12]
        self.client = redis.Redis.from_url(REDIS_URL)
        self.url = "rust+" + REDIS_URL + "?" + urlencode({"namespace": self.namespace})

    def write(self, thread_id: str, state_json: str, *, ttl: int | None = None) -> None:
        key = f"{self.namespace}:thread:{thread_id}"
        if ttl is None:
            self.client.set(key, state_json)
        else:
            # The command itself (redis-py's setex() helper is deprecated).
            self.client.execute_command("SETEX", key, ttl, state_json)
        self.client.sadd(f"{self.namespace}:threads", thread_id)

    def expire(self, thread_id: str) -> None:
        # What Redis does when a SETEX key's time is up: the key goes, the set entry stays.
        self.client.delete(f"{self.namespace}:thread:{thread_id}")

    def close(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.namespace}:*"))
        if keys:
            self.client.delete(*keys)
        self.client.close()


class DynamoDBLayout(Layout):
    name = "dynamodb"

    def __init__(self, kit: Any) -> None:
        self.client = kit.client
        self.table = "rust-" + uuid.uuid4().hex[:12]
        # The user creates the Rust table: hash key thread_id (S).
        self.client.create_table(
            TableName=self.table,
            KeySchema=[{"AttributeName": "thread_id", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "thread_id", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        query = urlencode({"region": "us-east-1", "endpoint": kit.endpoint})
        self.url = f"rust+dynamodb://{self.table}?{query}"
        self.updated: dict[str, datetime] = {}

    def write(self, thread_id: str, state_json: str, *, ttl: int | None = None) -> None:
        now = datetime.now(UTC)
        self.updated[thread_id] = now
        item = {
            "thread_id": {"S": thread_id},
            "state": {"S": state_json},
            "updated_at": {"S": now.isoformat().replace("+00:00", "Z")},
        }
        if ttl is not None:
            item["ttl"] = {"N": str(int(now.timestamp()) + ttl)}
        self.client.put_item(TableName=self.table, Item=item)

    def expire(self, thread_id: str) -> None:
        # Past its ttl but still present, as DynamoDB leaves items for up to days.
        past = int((datetime.now(UTC) - timedelta(minutes=5)).timestamp())
        self.client.update_item(
            TableName=self.table,
            Key={"thread_id": {"S": thread_id}},
            UpdateExpression="SET #t = :t",
            ExpressionAttributeNames={"#t": "ttl"},
            ExpressionAttributeValues={":t": {"N": str(past)}},
        )

    def close(self) -> None:
        self.client.delete_table(TableName=self.table)


def make_layout(name: str, monkeypatch: pytest.MonkeyPatch) -> Layout:
    if name == "postgresql":
        return PostgresLayout()
    if name == "redis":
        return RedisLayout()
    return DynamoDBLayout(dynamodb_kit(monkeypatch))


@pytest.fixture(params=["postgresql", "redis", "dynamodb"])
def layout(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Layout]:
    made = make_layout(request.param, monkeypatch)
    yield made
    made.close()


@pytest.fixture
def rust_pg() -> Iterator[PostgresLayout]:
    made = PostgresLayout()
    yield made
    made.close()


_migrated: set[str] = set()


@pytest.fixture
def sql_target() -> Iterator[tuple[str, str]]:
    """The library's own table on PostgreSQL (migrated once) and a fresh namespace."""
    if not tcp_reachable("127.0.0.1", 5432):
        unavailable("PostgreSQL is not reachable at 127.0.0.1:5432")
    from agents_persistence import migrations, open_checkpointer

    if POSTGRES_URL not in _migrated:
        migrations.upgrade(POSTGRES_URL)
        _migrated.add(POSTGRES_URL)
    namespace = "rustcopy" + uuid.uuid4().hex[:10]
    yield POSTGRES_URL, namespace
    with open_checkpointer(POSTGRES_URL, namespace=namespace) as cp:
        for thread in list(cp.iter_threads()):
            cp.delete_thread(thread.thread_id)

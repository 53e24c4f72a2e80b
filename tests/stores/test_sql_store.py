"""Behaviour of the SQL store that the contract suite does not cover.

Schema readiness and ``auto_migrate``, engine ownership, URL-to-driver mapping, dialect details
(naive datetimes, binary thread-id collation, JSONB's NUL), batched purges, SQLite locking and
name validation. Runs against the same SQLite, PostgreSQL and MariaDB kits as the contract.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from agents_persistence import (
    AgentStateSnapshot,
    AsyncSQLCheckpointer,
    BackendUnavailableError,
    ConfigurationError,
    CorruptStateError,
    InvalidArgumentError,
    SchemaNotReadyError,
    SQLCheckpointer,
    TodoItem,
    open_async_checkpointer,
    open_checkpointer,
)
from agents_persistence._layout import SMALL_STATE_BYTES
from agents_persistence.migrations import (
    current,
    downgrade,
    head_revision,
    upgrade,
    version_table,
)
from agents_persistence.models.langgraph import langgraph_table_names
from agents_persistence.models.sql import checkpoint_table, pieces_table_name
from agents_persistence.repositories._sql_engine import to_async_url, to_sync_url
from agents_persistence.repositories._sql_statements import PURGE_BATCH

from ..conftest import _ready
from ..kits.sql import PLAIN_KITS as KITS
from ..kits.sql import SQLKit
from ..support import FakeClock

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from ..support import Portal

FIX_COMMANDS = (
    "agents-persistence db upgrade --url",
    "alembic upgrade head",
    "agents_persistence.migrations.upgrade(engine",
)


@pytest.fixture
def namespace() -> str:
    return "s" + uuid.uuid4().hex[:16]


@pytest.fixture
def scratch_table(sql_kit: SQLKit) -> Iterator[str]:
    """A table name of its own; whatever the test creates under it is dropped afterwards."""
    name = "cp_" + uuid.uuid4().hex[:12]
    yield name
    with sql_kit.engine.begin() as conn:
        for table in (
            *langgraph_table_names(name),
            pieces_table_name(name),
            name,
            version_table(name),
        ):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


# --- schema readiness ------------------------------------------------------------------------


def test_missing_table_raises_schema_not_ready_naming_the_fix(
    sql_kit: SQLKit, scratch_table: str, namespace: str
) -> None:
    cp = SQLCheckpointer(sql_kit.engine, table_name=scratch_table, namespace=namespace)
    with pytest.raises(SchemaNotReadyError) as caught:
        cp.save_state("t", AgentStateSnapshot())
    message = str(caught.value)
    assert scratch_table in message
    for command in FIX_COMMANDS:
        assert command in message
    assert f"--table-name {scratch_table}" in message
    assert f"-x table={scratch_table}" in message
    assert f"table_name={scratch_table!r}" in message
    # nothing was created behind the application's back
    assert not sa.inspect(sql_kit.engine).has_table(scratch_table)


def test_missing_table_raises_schema_not_ready_async(
    sql_kit: SQLKit, scratch_table: str, namespace: str, portal: Portal
) -> None:
    async def attempt() -> None:
        engine = await sql_kit.async_engine()
        cp = AsyncSQLCheckpointer(engine, table_name=scratch_table, namespace=namespace)
        await cp.load_state("t")

    with pytest.raises(SchemaNotReadyError, match="agents-persistence db upgrade"):
        portal.call(attempt)


def test_table_without_recorded_migrations_is_not_ready(
    sql_kit: SQLKit, scratch_table: str, namespace: str
) -> None:
    checkpoint_table(scratch_table).create(sql_kit.engine)
    cp = SQLCheckpointer(sql_kit.engine, table_name=scratch_table, namespace=namespace)
    with pytest.raises(SchemaNotReadyError, match="never recorded"):
        cp.list_threads()


def test_table_at_an_unknown_revision_is_not_ready(
    sql_kit: SQLKit, scratch_table: str, namespace: str
) -> None:
    upgrade(sql_kit.engine, table_name=scratch_table)
    with sql_kit.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {version_table(scratch_table)} SET version_num = 'abc123'"))
    cp = SQLCheckpointer(sql_kit.engine, table_name=scratch_table, namespace=namespace)
    with pytest.raises(SchemaNotReadyError, match=f"abc123.*{head_revision()}"):
        cp.load_state("t")


def test_table_dropped_after_first_use_is_reported_as_not_ready(
    sql_kit: SQLKit, scratch_table: str, namespace: str
) -> None:
    upgrade(sql_kit.engine, table_name=scratch_table)
    cp = SQLCheckpointer(sql_kit.engine, table_name=scratch_table, namespace=namespace)
    cp.save_state("t", AgentStateSnapshot())
    downgrade(sql_kit.engine, "base", table_name=scratch_table)
    with pytest.raises(SchemaNotReadyError) as caught:
        cp.load_state("t")
    assert "agents-persistence db upgrade" in str(caught.value)
    assert isinstance(caught.value.__cause__, sa.exc.DBAPIError)


def test_custom_table_works_once_migrated(
    sql_kit: SQLKit, scratch_table: str, namespace: str
) -> None:
    upgrade(sql_kit.engine, table_name=scratch_table)
    cp = SQLCheckpointer(sql_kit.engine, table_name=scratch_table, namespace=namespace)
    assert cp.table_name == scratch_table
    cp.save_state("t", AgentStateSnapshot(scratchpad={"x": 1}))
    assert sql_kit.stored_count(namespace) == 0  # not in the default table
    with sql_kit.engine.connect() as conn:
        count = conn.execute(sa.text(f"SELECT COUNT(*) FROM {scratch_table}")).scalar_one()
    assert count == 1


def test_auto_migrate_creates_the_sqlite_schema_on_first_use(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'embedded.db'}"
    with SQLCheckpointer.from_url(url) as cp, pytest.raises(SchemaNotReadyError):
        cp.load_state("t")
    assert current(url) is None
    with SQLCheckpointer.from_url(url, auto_migrate=True) as cp:
        cp.save_state("t", AgentStateSnapshot(scratchpad={"v": 1}))
    assert current(url) == head_revision()
    with SQLCheckpointer.from_url(url) as cp:
        assert cp.load_state("t") == AgentStateSnapshot(scratchpad={"v": 1})


def test_auto_migrate_async(tmp_path: Path, portal: Portal) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'embedded.db'}"

    async def use() -> AgentStateSnapshot | None:
        async with AsyncSQLCheckpointer.from_url(url, auto_migrate=True) as cp:
            await cp.save_state("t", AgentStateSnapshot(scratchpad={"v": 2}))
            return await cp.load_state("t")

    assert portal.call(use) == AgentStateSnapshot(scratchpad={"v": 2})
    assert current(url) == head_revision()


# --- engines: injected versus owned ----------------------------------------------------------


def test_injected_engine_stays_usable_after_close(sql_kit: SQLKit, namespace: str) -> None:
    cp = SQLCheckpointer(sql_kit.engine, namespace=namespace)
    cp.save_state("t", AgentStateSnapshot())
    cp.close()
    with sql_kit.engine.connect() as conn:
        assert conn.execute(sa.select(1)).scalar_one() == 1
    again = SQLCheckpointer(sql_kit.engine, namespace=namespace)
    assert again.load_state("t") == AgentStateSnapshot()


def test_injected_async_engine_stays_usable_after_close(
    sql_kit: SQLKit, namespace: str, portal: Portal
) -> None:
    async def scenario() -> int:
        engine = await sql_kit.async_engine()
        async with AsyncSQLCheckpointer(engine, namespace=namespace) as cp:
            await cp.save_state("t", AgentStateSnapshot())
        async with engine.connect() as conn:
            return int((await conn.execute(sa.select(1))).scalar_one())

    assert portal.call(scenario) == 1


def test_from_url_owns_and_disposes_its_engine(sql_kit: SQLKit, namespace: str) -> None:
    cp = SQLCheckpointer.from_url(sql_kit.sync_url(), namespace=namespace)
    cp.save_state("t", AgentStateSnapshot())
    pool = cp.engine.pool
    assert pool.checkedin() >= 1  # pooled connections are open
    cp.close()
    assert pool.checkedin() == 0  # ... and closed by close()


def test_async_from_url_owns_and_disposes_its_engine(
    sql_kit: SQLKit, namespace: str, portal: Portal
) -> None:
    async def scenario() -> tuple[str, int, int]:
        cp = AsyncSQLCheckpointer.from_url(sql_kit.sync_url(), namespace=namespace)
        await cp.save_state("t", AgentStateSnapshot())
        pool = cp.engine.sync_engine.pool
        before = pool.checkedin()
        await cp.close()
        return cp.engine.url.drivername, before, pool.checkedin()

    driver, before, after = portal.call(scenario)
    assert driver in (
        "sqlite+aiosqlite",
        "postgresql+psycopg",
        "mysql+aiomysql",
        "mariadb+aiomysql",
    )
    assert before >= 1
    assert after == 0


def test_open_checkpointer_picks_the_sql_store(tmp_path: Path, portal: Portal) -> None:
    url = f"sqlite:///{tmp_path / 'open.db'}"
    cp = open_checkpointer(url, auto_migrate=True)
    try:
        assert isinstance(cp, SQLCheckpointer)
        cp.save_state("t", AgentStateSnapshot())
    finally:
        cp.close()

    async def use() -> str:
        acp = open_async_checkpointer(url)
        try:
            assert isinstance(acp, AsyncSQLCheckpointer)
            assert await acp.load_state("t") == AgentStateSnapshot()
            return acp.engine.url.drivername
        finally:
            await acp.close()

    assert portal.call(use) == "sqlite+aiosqlite"


@pytest.mark.parametrize(
    ("url", "sync_driver", "async_driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("postgres://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg", "postgresql+psycopg"),
        ("mysql://u@h/db", "mysql+pymysql", "mysql+aiomysql"),
        ("mysql+pymysql://u@h/db", "mysql+pymysql", "mysql+aiomysql"),
        ("mariadb://u@h/db", "mariadb+pymysql", "mariadb+aiomysql"),
        ("sqlite:///x.db", "sqlite", "sqlite+aiosqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite", "sqlite+aiosqlite"),
    ],
)
def test_plain_urls_get_the_shipped_drivers(url: str, sync_driver: str, async_driver: str) -> None:
    assert to_sync_url(url).drivername == sync_driver
    assert to_async_url(url).drivername == async_driver


def test_wrong_engine_kind_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(ConfigurationError, match="AsyncEngine"):
        SQLCheckpointer(create_async_engine("sqlite+aiosqlite:///" + str(tmp_path / "x.db")))  # type: ignore[arg-type]
    engine = sa.create_engine(url)
    with pytest.raises(ConfigurationError, match="AsyncEngine"):
        AsyncSQLCheckpointer(engine)  # type: ignore[arg-type]
    engine.dispose()


@pytest.mark.parametrize(
    "options",
    [
        {"table_name": "x; drop table agent_checkpoints"},
        {"table_name": "1starts_with_digit"},
        {"table_name": ""},
        {"table_name": "a" * 64},
        {"schema": "public; drop"},
        {"schema": "with space"},
    ],
    ids=repr,
)
def test_table_and_schema_names_are_validated(tmp_path: Path, options: dict[str, Any]) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ConfigurationError):
        SQLCheckpointer(engine, **options)
    with pytest.raises(ConfigurationError):
        SQLCheckpointer.from_url(f"sqlite:///{tmp_path / 'y.db'}", **options)
    engine.dispose()


def test_invalid_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        SQLCheckpointer.from_url("not a url")
    with pytest.raises(ConfigurationError):
        SQLCheckpointer.from_url("postgresql+nosuchdriver://u@h/db")


# --- dialect details -------------------------------------------------------------------------


def test_case_and_trailing_space_make_distinct_threads(sql_kit: SQLKit, namespace: str) -> None:
    cp = sql_kit.make(namespace=namespace)
    for thread_id in ("a", "A", "a "):
        cp.save_state(thread_id, AgentStateSnapshot(scratchpad={"id": thread_id}))
    for thread_id in ("a", "A", "a "):
        checkpoint = cp.load_checkpoint(thread_id)
        assert checkpoint.state.scratchpad == {"id": thread_id}
        assert checkpoint.info.version == 1
    assert sorted(t.thread_id for t in cp.iter_threads()) == ["A", "a", "a "]
    assert sql_kit.stored_count(namespace) == 3


def test_datetimes_come_back_aware_utc(sql_kit: SQLKit, namespace: str) -> None:
    clock = FakeClock(datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC))
    cp = sql_kit.make(namespace=namespace, clock=clock, ttl=60)
    cp.save_state("t", AgentStateSnapshot())
    table = checkpoint_table()
    with sql_kit.engine.connect() as conn:
        raw = conn.execute(
            sa.select(table.c.created_at).where(table.c.namespace == namespace)
        ).scalar_one()
    if sql_kit.name in ("sqlite", "mariadb"):
        assert raw.tzinfo is None  # what the driver hands back ...
    info = cp.load_checkpoint("t").info
    listed = cp.list_threads().threads[0]
    for moment in (info.created_at, info.updated_at, listed.created_at, listed.updated_at):
        assert moment.utcoffset() == timedelta(0)  # ... and what the store returns
        assert moment == clock()
    assert info.expires_at == clock() + timedelta(seconds=60)
    assert info.expires_at.utcoffset() == timedelta(0)


def test_nul_characters_in_states(sql_kit: SQLKit, namespace: str) -> None:
    cp = sql_kit.make(namespace=namespace)
    # The files, scratchpad and messages of a state large enough to be split are pieces
    # (bytes): U+0000 is kept there on every dialect.
    large = "x" * (SMALL_STATE_BYTES + 100)
    state = AgentStateSnapshot(
        files={"bin.dat": "before\x00after", "large": large}, scratchpad={"k": "\x00"}
    )
    cp.save_state("t", state)
    assert cp.load_state("t") == state
    in_head = AgentStateSnapshot(todos=[TodoItem(content="a\x00b", status="pending")])
    small = AgentStateSnapshot(files={"bin.dat": "before\x00after"})  # one head, whole
    if sql_kit.name != "postgresql":
        for written in (in_head, small):
            cp.save_state("t", written)
            assert cp.load_state("t") == written
        return
    # The head is JSONB, which cannot hold U+0000: a typed error, and nothing written.
    # (A checkpointer that read nothing writes the small state whole.)
    for refused in (in_head, small):
        with pytest.raises(InvalidArgumentError, match="NUL"):
            SQLCheckpointer(cp.engine, namespace=namespace).save_state("t", refused)
    checkpoint = cp.load_checkpoint("t")
    assert checkpoint.state == state
    assert checkpoint.info.version == 1


def test_purge_deletes_in_batches_until_done(sql_kit: SQLKit, namespace: str) -> None:
    expired_at = datetime(2020, 1, 1, tzinfo=UTC)
    count = PURGE_BATCH * 2 + 7
    rows = [
        {
            "namespace": namespace,
            "thread_id": f"t{n}",
            "state": {},
            "state_bytes": 2,
            "version": 1,
            "created_at": expired_at,
            "updated_at": expired_at,
            "expires_at": expired_at,
        }
        for n in range(count)
    ]
    with sql_kit.engine.begin() as conn:
        conn.execute(sa.insert(checkpoint_table()), rows)
    cp = sql_kit.make(namespace=namespace)
    cp.save_state("live", AgentStateSnapshot())
    assert sql_kit.stored_count(namespace) == count + 1
    assert cp.purge_expired() == count
    assert sql_kit.stored_count(namespace) == 1
    assert cp.load_state("live") == AgentStateSnapshot()


def test_delete_of_an_expired_thread_clears_it(sql_kit: SQLKit, namespace: str) -> None:
    clock = FakeClock()
    cp = sql_kit.make(namespace=namespace, clock=clock, ttl=5)
    cp.save_state("t", AgentStateSnapshot())
    clock.advance(10)
    assert cp.delete_thread("t") is False
    assert sql_kit.stored_count(namespace) == 0


def test_locked_sqlite_database_is_backend_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'locked.db'}"
    upgrade(url)
    holder = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with holder.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        cp = SQLCheckpointer.from_url(url, busy_timeout=0.2)
        try:
            with pytest.raises(BackendUnavailableError, match="locked"):
                cp.save_state("t", AgentStateSnapshot())
        finally:
            conn.exec_driver_sql("ROLLBACK")
            cp.close()
    holder.dispose()
    with SQLCheckpointer.from_url(url) as cp:
        assert cp.save_state("t", AgentStateSnapshot()).version == 1


def test_postgresql_schema_option(namespace: str) -> None:
    kit = next(k for k in KITS if k.name == "postgresql")
    _ready(kit)
    schema = "cps_" + uuid.uuid4().hex[:10]
    with kit.engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        with pytest.raises(SchemaNotReadyError, match=f"{schema}.agent_checkpoints"):
            SQLCheckpointer(kit.engine, schema=schema, namespace=namespace).load_state("t")
        upgrade(kit.engine, schema=schema)
        cp = SQLCheckpointer(kit.engine, schema=schema, namespace=namespace)
        cp.save_state("t", AgentStateSnapshot())
        assert [t.thread_id for t in cp.list_threads().threads] == ["t"]
        assert kit.stored_count(namespace) == 0  # not in public.agent_checkpoints
        with kit.engine.connect() as conn:
            count = conn.execute(
                sa.text(f"SELECT COUNT(*) FROM {schema}.agent_checkpoints")
            ).scalar_one()
        assert count == 1
    finally:
        with kit.engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.mark.parametrize(
    "assignment",
    [
        "state = CAST(X'7B22FF227D' AS TEXT)",  # not UTF-8: the driver cannot decode it
        "created_at = 'not a timestamp'",  # SQLAlchemy cannot convert it
    ],
)
def test_undecodable_sqlite_row_is_corrupt_state(tmp_path: Path, assignment: str) -> None:
    url = f"sqlite:///{tmp_path / 'corrupt.db'}"
    with SQLCheckpointer.from_url(url, auto_migrate=True) as cp:
        cp.save_state("t", AgentStateSnapshot())
        with cp.engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE agent_checkpoints SET {assignment}")
        with pytest.raises(CorruptStateError) as caught:
            cp.load_state("t")
        assert caught.value.thread_id == "t"
        assert caught.value.__cause__ is not None
        assert cp.delete_thread("t") is True  # the way out: delete, then save again
        cp.save_state("t", AgentStateSnapshot(scratchpad={"repaired": True}))
        assert cp.load_state("t") == AgentStateSnapshot(scratchpad={"repaired": True})


def test_table_names_too_long_for_migrations_are_refused_up_front() -> None:
    from sqlalchemy import create_engine

    from agents_persistence import ConfigurationError, SQLCheckpointer
    from agents_persistence.migrations import version_table

    engine = create_engine("sqlite://")
    try:
        longest = "t" * 43
        assert version_table(longest) == longest + "_alembic_version"
        SQLCheckpointer(engine, table_name=longest)
        with pytest.raises(ConfigurationError, match="at most 43"):
            SQLCheckpointer(engine, table_name="t" * 44)
    finally:
        engine.dispose()


# --- engines the store creates -----------------------------------------------------------------
# The contract suite runs on injected engines; engines made by from_url take other paths
# (READ COMMITTED per connection and the cursor-level locking save on MySQL/MariaDB).


def _race(cp: Any, workers: int = 8, rounds: int = 3) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from agents_persistence import ConflictError

    cp.save_state("race", AgentStateSnapshot(scratchpad={"seen": []}), expected_version=0)
    barrier = threading.Barrier(workers)

    def writer(worker: int) -> int:
        barrier.wait()
        for round_ in range(rounds):
            while True:
                checkpoint = cp.load_checkpoint("race")
                state = checkpoint.state.model_copy(deep=True)
                state.scratchpad["seen"].append(f"{worker}-{round_}")
                try:
                    cp.save_state("race", state, expected_version=checkpoint.info.version)
                except ConflictError:
                    continue
                break
        return rounds

    with ThreadPoolExecutor(workers) as pool:
        done = sum(pool.map(writer, range(workers)))
    final = cp.load_checkpoint("race")
    assert final.info.version == 1 + done == 1 + workers * rounds
    assert len(final.state.scratchpad["seen"]) == done
    creators = [(lambda w=w: _create_once(cp, w)) for w in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        wins = list(pool.map(lambda f: f(), creators))
    assert wins.count(True) == 1


def _create_once(cp: Any, worker: int) -> bool:
    from agents_persistence import ConflictError

    try:
        cp.save_state("once", AgentStateSnapshot(scratchpad={"w": worker}), expected_version=0)
    except ConflictError:
        return False
    return True


def test_from_url_engines_keep_versions_under_racing_writers(
    sql_kit: SQLKit, namespace: str
) -> None:
    with SQLCheckpointer.from_url(sql_kit.sync_url(), namespace=namespace) as cp:
        _race(cp)


def test_async_from_url_engines_keep_versions_under_racing_tasks(
    sql_kit: SQLKit, namespace: str, portal: Portal
) -> None:
    from ..support import AsyncAdapter

    inner = portal.call(lambda: _aopen(AsyncSQLCheckpointer, sql_kit.async_url(), namespace))
    cp = AsyncAdapter(portal, inner)
    try:
        _race(cp)
    finally:
        cp.close()


async def _aopen(cls: Any, url: str, namespace: str) -> Any:
    return cls.from_url(url, namespace=namespace)

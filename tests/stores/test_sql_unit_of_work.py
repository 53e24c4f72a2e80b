"""The SQL store inside the caller's transaction: ``cp.using(session)`` / ``cp.using(conn)``.

Each test runs on SQLite, PostgreSQL and MariaDB, sync and async, next to an application table
of its own: commit keeps both, rollback undoes both, a savepoint undoes its part only, a
conflict leaves the transaction usable, racing sessions get one winner per version, and a pool
of one connection never deadlocks (a second pooled connection would time out in 5 s).
"""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from agents_persistence import (
    AgentStateSnapshot,
    AsyncSQLCheckpointer,
    ConfigurationError,
    ConflictError,
    SQLCheckpointer,
    TodoItem,
)
from agents_persistence.errors import TransactionAbortedError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..kits.sql import SQLKit
    from ..support import Portal

pytestmark = pytest.mark.timeout(120)

WRITERS = 4


def state(text: str) -> AgentStateSnapshot:
    return AgentStateSnapshot(todos=[TodoItem(content=text)])


def _sqlite_savepoints(engine: sa.Engine) -> None:
    # SQLAlchemy's documented set-up for SAVEPOINT on pysqlite / aiosqlite: the driver's own
    # transaction handling off, SQLAlchemy emits BEGIN itself; IMMEDIATE takes the write lock
    # at once, so a transaction that reads before it writes never meets a newer commit.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class App:
    """An application's engines (pool of ``pool_size``) and its own table, for one test."""

    def __init__(self, kit: SQLKit, pool_size: int) -> None:
        pool = {"pool_size": pool_size, "max_overflow": 0, "pool_timeout": 5}
        self.engine = sa.create_engine(kit.sync_url(), **pool)
        self.async_engine: AsyncEngine = create_async_engine(kit.async_url(), **pool)
        if kit.name == "sqlite":
            _sqlite_savepoints(self.engine)
            _sqlite_savepoints(self.async_engine.sync_engine)
        self.namespace = "u" + uuid.uuid4().hex[:16]
        self.table = sa.Table(
            "app_" + uuid.uuid4().hex[:12],
            sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("thread_id", sa.String(256), nullable=False),
        )
        self.table.create(kit.engine)
        self.kit = kit

    def cp(self) -> SQLCheckpointer[AgentStateSnapshot]:
        return SQLCheckpointer(self.engine, namespace=self.namespace)

    def acp(self) -> AsyncSQLCheckpointer[AgentStateSnapshot]:
        return AsyncSQLCheckpointer(self.async_engine, namespace=self.namespace)

    def row(self, id_: int, thread_id: str) -> sa.Insert:
        return self.table.insert().values(id=id_, thread_id=thread_id)

    def app_rows(self) -> list[int]:
        with self.kit.engine.connect() as conn:
            return sorted(conn.execute(sa.select(self.table.c.id)).scalars())

    def version(self, thread_id: str) -> int | None:
        checkpoint = SQLCheckpointer(self.kit.engine, namespace=self.namespace).load_checkpoint(
            thread_id
        )
        return None if checkpoint is None else checkpoint.info.version

    def close(self, portal: Portal) -> None:
        portal.call(self.async_engine.dispose)
        self.engine.dispose()
        self.table.drop(self.kit.engine)


@pytest.fixture
def app(sql_kit: SQLKit, portal: Portal) -> Iterator[App]:
    a = App(sql_kit, pool_size=1)
    yield a
    a.close(portal)


# --- commit, rollback, savepoint -------------------------------------------------------------


@pytest.mark.parametrize("target", ["session", "connection"])
def test_commit_keeps_app_rows_and_state_together(app: App, target: str) -> None:
    cp = app.cp()
    if target == "session":
        with Session(app.engine) as session, session.begin():
            session.execute(app.row(1, "t1"))
            info = cp.using(session).save_state("t1", state("a"), expected_version=0)
            assert cp.using(session).load_state("t1") == state("a")  # sees its own write
    else:
        with app.engine.begin() as conn:
            conn.execute(app.row(1, "t1"))
            info = cp.using(conn).save_state("t1", state("a"), expected_version=0)
    assert info.version == 1
    assert app.app_rows() == [1]
    assert app.version("t1") == 1


@pytest.mark.parametrize("end", ["commit", "rollback"])
def test_a_save_that_begins_the_connection_follows_its_commit_or_rollback(
    app: App, end: str
) -> None:
    # The save is the first statement on the caller's connection: it begins the transaction
    # as SQLAlchemy's autobegin would, so the caller's commit or rollback decides.
    cp = app.cp()
    cp.load_state("warm-up")  # the one-time schema check, which reads on the connection
    with app.engine.connect() as conn:
        assert not conn.in_transaction()
        cp.using(conn).save_state("t1", state("a"))
        assert conn.in_transaction()
        getattr(conn, end)()
    assert app.version("t1") == (1 if end == "commit" else None)


def test_rollback_undoes_app_rows_and_state(app: App) -> None:
    cp = app.cp()
    cp.save_state("t1", state("before"))
    with Session(app.engine) as session:
        session.execute(app.row(1, "t1"))
        bound = cp.using(session)
        bound.save_state("t1", state("during"), expected_version=1)
        bound.save_state("t2", state("new"))
        assert bound.delete_thread("t1") is True
        session.rollback()
    assert app.app_rows() == []
    assert cp.load_state("t1") == state("before")
    assert cp.load_state("t2") is None


def test_savepoint_rollback_undoes_only_its_part(app: App) -> None:
    cp = app.cp()
    with Session(app.engine) as session, session.begin():
        session.execute(app.row(1, "t1"))
        cp.using(session).save_state("t1", state("kept"))
        nested = session.begin_nested()
        session.execute(app.row(2, "t2"))
        cp.using(session).save_state("t1", state("undone"), expected_version=1)
        cp.using(session).save_state("t2", state("undone"))
        nested.rollback()
        with session.begin_nested():
            cp.using(session).save_state("t3", state("released"), expected_version=0)
    assert app.app_rows() == [1]
    assert cp.load_state("t1") == state("kept")
    assert app.version("t1") == 1
    assert cp.load_state("t2") is None
    assert cp.load_state("t3") == state("released")


def test_conflict_leaves_the_transaction_usable(app: App) -> None:
    cp = app.cp()
    cp.save_state("t1", state("v1"))
    with Session(app.engine) as session, session.begin():
        bound = cp.using(session)
        with pytest.raises(ConflictError) as caught:
            bound.save_state("t1", state("stale"), expected_version=5)
        assert caught.value.actual == 1
        with pytest.raises(ConflictError):
            bound.save_state("t1", state("exists"), expected_version=0)
        session.execute(app.row(1, "t1"))
        assert bound.save_state("t1", state("v2"), expected_version=1).version == 2
    assert app.app_rows() == [1]
    assert cp.load_state("t1") == state("v2")


def test_async_unit_of_work(app: App, portal: Portal) -> None:
    async def run() -> None:
        acp = app.acp()
        async with AsyncSession(app.async_engine) as session, session.begin():
            await session.execute(app.row(1, "t1"))
            await acp.using(session).save_state("t1", state("a"), expected_version=0)
            nested = await session.begin_nested()
            await acp.using(session).save_state("t1", state("b"), expected_version=1)
            await nested.rollback()
            with pytest.raises(ConflictError):
                await acp.using(session).save_state("t1", state("c"), expected_version=2)
            page = await acp.using(session).list_threads()
            assert [t.thread_id for t in page.threads] == ["t1"]
        async with AsyncSession(app.async_engine) as session:
            await session.execute(app.row(2, "t2"))
            await acp.using(session).save_state("t2", state("gone"))
            await session.rollback()
        async with app.async_engine.connect() as conn:
            await acp.using(conn).save_state("t3", state("conn"))
            assert (await acp.using(conn).load_state("t3")) == state("conn")
            await conn.commit()

    portal.call(run)
    assert app.app_rows() == [1]
    assert app.version("t1") == 1
    assert app.version("t2") is None
    assert app.version("t3") == 1


# --- concurrency and pool exhaustion --------------------------------------------------------


def _race(app: App, thread_id: str, expected: int) -> list[str]:
    """``WRITERS`` sessions save ``thread_id`` at ``expected`` at the same time; outcomes."""
    cp = app.cp()
    barrier = threading.Barrier(WRITERS)
    outcomes: list[str] = []

    def writer(n: int) -> None:
        try:
            barrier.wait(30)
            with Session(app.engine) as session, session.begin():
                cp.using(session).save_state(thread_id, state(f"w{n}"), expected_version=expected)
                session.execute(app.row(n, thread_id))
            outcomes.append("won")
        except ConflictError:
            outcomes.append("conflict")
        except TransactionAbortedError:
            outcomes.append("aborted")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "writers still blocked after 60 s"
    return outcomes


@pytest.fixture
def racing_app(sql_kit: SQLKit, portal: Portal) -> Iterator[App]:
    a = App(sql_kit, pool_size=WRITERS)
    yield a
    a.close(portal)


def test_racing_sessions_get_one_winner_per_version(racing_app: App) -> None:
    racing_app.cp().save_state("t1", state("v1"))
    outcomes = _race(racing_app, "t1", expected=1)
    assert sorted(outcomes) == ["conflict"] * (WRITERS - 1) + ["won"]
    assert racing_app.version("t1") == 2
    assert len(racing_app.app_rows()) == 1  # only the winner's transaction committed


def test_racing_first_saves_create_once(racing_app: App) -> None:
    outcomes = _race(racing_app, "t1", expected=0)
    # MariaDB at its default REPEATABLE READ can deadlock first saves of one thread (gap
    # locks): InnoDB rolls the loser's whole transaction back, reported as such.
    assert outcomes.count("won") == 1
    assert len(outcomes) == WRITERS
    assert racing_app.version("t1") == 1
    assert len(racing_app.app_rows()) == 1


def test_pool_of_one_connection_does_not_deadlock(app: App, portal: Portal) -> None:
    cp = app.cp()
    with Session(app.engine) as session, session.begin():
        session.execute(app.row(1, "t1"))  # the session now holds the only connection
        bound = cp.using(session)
        bound.save_state("t1", state("a"))
        assert bound.load_checkpoint("t1") is not None
        assert [t.thread_id for t in bound.list_threads().threads] == ["t1"]
        assert bound.purge_expired() == 0
        bound.save_state("t2", state("b"))
        assert bound.delete_thread("t2") is True

    async def run() -> None:
        acp = app.acp()
        async with AsyncSession(app.async_engine) as session, session.begin():
            await session.execute(app.row(2, "t3"))
            await acp.using(session).save_state("t3", state("c"))
            assert (await acp.using(session).load_state("t3")) == state("c")

    portal.call(run)
    assert app.app_rows() == [1, 2]
    assert app.version("t1") == 1
    assert app.version("t3") == 1


def test_using_refuses_what_is_not_a_session_or_connection(app: App) -> None:
    with pytest.raises(ConfigurationError, match="Session or Connection"):
        app.cp().using(app.engine)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="AsyncSession or AsyncConnection"):
        app.acp().using(Session(app.engine))  # type: ignore[arg-type]

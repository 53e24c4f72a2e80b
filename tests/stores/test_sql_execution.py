"""How the SQL store executes: through SQLAlchemy's `Connection`, seen by event listeners, and
how engines made by ``from_url`` notice connections that went stale while idle.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from agents_persistence import (
    AgentStateSnapshot,
    AsyncSQLCheckpointer,
    BackendUnavailableError,
    DatabaseNotFoundError,
    InvalidArgumentError,
    SQLCheckpointer,
    TodoItem,
)

from ..conftest import _ready
from ..kits.sql import KITS, PLAIN_KITS, PostgreSQLKit, SQLKit, Traced

TRACED = [kit for kit in KITS if isinstance(kit, Traced)]


@pytest.fixture(params=TRACED, ids=[k.name for k in TRACED])
def traced(request: pytest.FixtureRequest) -> Any:
    return _ready(request.param)


def test_listeners_see_every_statement_of_each_operation(traced: Any, portal: Any) -> None:
    namespace = "x" + uuid.uuid4().hex[:16]
    cp = traced.make(namespace=namespace)
    cp.load_state("warm-up")  # the one-time schema check is not what this test counts
    table = "agent_checkpoints"
    for call, verb in [
        (lambda: cp.save_state("t1", AgentStateSnapshot()), ("INSERT", "SELECT")),
        (lambda: cp.save_state("t1", AgentStateSnapshot(), expected_version=1), ("UPDATE",)),
        (lambda: cp.load_state("t1"), ("SELECT",)),
        (lambda: cp.list_threads(), ("SELECT",)),
        (lambda: cp.delete_thread("t1"), ("DELETE",)),
        (lambda: cp.purge_expired(), ("DELETE", "SELECT")),
    ]:
        traced.seen.clear()
        call()
        mine = [s for s in traced.seen if table in s]
        assert mine, "no statement reached the listeners"
        # PostgreSQL writes a head and its pieces in one statement, as WITH clauses.
        assert any(s.lstrip().upper().startswith((*verb, "WITH")) for s in mine)

    async def run() -> None:
        acp = await traced.make_async(namespace=namespace)
        traced.seen.clear()
        await acp.save_state("t2", AgentStateSnapshot())
        await acp.load_state("t2")
        assert sum(table in s for s in traced.seen) >= 2

    portal.call(run)


def _kill(kit: SQLKit, application_name: str) -> int:
    with kit.engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = :name"
            ),
            {"name": application_name},
        ).scalar_one()
    return int(killed)


@pytest.mark.parametrize("ping_idle_after", [0.2, None])
def test_a_connection_dropped_while_idle_is_replaced_before_use(
    ping_idle_after: float | None,
) -> None:
    kit = _ready(next(k for k in KITS if type(k) is PostgreSQLKit))
    assert isinstance(kit, SQLKit)
    name = "ap-idle-" + uuid.uuid4().hex[:8]
    cp = SQLCheckpointer.from_url(
        kit.sync_url(),
        namespace="x" + uuid.uuid4().hex[:16],
        pool_size=1,
        max_overflow=0,
        ping_idle_after=ping_idle_after,
        engine_options={"connect_args": {"application_name": name}},
    )
    with cp:
        cp.save_state("t1", AgentStateSnapshot())
        assert _kill(kit, name) == 1  # the server drops the idle pooled connection
        time.sleep(0.5)
        if ping_idle_after is None:
            with pytest.raises(BackendUnavailableError):
                cp.load_state("t1")
            assert cp.load_state("t1") is not None  # the pool replaced it after the failure
        else:
            assert cp.load_state("t1") is not None


def test_the_idle_ping_works_on_async_engines(portal: Any) -> None:
    kit = _ready(next(k for k in KITS if type(k) is PostgreSQLKit))
    assert isinstance(kit, SQLKit)
    name = "ap-idle-" + uuid.uuid4().hex[:8]

    async def scenario() -> None:
        cp = AsyncSQLCheckpointer.from_url(
            kit.async_url(),
            namespace="x" + uuid.uuid4().hex[:16],
            pool_size=1,
            max_overflow=0,
            ping_idle_after=0.2,
            engine_options={"connect_args": {"application_name": name}},
        )
        async with cp:
            await cp.save_state("t1", AgentStateSnapshot())
            assert _kill(kit, name) == 1
            await asyncio.sleep(0.5)
            assert await cp.load_state("t1") is not None

    portal.call(scenario)


PLAIN = PLAIN_KITS


@pytest.mark.parametrize("kit", PLAIN, ids=[k.name for k in PLAIN])
def test_a_connection_returned_mid_transaction_is_rolled_back(kit: SQLKit) -> None:
    # from_url engines roll back on return only when the driver reports an open transaction:
    # a DBAPI connection handed back with an uncommitted DELETE must come back clean.
    kit = _ready(kit)
    assert isinstance(kit, SQLKit)
    namespace = "x" + uuid.uuid4().hex[:16]
    with SQLCheckpointer.from_url(
        kit.sync_url(), namespace=namespace, pool_size=1, max_overflow=0
    ) as cp:
        cp.save_state("t1", AgentStateSnapshot())
        raw = cp.engine.raw_connection()
        cursor = raw.cursor()
        cursor.execute("BEGIN")  # also where the pool's connections are in autocommit
        cursor.execute(f"DELETE FROM agent_checkpoints WHERE namespace = '{namespace}'")
        cursor.close()
        raw.close()  # back to the one-connection pool, the DELETE neither committed nor undone
        # The same pooled connection serves the load: it would see its own DELETE.
        assert cp.load_state("t1") is not None
        cp.save_state("t1", AgentStateSnapshot())
        assert cp.load_checkpoint("t1").info.version == 2  # type: ignore[union-attr]


def test_a_postgresql_from_url_engine_keeps_transactions_for_the_application() -> None:
    # The store's own calls run on an AUTOCOMMIT engine; `engine` is a view of it that is not.
    kit = _ready(next(k for k in KITS if type(k) is PostgreSQLKit))
    assert isinstance(kit, SQLKit)
    namespace = "x" + uuid.uuid4().hex[:16]
    delete = sa.text("DELETE FROM agent_checkpoints WHERE namespace = :ns")
    with SQLCheckpointer.from_url(kit.sync_url(), namespace=namespace) as cp:
        cp.save_state("t1", AgentStateSnapshot())
        with cp.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW transaction_isolation")).scalar() == "read committed"
        with cp.engine.connect() as conn, conn.begin() as transaction:
            conn.execute(delete, {"ns": namespace})
            transaction.rollback()
        assert cp.load_state("t1") is not None
        with cp.engine.begin() as conn:
            conn.execute(delete, {"ns": namespace})
        assert cp.load_state("t1") is None


# --- the cursor path and what sends a statement through SQLAlchemy's execution layer ---------


@pytest.mark.parametrize("kit", PLAIN, ids=[k.name for k in PLAIN])
def test_what_sends_hot_statements_through_sqlalchemy(
    kit: SQLKit, portal: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The cursor path is the default where nothing would see the difference; anything that
    # watches statements, and the asyncio drivers, take SQLAlchemy's execution layer.
    from agents_persistence.repositories._sql_run import direct

    kit = _ready(kit)
    assert isinstance(kit, SQLKit)
    engine = sa.create_engine(kit.sync_url())

    def listener(*args: Any) -> None:
        """A listener that does nothing."""

    try:
        with engine.connect() as conn:
            assert direct(conn, True) is True
            assert direct(conn, False) is True
            for target, name in [
                (engine, "before_cursor_execute"),
                (engine, "after_execute"),
                (sa.Engine, "before_cursor_execute"),  # Sentry's way: every engine
                (engine, "handle_error"),  # a dialect event
                (engine, "do_execute"),
            ]:
                sa.event.listen(target, name, listener)
                try:
                    assert direct(conn, True) is False, (target, name)
                finally:
                    sa.event.remove(target, name, listener)
                assert direct(conn, True) is True
            # A listener on the caller's own connection counts for that connection.
            sa.event.listen(conn, "before_cursor_execute", listener)
            assert direct(conn, False) is False
            with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
                assert direct(conn, True) is False
            assert direct(conn, True) is True
        # SQLAlchemy's own option engines listen to engine_connect: still the cursor path.
        with engine.execution_options(isolation_level="AUTOCOMMIT").connect() as conn:
            assert direct(conn, True) is True
        echoing = sa.create_engine(kit.sync_url(), echo=True)
        with echoing.connect() as conn:
            assert direct(conn, True) is False
        echoing.dispose()
    finally:
        engine.dispose()

    async def run() -> None:
        async_engine = create_async_engine(kit.async_url())
        try:
            async with async_engine.connect() as conn:
                assert direct(conn.sync_connection, True) is False  # type: ignore[arg-type]
        finally:
            await async_engine.dispose()

    portal.call(run)


@pytest.mark.parametrize("kit", PLAIN, ids=[k.name for k in PLAIN])
@pytest.mark.parametrize(
    "where",
    ["engine", "Engine class", "each new connection", "caller's connection", "log", "commit"],
)
def test_statements_are_seen_by_what_is_attached_after_the_first_call(
    kit: SQLKit, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    # OpenTelemetry listens on the engine, Sentry on the Engine class, an engine_connect
    # listener may listen on each new connection, a unit of work on its own connection, and
    # logging may be turned on at any time: each may come after the checkpointer's first
    # calls, which ran on the cursor.
    kit = _ready(kit)
    assert isinstance(kit, SQLKit)
    namespace = "x" + uuid.uuid4().hex[:16]
    engine = sa.create_engine(kit.sync_url())
    cp = SQLCheckpointer(engine, namespace=namespace)
    cp.save_state("t1", AgentStateSnapshot())
    assert cp.load_state("t1") is not None
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        seen.append(statement)

    target: Any = sa.Engine if where == "Engine class" else engine
    try:
        if where == "caller's connection":
            with engine.connect() as conn:
                sa.event.listen(conn, "before_cursor_execute", before)
                cp.using(conn).save_state("t1", AgentStateSnapshot(), expected_version=1)
                assert cp.using(conn).load_state("t1") is not None
                conn.commit()
        elif where == "each new connection":

            def on_connect(conn: sa.Connection) -> None:
                sa.event.listen(conn, "before_cursor_execute", before)

            sa.event.listen(engine, "engine_connect", on_connect)
            cp.save_state("t1", AgentStateSnapshot(), expected_version=1)
            assert cp.load_state("t1") is not None
        elif where == "log":
            with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
                cp.save_state("t1", AgentStateSnapshot(), expected_version=1)
                assert cp.load_state("t1") is not None
            seen = [r.getMessage() for r in caplog.records if r.name.startswith("sqlalchemy")]
        elif where == "commit":
            # A transaction listener alone (no statement listener): it sees the save commit.
            commits: list[bool] = []
            sa.event.listen(engine, "commit", lambda conn: commits.append(True))
            cp.save_state("t1", AgentStateSnapshot(), expected_version=1)
            assert commits
            return
        else:
            sa.event.listen(target, "before_cursor_execute", before)
            cp.save_state("t1", AgentStateSnapshot(), expected_version=1)
            assert cp.load_state("t1") is not None
    finally:
        if where in ("engine", "Engine class"):
            sa.event.remove(target, "before_cursor_execute", before)
        engine.dispose()
    mine = [s for s in seen if "agent_checkpoints" in s]
    assert any(s.lstrip().upper().startswith(("UPDATE", "INSERT", "WITH")) for s in mine), seen
    assert any(s.lstrip().upper().startswith("SELECT") for s in mine), seen


@pytest.mark.parametrize("hide", [True, False])
def test_an_engine_that_hides_parameters_keeps_them_out_of_errors(hide: bool) -> None:
    # The cursor path wraps a driver error as the execution layer does, honouring the engine's
    # ``hide_parameters``: the bound values (the state) stay out of the chained error's text.
    # (The server's own message may still quote what it refused.)
    kit = _ready(next(k for k in KITS if type(k) is PostgreSQLKit))
    assert isinstance(kit, SQLKit)
    engine = sa.create_engine(kit.sync_url(), hide_parameters=hide)
    cp = SQLCheckpointer(engine, namespace="x" + uuid.uuid4().hex[:16])
    refused = AgentStateSnapshot(todos=[TodoItem(content="secret-words\x00", status="pending")])
    try:
        with pytest.raises(InvalidArgumentError, match="NUL") as caught:
            cp.save_state("t1", refused)  # JSONB cannot hold U+0000
    finally:
        engine.dispose()
    cause = caught.value.__cause__
    assert isinstance(cause, sa.exc.DBAPIError)
    assert ("[SQL parameters hidden" in str(cause)) is hide
    assert ("[parameters:" in str(cause)) is not hide


# --- SQLite: calls on a pooled DBAPI connection without a `Connection` ---------------------


def test_what_gives_sqlite_calls_a_connection(
    tmp_path: Any, portal: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # On SQLite, loads and saves run on `Engine.raw_connection` unless something would see
    # that no `Connection` exists: any listener of a `Connection` event (a transaction's
    # included) or of a dialect event, statement logging, or an asyncio driver. Servers keep
    # their `Connection` (its transaction bookkeeping spares the pool's reset round trip).
    from agents_persistence.repositories._sql_run import lean

    engine = sa.create_engine(f"sqlite:///{tmp_path}/lean.db")

    def listener(*args: Any) -> None:
        """A listener that does nothing."""

    try:
        assert lean(engine) is True
        for target, name in [
            (engine, "before_cursor_execute"),
            (engine, "after_execute"),
            (engine, "engine_connect"),
            (engine, "begin"),
            (engine, "commit"),
            (engine, "rollback"),
            (sa.Engine, "commit"),  # every engine
            (engine, "handle_error"),  # dialect events
            (engine, "do_execute"),
        ]:
            sa.event.listen(target, name, listener)
            try:
                assert lean(engine) is False, (target, name)
            finally:
                sa.event.remove(target, name, listener)
            assert lean(engine) is True
        with caplog.at_level(logging.INFO, logger="sqlalchemy.engine"):
            assert lean(engine) is False
        # SQLAlchemy's own option engines listen to engine_connect: a `Connection` applies it.
        assert lean(engine.execution_options(isolation_level="AUTOCOMMIT")) is False
        echoing = sa.create_engine(f"sqlite:///{tmp_path}/lean.db", echo=True)
        assert lean(echoing) is False
        echoing.dispose()
    finally:
        engine.dispose()
    for kit in PLAIN:
        if kit.name != "sqlite":
            ready = _ready(kit)
            assert isinstance(ready, SQLKit)
            server = sa.create_engine(ready.sync_url())
            assert lean(server) is False, kit.name
            server.dispose()

    async def run() -> None:
        async_engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/lean.db")
        try:
            assert lean(async_engine.sync_engine) is False
        finally:
            await async_engine.dispose()

    portal.call(run)


def test_a_sqlite_file_whose_directory_went_away_is_database_not_found(tmp_path: Any) -> None:
    # A connection the pool opens for a call without a `Connection` fails as through one: a
    # typed error naming the file, not the driver's exception.
    directory = tmp_path / "gone"
    directory.mkdir()
    with SQLCheckpointer.from_url(f"sqlite:///{directory}/cp.db", auto_migrate=True) as cp:
        cp.save_state("t1", AgentStateSnapshot())
        cp.engine.dispose()  # the next call opens a new connection
        for name in os.listdir(directory):
            os.remove(directory / name)
        directory.rmdir()
        with pytest.raises(DatabaseNotFoundError):
            cp.load_state("t1")
        with pytest.raises(DatabaseNotFoundError):
            cp.save_state("t1", AgentStateSnapshot())


@pytest.mark.parametrize("reset", ["rollback", None])
@pytest.mark.parametrize("size", ["head", "pieces"])
def test_a_sqlite_commit_that_fails_leaves_nothing_written(
    tmp_path: Any, reset: str | None, size: str
) -> None:
    # Without WAL, a commit waits for readers to finish: one holding its read transaction past
    # the busy timeout makes the commit itself fail, whether the save's COMMIT (a head and its
    # pieces) or the end of its one statement (a delta of the head alone, run outside a
    # transaction). The save raises a typed error, nothing of it is kept, and the connection
    # goes back to the pool with no transaction left open, even by a pool that does not roll
    # back what it gets back (``pool_reset_on_return=None``).
    from agents_persistence import CheckpointerError
    from agents_persistence.migrations import upgrade

    url = f"sqlite:///{tmp_path}/journal.db"
    upgrade(url)
    engine = sa.create_engine(
        url,
        connect_args={"timeout": 0.2},
        pool_size=1,
        max_overflow=0,
        pool_reset_on_return=reset,
    )
    cp = SQLCheckpointer(engine, namespace="x" + uuid.uuid4().hex[:16])
    reader = sqlite3.connect(f"{tmp_path}/journal.db", isolation_level=None)
    files = {"big.py": "x" * 40_000} if size == "pieces" else {}
    try:
        cp.save_state("t1", AgentStateSnapshot(scratchpad={"n": 1}, files=files))
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM agent_checkpoints").fetchone() == (1,)
        files = {"big.py": "y" * 40_000} if size == "pieces" else {}
        with pytest.raises(CheckpointerError, match="locked"):
            cp.save_state("t1", AgentStateSnapshot(scratchpad={"n": 2}, files=files))
        reader.execute("COMMIT")
        checkpoint = cp.load_checkpoint("t1")
        assert checkpoint is not None
        assert checkpoint.info.version == 1
        assert checkpoint.state.scratchpad == {"n": 1}
        assert checkpoint.state.files == ({"big.py": "x" * 40_000} if size == "pieces" else {})
        assert cp.save_state("t1", AgentStateSnapshot(scratchpad={"n": 3})).version == 2
        assert cp.load_state("t1") == AgentStateSnapshot(scratchpad={"n": 3})
    finally:
        reader.close()
        engine.dispose()


def test_a_sqlite_save_is_one_statement_or_one_transaction(tmp_path: Any) -> None:
    # A save whose delta is the head alone is one statement, its own transaction: no BEGIN or
    # COMMIT around it. Every save of more than one statement (pieces to add or drop, or a
    # full write after a missed delta) runs them all in one transaction.
    url = f"sqlite:///{tmp_path}/shape.db"
    engine = sa.create_engine(url)
    seen: list[str] = []

    @sa.event.listens_for(engine.pool, "connect")
    def _trace(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.set_trace_callback(seen.append)

    cp = SQLCheckpointer(engine, auto_migrate=True, namespace="x" + uuid.uuid4().hex[:16])
    other = SQLCheckpointer(engine, namespace=cp.namespace)
    big = {f"f{i}.py": str(i) * 20_000 for i in range(3)}

    def statements(call: Any) -> list[str]:
        seen.clear()
        call()
        return [s.split()[0].upper() for s in seen]

    try:
        cp.save_state("t", AgentStateSnapshot(scratchpad={"n": 0}))  # the schema check
        # The head alone, as a delta on the last save: one statement.
        assert statements(lambda: cp.save_state("t", AgentStateSnapshot(scratchpad={"n": 1}))) == [
            "UPDATE"
        ]
        # Pieces to add: the head's delta and the inserts in one transaction.
        shape = statements(lambda: cp.save_state("t", AgentStateSnapshot(files=big)))
        assert shape[0] == "BEGIN"
        assert shape[-1] == "COMMIT"
        assert "INSERT" in shape
        # Pieces to drop, the head alone written: still one transaction.
        shape = statements(lambda: cp.save_state("t", AgentStateSnapshot(scratchpad={"n": 2})))
        assert (shape[0], shape[-1]) == ("BEGIN", "COMMIT")
        assert "DELETE" in shape
        # Another writer moved the head: the delta alone finds nothing to update (no BEGIN
        # before it), then the state is written whole in a transaction of its own.
        cp.save_state("u", AgentStateSnapshot(scratchpad={"n": 1}))
        other.save_state("u", AgentStateSnapshot(scratchpad={"n": 2}))
        shape = statements(lambda: cp.save_state("u", AgentStateSnapshot(scratchpad={"n": 3})))
        assert shape[:2] == ["UPDATE", "BEGIN"], shape
        assert shape[-1] == "COMMIT"
        assert "INSERT" in shape
        found = cp.load_checkpoint("u")
        assert found is not None
        assert (found.info.version, found.state) == (3, AgentStateSnapshot(scratchpad={"n": 3}))
        # The driver's transaction mode is the engine's again after each call.
        with engine.connect() as conn:
            assert conn.connection.driver_connection.isolation_level == ""  # type: ignore[union-attr]
    finally:
        engine.dispose()


@pytest.mark.parametrize("op", ["save", "save-pieces", "load"])
def test_a_sqlite_connection_closed_underneath_is_a_typed_error(tmp_path: Any, op: str) -> None:
    # The pool's DBAPI connection closed behind its back: the call fails with a typed error
    # (not the driver's ProgrammingError), the connection is discarded, and the next call
    # works on a new one.
    engine = sa.create_engine(f"sqlite:///{tmp_path}/closed.db", pool_size=1, max_overflow=0)
    opened: list[Any] = []
    sa.event.listen(
        engine.pool, "connect", lambda dbapi_connection, _: opened.append(dbapi_connection)
    )
    cp = SQLCheckpointer(engine, auto_migrate=True, namespace="x" + uuid.uuid4().hex[:16])
    first = AgentStateSnapshot(scratchpad={"n": 1})
    second = AgentStateSnapshot(files={"a.py": "x" * 40_000} if op == "save-pieces" else {})
    try:
        cp.save_state("t", first)
        opened[-1].close()
        call = (
            (lambda: cp.load_state("t")) if op == "load" else (lambda: cp.save_state("t", second))
        )
        with pytest.raises(BackendUnavailableError, match="closed database"):
            call()
        assert len(opened) == 1
        assert cp.load_state("t") == first
        assert len(opened) == 2  # a new connection
        assert cp.save_state("t", second).version == 2
        assert cp.load_state("t") == second
    finally:
        engine.dispose()

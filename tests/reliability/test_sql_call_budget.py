"""The SQL store's time budget: every call ends within ``call_timeout`` plus a margin.

Private PostgreSQL and MariaDB servers frozen with SIGSTOP (the kernel still accepts
connections and acknowledges bytes: only answers stop), a socket that accepts and never
answers, a row lock held by another connection, and an SQLite file another connection keeps
locked. Each call runs on a worker thread joined with a timeout, so a call that is not bounded
fails the test instead of hanging it; every server is resumed in ``finally``. After the server
answers again, the same checkpointer object works and nothing acknowledged was lost.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from agents_persistence import AgentStateSnapshot, open_async_checkpointer, open_checkpointer
from agents_persistence.errors import (
    BackendUnavailableError,
    CallTimeoutError,
    ConfigurationError,
)
from agents_persistence.models.sql import checkpoint_table
from agents_persistence.repositories._sql_deadline import WATCHDOG

from ..servers import Blackhole, MariaDBServer, PostgresServer
from ..support import AsyncAdapter
from .conftest import migrate, need, new_namespace

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from ..support import Portal

BUDGET = 1.5
"""The ``call_timeout`` of these tests (seconds)."""
MARGIN = 3.0
"""How much later than the budget an error may come (scheduling on a busy machine, a
whole-second connect). A call nothing bounds never ends: the margin only needs to tell
"ended soon after its budget" from that."""
DATABASE = "call_budget"
MODES = ["sync", "async"]

pytestmark = pytest.mark.timeout(120)


class Worker:
    """One call on a thread of its own: its outcome and how long it took."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.elapsed = -1.0
        self._fn = fn
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start = time.monotonic()
        try:
            self.value = self._fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.elapsed = time.monotonic() - start

    def timed_out(self, kind: type[BaseException] = CallTimeoutError) -> BaseException:
        """Wait for the call; assert it raised ``kind`` within the budget plus the margin."""
        self._thread.join(BUDGET + MARGIN + 10)
        assert not self._thread.is_alive(), "the call is still blocked: nothing bounds it"
        assert isinstance(self.error, kind), f"expected {kind.__name__}, got {self.error!r}"
        assert self.elapsed < BUDGET + MARGIN, f"took {self.elapsed:.2f} s"
        return self.error


def call(fn: Callable[[], Any]) -> Worker:
    return Worker(fn)


def open_cp(url: str, mode: str, portal: Portal, **options: Any) -> Any:
    """A checkpointer with the test's budget, both twins seen through the sync API."""
    options = {"namespace": new_namespace(), "call_timeout": BUDGET, **options}
    if mode == "sync":
        return open_checkpointer(url, **options)

    async def make() -> Any:
        return open_async_checkpointer(url, **options)

    return AsyncAdapter(portal, portal.call(make))


def snapshot(note: str) -> AgentStateSnapshot:
    return AgentStateSnapshot(scratchpad={"note": note})


@pytest.fixture(scope="module")
def pg_url(postgres_server: PostgresServer) -> str:
    url = postgres_server.create_database(DATABASE)
    migrate(url)
    return url


@pytest.fixture(scope="module")
def mariadb_url(mariadb_server: MariaDBServer) -> str:
    url = mariadb_server.create_database(DATABASE)
    migrate(url)
    return url


@pytest.fixture(params=["postgresql", "mariadb"])
def served(request: pytest.FixtureRequest) -> tuple[Any, str]:
    """A private server and the URL of its migrated database."""
    if request.param == "postgresql":
        need(PostgresServer)
        return request.getfixturevalue("postgres_server"), request.getfixturevalue("pg_url")
    need(MariaDBServer)
    return request.getfixturevalue("mariadb_server"), request.getfixturevalue("mariadb_url")


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """Checkpointers to close at the end, whatever happened."""
    opened: list[Any] = []
    yield opened
    for cp in opened:
        cp.close()


@pytest.mark.parametrize("mode", MODES)
def test_a_hung_server_ends_calls_in_flight_on_idle_and_on_new_connections(
    served: tuple[Any, str], mode: str, portal: Portal, closing: list[Any]
) -> None:
    server, url = served
    idle = open_cp(url, mode, portal)
    busy = open_cp(url, mode, portal)
    closing += [idle, busy]
    idle.save_state("t", snapshot("idle"))
    time.sleep(1.2)  # idle's pooled connection is now pinged at checkout (ping_idle_after=1)
    busy.save_state("t", snapshot("busy 1"))
    busy.save_state("u", snapshot("other thread"))
    engine = busy.engine if mode == "sync" else busy.inner.engine.sync_engine
    invalidated: list[object] = []
    sa.event.listen(engine.pool, "invalidate", lambda *args: invalidated.append(args))
    server.pause()
    try:
        # On a pooled connection just used: the statements themselves hang.
        in_flight = call(lambda: busy.save_state("t", snapshot("busy 2"), expected_version=1))
        # On a pooled connection idle for a while: its check at checkout hangs.
        pinged = call(lambda: idle.load_state("t"))
        in_flight.timed_out()
        assert invalidated  # the connection cut short never goes back to the pool
        pinged.timed_out()
        # busy's connection was cut: this call needs a new one from a server that never answers.
        call(lambda: busy.load_state("u")).timed_out()
    finally:
        server.resume()
    # The same objects work again; what was acknowledged is there.
    assert idle.load_state("t") == snapshot("idle")
    found = busy.load_checkpoint("t")
    assert found is not None
    # The save cut short may or may not have been applied: its outcome is unknown, not lost.
    assert (found.info.version, found.state) in ((1, snapshot("busy 1")), (2, snapshot("busy 2")))
    for _ in range(3):  # no connection went back to the pool half-read
        assert busy.load_state("u") == snapshot("other thread")
        assert idle.load_state("t") == snapshot("idle")
    assert busy.save_state("t", snapshot("busy 3")).version == found.info.version + 1


def _lock_row(url: str, namespace: str, thread_id: str) -> tuple[sa.Engine, sa.Connection]:
    """Another connection's transaction holding the thread's row lock."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    conn = engine.connect()
    table = checkpoint_table()
    conn.begin()
    query = sa.select(table.c.version).where(
        table.c.namespace == namespace, table.c.thread_id == thread_id
    )
    assert conn.execute(query.with_for_update()).scalar_one() == 1
    return engine, conn


@pytest.mark.parametrize("mode", MODES)
def test_a_call_waiting_on_a_row_lock_ends_when_the_server_then_hangs(
    served: tuple[Any, str], mode: str, portal: Portal, closing: list[Any]
) -> None:
    server, url = served
    cp = open_cp(url, mode, portal)
    closing.append(cp)
    cp.save_state("t", snapshot("first"))
    engine, holder = _lock_row(url, cp.namespace, "t")
    try:
        blocked = call(lambda: cp.save_state("t", snapshot("second")))
        time.sleep(0.3)  # the save now waits on the lock, server-side
        assert blocked.elapsed < 0  # still running
        server.pause()
        try:
            blocked.timed_out()
        finally:
            server.resume()
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    assert cp.load_state("t") in (snapshot("first"), snapshot("second"))
    assert cp.save_state("t", snapshot("third")).version >= 2


@pytest.mark.parametrize("mode", MODES)
def test_a_lock_held_too_long_ends_the_call_and_keeps_the_connection(
    served: tuple[Any, str], mode: str, portal: Portal, closing: list[Any]
) -> None:
    _, url = served
    cp = open_cp(url, mode, portal)
    closing.append(cp)
    cp.save_state("t", snapshot("first"))
    engine, holder = _lock_row(url, cp.namespace, "t")
    try:
        error = call(lambda: cp.save_state("t", snapshot("second"))).timed_out()
    finally:
        holder.rollback()
        holder.close()
        engine.dispose()
    # The server ended the wait (statement_timeout, innodb_lock_wait_timeout): the client did
    # not have to cut the connection.
    cause = error.__cause__
    assert isinstance(cause, sa.exc.DBAPIError), repr(cause)
    if url.startswith("postgresql"):
        assert cause.orig.sqlstate == "57014", repr(cause)  # query_canceled
    else:
        assert cause.orig.args[0] == 1205, repr(cause)  # lock wait timeout
    assert cp.load_state("t") == snapshot("first")
    assert cp.save_state("t", snapshot("third")).version == 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("scheme", ["postgresql", "mariadb"])
def test_a_server_that_never_answers_ends_the_call(scheme: str, mode: str, portal: Portal) -> None:
    with Blackhole() as hole:
        cp = open_cp(f"{scheme}://root@127.0.0.1:{hole.port}/nothing", mode, portal)
        try:
            load = call(lambda: cp.load_state("t"))
            save = call(lambda: cp.save_state("t", snapshot("x")))
            load.timed_out(BackendUnavailableError)
            save.timed_out(BackendUnavailableError)
        finally:
            cp.close()
        assert hole.accepted >= 1


@pytest.mark.parametrize("mode", MODES)
def test_sqlite_ends_a_save_waiting_on_another_writer(
    tmp_path: Path, mode: str, portal: Portal, closing: list[Any]
) -> None:
    url = f"sqlite:///{tmp_path / 'budget.db'}"
    migrate(url)
    cp = open_cp(url, mode, portal)
    closing.append(cp)
    cp.save_state("t", snapshot("first"))
    writer = sqlite3.connect(tmp_path / "budget.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        call(lambda: cp.save_state("t", snapshot("second"))).timed_out()
        assert cp.load_state("t") == snapshot("first")  # readers go on (WAL)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert cp.save_state("t", snapshot("third")).version == 2


def test_the_budget_sets_the_engines_own_bounds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bounds.db'}"
    with open_checkpointer(url, call_timeout=2.0, auto_migrate=True) as cp:
        engine = cp.engine
        assert engine.pool.timeout() == 2.0
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2000
    # An explicit longer wait is capped by the budget; a shorter one is kept.
    with open_checkpointer(url, call_timeout=2.0, pool_timeout=30, busy_timeout=0.5) as cp:
        assert cp.engine.pool.timeout() == 2.0
        with cp.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 500
    for wrong in (0, -1, float("nan"), float("inf"), "5", True):
        with pytest.raises(ConfigurationError, match="call_timeout"):
            open_checkpointer(url, call_timeout=wrong)


def test_the_server_side_bounds_follow_the_budget(served: tuple[Any, str]) -> None:
    _, url = served
    with open_checkpointer(url, call_timeout=BUDGET) as cp, cp.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
        else:
            lock_wait = conn.exec_driver_sql("SELECT @@innodb_lock_wait_timeout").scalar()
            assert lock_wait == 1


def test_the_watchdog_cuts_a_blocked_read_and_only_past_its_deadline() -> None:
    left, right = socket.socketpair()
    try:
        kept = WATCHDOG.arm(left.fileno(), time.monotonic() + 60)
        assert WATCHDOG.disarm(kept) is False
        right.sendall(b"x")
        assert left.recv(1) == b"x"  # disarmed in time: the socket still works
        entry = WATCHDOG.arm(left.fileno(), time.monotonic() + 0.2)
        start = time.monotonic()
        assert left.recv(1) == b""  # blocked, until the watchdog shuts the socket down
        assert time.monotonic() - start < 2
        assert WATCHDOG.disarm(entry) is True
        os.fstat(left.fileno())  # the socket's own descriptor is still open
    finally:
        left.close()
        right.close()

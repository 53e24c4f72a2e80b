"""How the SQL store executes: through SQLAlchemy's `Connection`, seen by event listeners, and
how engines made by ``from_url`` notice connections that went stale while idle.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from agents_persistence import (
    AgentStateSnapshot,
    AsyncSQLCheckpointer,
    BackendUnavailableError,
    SQLCheckpointer,
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

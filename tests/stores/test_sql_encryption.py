"""Encrypted rows of the SQL store, on SQLite, PostgreSQL and MariaDB (sync and async).

What the row holds (``state`` is ``{}``, the head sealed in ``sealed_state``, the manifest
redacted), what the table's own paths do under encryption (a delta whose base moved on, written
again whole and sealed with the same save's key; plaintext and encrypted saves alternating on
one thread; copies between an encrypted and a plaintext checkpointer), and a sealed save inside
the caller's transaction (``cp.using(session)``), which commits and rolls back with the app's
rows. The contract suite covers the rest (the ``postgresql+encrypted`` kit).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    AsyncSQLCheckpointer,
    DecryptionError,
    SQLCheckpointer,
)
from agents_persistence._codec import is_sealed
from agents_persistence.encryption import key_id_of
from agents_persistence.models.sql import checkpoint_table, pieces_table

from ..kits.encrypted import keyring

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..kits.sql import SQLKit

TABLE = checkpoint_table()
PIECES = pieces_table()
MARKER = "sealed-marker-5d1e"


@pytest.fixture
def namespace() -> str:
    return "e" + uuid.uuid4().hex[:16]


@pytest.fixture
def engine(sql_kit: SQLKit) -> Iterator[sa.Engine]:
    """A private engine on the kit's (migrated) database."""
    private = sa.create_engine(sql_kit.sync_url(), poolclass=sa.NullPool)
    sql_kit.tune(private)
    yield private
    private.dispose()


def _state(turns: int, note: str = "") -> AgentStateSnapshot:
    """A state split into pieces (transcript and a large file), holding `MARKER` everywhere."""
    return AgentStateSnapshot(
        messages=[
            AgentMessage.text("User", f"{MARKER} {n} {note} " + "x" * 300) for n in range(turns)
        ],
        files={f"/{MARKER}.md": MARKER + "y" * 20_000},
        scratchpad={MARKER: note},
    )


def _row(engine: sa.Engine, namespace: str, thread_id: str) -> dict[str, Any]:
    """The thread's row, ``state`` as JSON text on every dialect."""
    c = TABLE.c
    query = sa.select(
        c.state,
        c.sealed_state,
        c.manifest,
        c.manifest_token,
        c.version,
    ).where(c.namespace == namespace, c.thread_id == thread_id)
    with engine.connect() as conn:
        row = dict(conn.execute(query).mappings().one())
    if not isinstance(row["state"], str):  # decoded by the driver (PostgreSQL's JSONB)
        row["state"] = json.dumps(row["state"])
    return row


def _bodies(engine: sa.Engine, namespace: str, thread_id: str) -> list[bytes]:
    query = sa.select(PIECES.c.body).where(
        PIECES.c.namespace == namespace, PIECES.c.thread_id == thread_id
    )
    with engine.connect() as conn:
        return [bytes(body) for body in conn.execute(query).scalars()]


def _assert_sealed(engine: sa.Engine, namespace: str, thread_id: str) -> dict[str, Any]:
    row = _row(engine, namespace, thread_id)
    assert json.loads(row["state"]) == {}
    assert is_sealed(row["sealed_state"])
    bodies = _bodies(engine, namespace, thread_id)
    assert bodies
    assert all(is_sealed(body) for body in bodies)
    stored = [bytes(row["sealed_state"]), row["manifest"].encode(), *bodies]
    assert not any(MARKER.encode() in value for value in stored)
    return row


def test_an_encrypted_row_keeps_state_empty_and_its_head_sealed(
    engine: sa.Engine, namespace: str
) -> None:
    cp = SQLCheckpointer(engine, namespace=namespace, keys=keyring())
    state = _state(12)
    info = cp.save_state("t", state)

    row = _assert_sealed(engine, namespace, "t")
    assert row["manifest_token"] == json.loads(row["manifest"])["t"]
    assert key_id_of(bytes(row["sealed_state"])) == "k1"
    assert cp.load_state("t") == state
    plain = SQLCheckpointer(engine, namespace=namespace)
    assert [t.thread_id for t in plain.list_threads().threads] == ["t"]
    assert plain.list_threads().threads[0].version == info.version
    with pytest.raises(DecryptionError):
        plain.load_state("t")


def test_a_delta_whose_base_moved_on_is_written_whole_and_sealed(
    sql_kit: SQLKit, engine: sa.Engine, namespace: str
) -> None:
    first = SQLCheckpointer(engine, namespace=namespace, keys=keyring())
    second = SQLCheckpointer(engine, namespace=namespace, keys=keyring())
    first.save_state("t", _state(10, "v1"))
    second.save_state("t", _state(11, "v2"))  # the stored head moves past first's base
    # first still holds v1 as its base: its delta misses and the same save is written whole.
    grown = _state(12, "v3")
    assert first.save_state("t", grown).version == 3
    _assert_sealed(engine, namespace, "t")
    assert second.load_state("t") == grown
    with SQLCheckpointer.from_url(sql_kit.sync_url(), namespace=namespace, keys=keyring()) as cp:
        assert cp.encrypts
        assert cp.load_state("t") == grown
    # A delta that applies stays sealed too.
    grown = grown.model_copy(
        update={"messages": [*grown.messages, AgentMessage.text("Agent", MARKER)]}
    )
    assert second.save_state("t", _state(12, "v3")).version == 4
    assert second.save_state("t", grown, expected_version=4).version == 5
    _assert_sealed(engine, namespace, "t")
    assert first.load_state("t") == grown


def test_plaintext_and_encrypted_saves_alternate_on_one_thread(
    engine: sa.Engine, namespace: str
) -> None:
    sealed = SQLCheckpointer(engine, namespace=namespace, keys=keyring())
    plain = SQLCheckpointer(engine, namespace=namespace)
    sealed.save_state("t", _state(5, "a"))
    plain.save_state("t", _state(6, "b"))  # over a sealed row: written whole, in clear
    row = _row(engine, namespace, "t")
    assert row["sealed_state"] is None
    assert json.loads(row["state"]) == {"todos": []}  # the head, in clear
    assert MARKER in row["manifest"]  # the whole manifest: file names included
    assert sealed.load_state("t") == _state(6, "b")  # plaintext loads with keys
    sealed.save_state("t", _state(7, "c"))  # a delta: the head sealed, unchanged pieces not
    row = _row(engine, namespace, "t")
    assert is_sealed(row["sealed_state"])
    assert json.loads(row["state"]) == {}
    assert sealed.refresh_thread("t") == "rewritten"  # seals what was left in clear
    _assert_sealed(engine, namespace, "t")
    assert sealed.refresh_thread("t") == "current"
    with pytest.raises(DecryptionError):
        plain.load_state("t")
    assert sealed.load_state("t") == _state(7, "c")


def test_copies_between_encrypted_and_plaintext_checkpointers_keep_versions(
    engine: sa.Engine, namespace: str
) -> None:
    sealed = SQLCheckpointer(engine, namespace=namespace, keys=keyring())
    state = _state(8)
    sealed.save_state("t", state)
    source = sealed.load_checkpoint("t")
    assert source is not None

    clear = SQLCheckpointer(engine, namespace=namespace + "c")
    clear.restore_checkpoint("t", source.state, source.info, expected_version=0)
    assert _row(engine, namespace + "c", "t")["sealed_state"] is None
    copied = clear.load_checkpoint("t")
    assert copied is not None
    assert (copied.state, copied.info.version) == (state, source.info.version)

    again = SQLCheckpointer(engine, namespace=namespace + "e", keys=keyring("k2"))
    again.restore_checkpoint("t", copied.state, copied.info, expected_version=0)
    row = _assert_sealed(engine, namespace + "e", "t")
    assert key_id_of(bytes(row["sealed_state"])) == "k2"
    back = again.load_checkpoint("t")
    assert back is not None
    assert (back.state, back.info.version) == (state, source.info.version)


def test_the_async_twin_seals_and_opens(sql_kit: SQLKit, engine: sa.Engine, namespace: str) -> None:
    async def run() -> None:
        async_engine = create_async_engine(sql_kit.async_url(), poolclass=sa.NullPool)
        try:
            cp = AsyncSQLCheckpointer(async_engine, namespace=namespace, keys=keyring())
            await cp.save_state("t", _state(10, "a"))
            await cp.save_state("t", _state(11, "a"), expected_version=1)
            assert await cp.load_state("t") == _state(11, "a")
            async with AsyncSQLCheckpointer.from_url(
                sql_kit.async_url(), namespace=namespace, keys=keyring()
            ) as reader:
                assert reader.encrypts
                assert await reader.load_state("t") == _state(11, "a")
        finally:
            await async_engine.dispose()

    asyncio.run(run())
    _assert_sealed(engine, namespace, "t")


# --- a sealed save in the caller's transaction -----------------------------------------------


@pytest.fixture
def app_table(sql_kit: SQLKit) -> Iterator[sa.Table]:
    table = sa.Table(
        "app_" + uuid.uuid4().hex[:12],
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    )
    table.create(sql_kit.engine)
    yield table
    table.drop(sql_kit.engine)


def _ids(engine: sa.Engine, table: sa.Table) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(table.c.id)).scalars())


def test_a_sealed_save_commits_and_rolls_back_with_the_apps_rows(
    engine: sa.Engine, namespace: str, app_table: sa.Table
) -> None:
    cp = SQLCheckpointer(engine, namespace=namespace, keys=keyring())
    with Session(engine) as session, session.begin():
        session.execute(app_table.insert().values(id=1))
        cp.using(session).save_state("t", _state(6, "kept"))
        assert cp.using(session).load_state("t") == _state(6, "kept")  # sees its own write
    assert _ids(engine, app_table) == [1]
    _assert_sealed(engine, namespace, "t")

    with Session(engine) as session:
        session.execute(app_table.insert().values(id=2))
        bound = cp.using(session)
        bound.save_state("t", _state(7, "undone"), expected_version=1)
        bound.save_state("u", _state(3, "undone"))
        session.rollback()
    assert _ids(engine, app_table) == [1]
    assert cp.load_state("t") == _state(6, "kept")
    assert cp.load_state("u") is None
    _assert_sealed(engine, namespace, "t")


def test_an_async_sealed_save_commits_and_rolls_back_with_the_apps_rows(
    sql_kit: SQLKit, engine: sa.Engine, namespace: str, app_table: sa.Table
) -> None:
    async def run() -> None:
        async_engine = create_async_engine(sql_kit.async_url(), poolclass=sa.NullPool)
        try:
            cp = AsyncSQLCheckpointer(async_engine, namespace=namespace, keys=keyring())
            async with AsyncSession(async_engine) as session, session.begin():
                await session.execute(app_table.insert().values(id=1))
                await cp.using(session).save_state("t", _state(6, "kept"))
            async with AsyncSession(async_engine) as session:
                await session.execute(app_table.insert().values(id=2))
                await cp.using(session).save_state("t", _state(7, "no"), expected_version=1)
                await session.rollback()
            assert await cp.load_state("t") == _state(6, "kept")
        finally:
            await async_engine.dispose()

    asyncio.run(run())
    assert _ids(engine, app_table) == [1]
    _assert_sealed(engine, namespace, "t")

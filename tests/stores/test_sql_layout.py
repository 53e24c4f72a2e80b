"""The SQL store's layout: a head row plus pieces, so that a save sends what changed.

States below `SMALL_STATE_BYTES` are one head without pieces: the states here that must have
pieces carry a large file.

On SQLite, PostgreSQL and MariaDB (the kits without listeners; each test adds its own to a
private engine): bytes sent per save, edits and truncations, two checkpointers with their own
caches on one thread, a save interrupted between the head and its pieces, rows written whole
before the layout existed, deletes and purges that take the pieces along, and a 10 MB state.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    AsyncSQLCheckpointer,
    SQLCheckpointer,
    TodoItem,
)
from agents_persistence._layout import SMALL_STATE_BYTES, Manifest
from agents_persistence.models.sql import checkpoint_table, pieces_table

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..kits.sql import SQLKit

TABLE = checkpoint_table()
PIECES = pieces_table()
LARGE = SMALL_STATE_BYTES + 2000
"""A file this long makes any state large enough to be split."""


@pytest.fixture
def engine(sql_kit: SQLKit) -> Iterator[sa.Engine]:
    """A private engine on the kit's (migrated) database, for listeners of this test only."""
    private = sa.create_engine(sql_kit.sync_url(), poolclass=sa.NullPool)
    sql_kit.tune(private)
    yield private
    private.dispose()


class Sent:
    """Bytes of the statement parameters sent to the database, per call."""

    def __init__(self, engine: sa.Engine) -> None:
        self.total = 0
        sa.event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, conn: Any, cursor: Any, statement: str, params: Any, *rest: Any) -> None:
        rows = params if isinstance(params, list) else [params]
        for row in rows:
            values = row.values() if isinstance(row, dict) else row or ()
            self.total += sum(_length(value) for value in values)

    def during(self, call: Any) -> int:
        before = self.total
        call()
        return self.total - before


def _length(value: Any) -> int:
    if isinstance(value, str | bytes | bytearray | memoryview):
        return len(value)
    if isinstance(value, list | tuple):
        return sum(_length(item) for item in value)
    wrapped = getattr(value, "obj", None)  # psycopg's Binary wraps the bytes it sends
    return 8 if wrapped is None else _length(wrapped)


def _message(n: int, size: int = 200) -> AgentMessage:
    return AgentMessage.text("User" if n % 2 else "Agent", f"turn {n}: " + "x" * size)


def _noise(size: int, seed: int = 12) -> str:
    """Random base64 text of ``size`` characters: it compresses poorly, like real data."""
    return base64.b64encode(random.Random(seed).randbytes(size * 3 // 4)).decode()


def _namespace() -> str:
    return "l" + uuid.uuid4().hex[:16]


def _pieces(engine: sa.Engine, namespace: str) -> list[str]:
    query = sa.select(PIECES.c.piece).where(PIECES.c.namespace == namespace)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def test_late_saves_of_a_long_conversation_send_what_changed(engine: sa.Engine) -> None:
    cp = SQLCheckpointer(engine, namespace=_namespace())
    sent = Sent(engine)
    state = AgentStateSnapshot(files={"notes.md": _noise(5000)}, scratchpad={"step": 0})
    costs = []
    for turn in range(100):
        state = state.model_copy(
            update={
                "messages": [*state.messages, _message(turn)],
                "scratchpad": {"step": turn},
                "todos": [TodoItem(content=f"todo {turn}", status="pending")],
            }
        )
        costs.append(sent.during(lambda s=state: cp.save_state("t", s)))
    size = len(state.model_dump_json())
    assert size > 25_000
    assert costs[0] > 5000  # the first save sends the whole state (one head: it is small)
    # Late saves send the new message, the head and its manifest: far less than the state.
    assert max(costs[-10:]) < size / 5, (costs[-10:], size)
    fresh = SQLCheckpointer(engine, namespace=cp.namespace)
    assert fresh.load_state("t") == state


def test_edits_truncations_and_removals_load_what_was_saved(engine: sa.Engine) -> None:
    namespace = _namespace()
    cp = SQLCheckpointer(engine, namespace=namespace)
    big = {f"f{n}.txt": f"{n}" * 3000 for n in range(4)}
    messages = [_message(n) for n in range(30)]
    edited = [*messages[:5], _message(999), *messages[6:]]
    states = [
        AgentStateSnapshot(messages=messages, files=big, scratchpad={"a": 1, "b": "x" * 2000}),
        AgentStateSnapshot(messages=edited, files=big, scratchpad={"a": 1, "b": "x" * 2000}),
        AgentStateSnapshot(messages=edited[:10], files=big, scratchpad={"a": 2}),
        AgentStateSnapshot(
            messages=[*edited[:10], _message(31)],
            files={k: v for k, v in big.items() if k != "f1.txt"},
        ),
        AgentStateSnapshot(files={"f0.txt": "changed", "f2.txt": big["f2.txt"]}),
        AgentStateSnapshot(messages=[_message(1)]),
        AgentStateSnapshot(),
    ]
    for state in states:
        cp.save_state("t", state)
        assert cp.load_state("t") == state
        assert SQLCheckpointer(engine, namespace=namespace).load_state("t") == state
    # Nothing of the earlier versions is left behind.
    assert _pieces(engine, namespace) == []


def test_two_checkpointers_alternating_on_one_thread_never_mix_states(engine: sa.Engine) -> None:
    namespace = _namespace()
    first = SQLCheckpointer(engine, namespace=namespace)
    second = SQLCheckpointer(engine, namespace=namespace)
    messages: list[AgentMessage] = []
    for turn in range(12):
        writer = first if turn % 2 else second
        messages.append(_message(turn))
        # Each writer's cache holds its own last save: the stored head moved past it.
        state = AgentStateSnapshot(
            messages=list(messages),
            files={"f": f"{turn}" * 1500, "large": _noise(LARGE, turn // 3)},
            scratchpad={"turn": turn},
        )
        info = writer.save_state("t", state)
        assert info.version == turn + 1
        for reader in (first, second):
            assert reader.load_state("t") == state
    # A save based on a version read before another writer's save is whole, and exact.
    stale = first.load_state("t")
    assert stale is not None
    second.save_state("t", stale.model_copy(update={"messages": messages[:3]}))
    first.save_state("t", stale)
    assert second.load_state("t") == stale


def test_a_save_interrupted_after_its_head_leaves_the_previous_version(
    engine: sa.Engine,
) -> None:
    namespace = _namespace()
    cp = SQLCheckpointer(engine, namespace=namespace)
    before = AgentStateSnapshot(messages=[_message(1)], files={"a": _noise(LARGE, 1)})
    cp.save_state("t", before)
    after = AgentStateSnapshot(messages=[_message(1), _message(2)], files={"a": _noise(LARGE, 2)})

    def crash(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        # The statement that adds the pieces (after the head on SQLite and MariaDB; part of
        # the head's statement on PostgreSQL).
        if "INSERT INTO agent_checkpoints_pieces" in statement:
            raise RuntimeError("the process died here")

    sa.event.listen(engine, "before_cursor_execute", crash)
    for _ in range(2):  # a delta, then (the base forgotten) a full write
        with pytest.raises(RuntimeError, match="died"):
            cp.save_state("t", after)
        checkpoint = SQLCheckpointer(engine, namespace=namespace).load_checkpoint("t")
        assert checkpoint is not None
        assert checkpoint.state == before
        assert checkpoint.info.version == 1
    sa.event.remove(engine, "before_cursor_execute", crash)
    assert cp.save_state("t", after).version == 2
    assert SQLCheckpointer(engine, namespace=namespace).load_state("t") == after


def _insert_whole(engine: sa.Engine, namespace: str, thread_id: str, state: Any) -> None:
    """A row as the store wrote it before the layout: the whole state in ``state``."""
    now = datetime.now(UTC)
    text = state.model_dump_json()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(TABLE).values(
                namespace=namespace,
                thread_id=thread_id,
                state=json.loads(text),
                state_bytes=len(text.encode()),
                version=3,
                created_at=now,
                updated_at=now,
                expires_at=None,
            )
        )


def test_a_row_stored_whole_loads_and_its_next_save_converts_it(engine: sa.Engine) -> None:
    namespace = _namespace()
    whole = AgentStateSnapshot(
        messages=[_message(n) for n in range(5)],
        files={"a.txt": _noise(LARGE)},
        scratchpad={"k": 1},
    )
    _insert_whole(engine, namespace, "t", whole)
    cp = SQLCheckpointer(engine, namespace=namespace)
    checkpoint = cp.load_checkpoint("t")
    assert checkpoint is not None
    assert checkpoint.state == whole
    assert checkpoint.info.version == 3

    grown = whole.model_copy(update={"messages": [*whole.messages, _message(5)]})
    assert cp.save_state("t", grown, expected_version=3).version == 4
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(TABLE.c.manifest, TABLE.c.manifest_token).where(
                TABLE.c.namespace == namespace
            )
        ).one()
    assert row.manifest is not None
    assert row.manifest_token is not None
    assert _pieces(engine, namespace)
    assert SQLCheckpointer(engine, namespace=namespace).load_state("t") == grown


def test_the_head_column_holds_what_queries_on_state_see(engine: sa.Engine) -> None:
    namespace = _namespace()
    cp = SQLCheckpointer(engine, namespace=namespace)
    state = AgentStateSnapshot.model_validate(
        {
            "todos": [{"content": "ship it", "status": "in_progress"}],
            "messages": [_message(1).model_dump(mode="json")],
            "files": {"a": "b", "large": _noise(LARGE)},
            "scratchpad": {"k": "v"},
            "custom": {"kept": True},
        }
    )
    cp.save_state("t", state)
    with engine.connect() as conn:
        head = conn.execute(sa.select(TABLE.c.state).where(TABLE.c.namespace == namespace))
        stored = head.scalar_one()
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert stored["todos"] == [{"content": "ship it", "status": "in_progress"}]
    assert stored["custom"] == {"kept": True}
    assert not {"messages", "files", "scratchpad"} & set(stored)


def test_delete_and_purge_remove_the_pieces(engine: sa.Engine) -> None:
    namespace = _namespace()
    moment = [datetime(2026, 1, 1, tzinfo=UTC)]
    cp = SQLCheckpointer(engine, namespace=namespace, ttl=60, clock=lambda: moment[0])
    state = AgentStateSnapshot(messages=[_message(1)], files={"a": _noise(LARGE)})
    for thread in ("gone", "expired", "kept"):
        cp.save_state(thread, state)
    per_thread = len(_pieces(engine, namespace)) // 3
    assert per_thread == 2  # the transcript and the large file
    assert cp.delete_thread("gone")
    assert len(_pieces(engine, namespace)) == 2 * per_thread
    moment[0] += timedelta(seconds=30)
    cp.save_state("kept", state)
    moment[0] += timedelta(seconds=31)
    assert cp.purge_expired() == 1
    assert len(_pieces(engine, namespace)) == per_thread
    assert cp.load_state("kept") == state


def test_a_10_mb_state_saves_and_loads(engine: sa.Engine) -> None:
    state = AgentStateSnapshot(
        messages=[AgentMessage.text("Tool", _noise(500_000, n)) for n in range(10)],
        files={f"blob{n}.b64": _noise(1_000_000, 100 + n) for n in range(5)},
    )
    assert len(state.model_dump_json()) > 10_000_000
    namespace = _namespace()
    cp = SQLCheckpointer(engine, namespace=namespace, call_timeout=60)
    cp.save_state("big", state)
    assert SQLCheckpointer(engine, namespace=namespace, call_timeout=60).load_state("big") == state
    grown = state.model_copy(update={"messages": [*state.messages, _message(1)]})
    sent = Sent(engine)
    assert sent.during(lambda: cp.save_state("big", grown)) < 50_000  # a delta
    assert cp.load_state("big") == grown


def test_a_rolled_back_unit_of_work_never_serves_as_a_base(engine: sa.Engine) -> None:
    namespace = _namespace()
    cp = SQLCheckpointer(engine, namespace=namespace)
    first = AgentStateSnapshot(messages=[_message(1)], files={"a": _noise(LARGE)})
    cp.save_state("t", first)
    undone = first.model_copy(update={"messages": [_message(1), _message(2)]})
    with engine.connect() as conn:
        with conn.begin() as transaction:
            cp.using(conn).save_state("t", undone)
            transaction.rollback()
        # The checkpointer remembers the undone version's manifest; the stored head moved
        # back, so this save is written whole, in the caller's transaction again.
        after = first.model_copy(update={"messages": [_message(1), _message(3)]})
        with conn.begin():
            assert cp.using(conn).save_state("t", after).version == 2
    assert SQLCheckpointer(engine, namespace=namespace).load_state("t") == after


def test_the_async_twin_saves_deltas_and_loads_them(sql_kit: SQLKit) -> None:
    async def run() -> list[bool]:
        async_engine = create_async_engine(sql_kit.async_url(), poolclass=sa.NullPool)
        try:
            cp = AsyncSQLCheckpointer(async_engine, namespace=_namespace())
            loaded = []
            state = AgentStateSnapshot(files={"big": _noise(LARGE)})
            for turn in range(5):
                state = state.model_copy(
                    update={
                        "messages": [*state.messages, _message(turn)],
                        "files": {"big": _noise(LARGE, turn // 2)},
                    }
                )
                await cp.save_state("t", state)
                loaded.append(await cp.load_state("t") == state)
            fresh = AsyncSQLCheckpointer(async_engine, namespace=cp.namespace)
            loaded.append(await fresh.load_state("t") == state)
            return loaded
        finally:
            await async_engine.dispose()

    assert asyncio.run(run()) == [True] * 6


class Statements:
    """The SQL of every statement the engine sends, in order."""

    def __init__(self, engine: sa.Engine) -> None:
        self.sent: list[str] = []
        sa.event.listen(engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        self.sent.append(statement)

    def during(self, call: Any) -> list[str]:
        start = len(self.sent)
        call()
        return self.sent[start:]


def _uses_pieces(sql: str) -> bool:
    return PIECES.name in sql


def test_a_small_state_loads_and_saves_without_touching_the_pieces(engine: sa.Engine) -> None:
    namespace = _namespace()
    cp = SQLCheckpointer(engine, namespace=namespace)
    state = AgentStateSnapshot(messages=[_message(1)], scratchpad={"step": 1})
    cp.save_state("t", state)  # the first save is whole: it clears any piece of the thread
    statements = Statements(engine)
    grown = state.model_copy(update={"messages": [_message(1), _message(2)]})
    saved = statements.during(lambda: cp.save_state("t", grown))  # a delta: the head alone
    assert saved
    assert not any(_uses_pieces(sql) for sql in saved), saved
    fresh = SQLCheckpointer(engine, namespace=namespace)
    fresh.load_state("other")  # its first call checks the schema
    for reader in (cp, fresh):
        loaded: list[Any] = []
        read = statements.during(lambda r=reader, out=loaded: out.append(r.load_state("t")))
        assert loaded == [grown]
        assert len(read) == 1, read  # the head alone, one statement
        assert not _uses_pieces(read[0])


def test_a_state_with_pieces_loads_head_and_pieces_in_one_statement(engine: sa.Engine) -> None:
    namespace = _namespace()
    cp = SQLCheckpointer(engine, namespace=namespace)
    state = AgentStateSnapshot(messages=[_message(1)], files={"a": _noise(LARGE)})
    cp.save_state("t", state)
    fresh = SQLCheckpointer(engine, namespace=namespace)
    fresh.load_state("other")  # its first call checks the schema
    statements = Statements(engine)
    loaded: list[Any] = []
    # A checkpointer that has not seen the thread reads the head, then (its manifest names
    # pieces) the head and its pieces together.
    read = statements.during(lambda: loaded.append(fresh.load_state("t")))
    assert len(read) == 2, read
    assert not _uses_pieces(read[0])
    assert _uses_pieces(read[1])
    # Once it has (and the writer, from its save), that one statement at once.
    for reader in (fresh, cp):
        read = statements.during(lambda r=reader, out=loaded: out.append(r.load_state("t")))
        assert len(read) == 1, read
        assert _uses_pieces(read[0])
    assert loaded == [state] * 3
    # Stored as one head (a writer with no base writes a small state whole), the state is
    # read head first again after its next load.
    small = AgentStateSnapshot(messages=[_message(2)])
    SQLCheckpointer(engine, namespace=namespace).save_state("t", small)
    assert fresh.load_state("t") == small  # the one statement, as the state had pieces
    read = statements.during(lambda: loaded.append(fresh.load_state("t")))
    assert loaded[-1] == small
    assert len(read) == 1, read
    assert not _uses_pieces(read[0])


def test_a_save_between_the_head_and_the_pieces_read_never_mixes_versions(
    engine: sa.Engine, sql_kit: SQLKit
) -> None:
    namespace = _namespace()
    before = AgentStateSnapshot(messages=[_message(1)], files={"a": _noise(LARGE, 1)})
    after = AgentStateSnapshot(messages=[_message(2)], files={"b": _noise(LARGE, 2)})
    SQLCheckpointer(engine, namespace=namespace).save_state("t", before)
    other = sa.create_engine(sql_kit.sync_url(), poolclass=sa.NullPool)
    sql_kit.tune(other)
    # A writer with no base: its save is whole and removes every piece of `before`.
    writer = SQLCheckpointer(other, namespace=namespace)
    saved: list[int] = []

    def save_in_between(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if _uses_pieces(statement) and not saved:
            saved.append(writer.save_state("t", after).version)

    reader = SQLCheckpointer(engine, namespace=namespace)
    reader.load_state("other")  # its first call checks the schema
    sa.event.listen(engine, "before_cursor_execute", save_in_between)
    try:
        loaded = reader.load_state("t")
    finally:
        sa.event.remove(engine, "before_cursor_execute", save_in_between)
        other.dispose()
    assert saved == [2]
    # The version the second statement's snapshot holds, whole: never the first head with
    # the second version's pieces (or none).
    assert loaded in (before, after)
    assert SQLCheckpointer(engine, namespace=namespace).load_state("t") == after


@pytest.mark.parametrize("token", ["0123456789ab", 'a"b\\c', "é1", ""])
@pytest.mark.parametrize("transcript", [False, True])
def test_the_manifest_of_a_one_head_state_is_the_encoders_json(
    token: str, transcript: bool
) -> None:
    manifest = Manifest(token, transcript=transcript)
    expected = {"f": 1, "t": token, "n": 0, "l": 0, "d": "", "s": [], "m": transcript, "p": {}}
    text = manifest.to_json()
    assert text == json.dumps(expected, separators=(",", ":"), ensure_ascii=False)
    assert Manifest.from_json("t", text) == manifest

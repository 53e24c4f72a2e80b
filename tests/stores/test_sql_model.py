"""The public SQL model: docs/sqlalchemy.md's examples run as written on every dialect, and on
PostgreSQL the partial index serves the JSONB "pending interrupts" query.
"""

from __future__ import annotations

import contextlib
import io
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa

from agents_persistence import AgentStateSnapshot
from agents_persistence.sql import AgentCheckpoint, has_state_key

from ..conftest import _ready
from ..kits.sql import PLAIN_KITS, PostgreSQLKit, SQLKit

if TYPE_CHECKING:
    from collections.abc import Iterator

DOC = Path(__file__).resolve().parents[2] / "docs" / "sqlalchemy.md"
DOC_NAMESPACE = "support-bot"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def doc_blocks() -> list[tuple[str, str]]:
    """(heading, code) of every Python block of the doc, in order."""
    text = DOC.read_text()
    blocks = []
    for match in _BLOCK.finditer(text):
        headings = re.findall(r"^#+ (.+)$", text[: match.start()], re.MULTILINE)
        blocks.append((headings[-1], match.group(1)))
    return blocks


def _clean(kit: SQLKit) -> None:
    with kit.engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS conversations"))
        conn.execute(sa.delete(AgentCheckpoint).where(AgentCheckpoint.namespace == DOC_NAMESPACE))


@pytest.fixture
def doc_database(
    sql_kit: SQLKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SQLKit]:
    _clean(sql_kit)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", sql_kit.sync_url())
    monkeypatch.setenv("ASYNC_DATABASE_URL", sql_kit.async_url())
    monkeypatch.setenv("SQLITE_URL", f"sqlite:///{tmp_path / 'other.sqlite3'}")
    yield sql_kit
    _clean(sql_kit)


def test_doc_examples_run_as_written(doc_database: SQLKit) -> None:
    blocks = doc_blocks()
    assert len(blocks) == 5
    namespace: dict[str, Any] = {"__name__": "doc_example"}
    out = io.StringIO()
    ran = []
    for heading, code in blocks:
        if heading.startswith("PostgreSQL") and doc_database.name != "postgresql":
            continue
        with contextlib.redirect_stdout(out):
            # As a reader runs it: without this module's ``from __future__ import annotations``.
            exec(compile(code, f"{DOC.name}: {heading}", "exec", dont_inherit=True), namespace)
        ran.append(heading)
    namespace["engine"].dispose()
    printed = out.getvalue().splitlines()
    expected = ["2", "['thread-1']"]
    if doc_database.name == "postgresql":
        expected.append("[]")
    assert printed == expected, ran


def test_the_interrupts_index_serves_the_jsonb_query() -> None:
    kit = _ready(next(k for k in PLAIN_KITS if isinstance(k, PostgreSQLKit)))
    namespace = "m" + uuid.uuid4().hex[:16]
    now = datetime.now(UTC)
    quiet = AgentStateSnapshot().model_dump_json()
    waiting_state = (
        '{"todos":[],"files":{},"scratchpad":{},"pending_interrupts":[{"type":"human_in_loop",'
        '"tool_name":"t","tool_args":{},"created_at":"2026-11-28T00:00:00Z","call_id":"c"}]}'
    )
    rows = [
        {
            "namespace": namespace,
            "thread_id": f"t{i:05d}",
            "state": waiting_state if i % 500 == 0 else quiet,
            "state_bytes": 10,
            "version": 1,
            "created_at": now,
            "updated_at": now - timedelta(seconds=i),
            "expires_at": None,
        }
        for i in range(5000)
    ]
    insert = sa.insert(AgentCheckpoint).values(
        state=sa.cast(sa.bindparam("state", type_=sa.Text()), AgentCheckpoint.state.type)
    )
    waiting = (
        sa.select(AgentCheckpoint.thread_id)
        .where(
            AgentCheckpoint.namespace == namespace,
            has_state_key(AgentCheckpoint.state, "pending_interrupts"),
        )
        .order_by(AgentCheckpoint.updated_at.desc())
        .limit(50)
    )
    try:
        with kit.engine.begin() as conn:
            conn.execute(insert, rows)
            conn.exec_driver_sql("ANALYZE agent_checkpoints")
        with kit.engine.connect() as conn:
            found = conn.scalars(waiting).all()
            sql = str(waiting.compile(conn, compile_kwargs={"literal_binds": True}))
            plan = "\n".join(conn.exec_driver_sql(f"EXPLAIN {sql}").scalars())
    finally:
        with kit.engine.begin() as conn:
            conn.execute(sa.delete(AgentCheckpoint).where(AgentCheckpoint.namespace == namespace))
    assert found == [f"t{i:05d}" for i in range(0, 5000, 500)]
    assert "ix_agent_checkpoints_interrupts" in plan, plan

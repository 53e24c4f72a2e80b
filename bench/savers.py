"""Section 6: our LangGraph savers against LangGraph's, one operation at a time.

A Deep Agents-like run of ``STEPS`` steps on one thread, as LangGraph's Pregel loop drives a
checkpointer: each step reads the latest checkpoint (``get_tuple``), stores the next one
(``put``, with ``new_versions`` naming only the channels that changed) and stores the next
task's pending writes against it (``put_writes``). The channels are those of a deep agent:
``messages`` (LangChain messages, two more each step: an AI message with a tool call and the
tool's reply; a user message every 10th step), ``todos`` (8 items, one status changes every
3rd step) and ``files`` (deepagents' file records, one of 5 files of about 2 KB rewritten every
5th step). The pending writes are the tool's message, and the file it wrote on file steps.

Ours (`SQLCheckpointSaver` with ``keep_last=10``; the same with ``exclusive_writes``; and
without retention, to show what retention costs) and
LangGraph's (`SqliteSaver`, `PostgresSaver`, no retention: they have none) run on the same
database, one run after the other in rotating order; run 0 warms up. Each operation's p50
and p99 are over every measured step of every run.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
import uuid
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from bench.common import _text, p50, p99, settle

if TYPE_CHECKING:
    from bench.common import Settings
    from bench.stores import Target

STEPS = 100
KEEP_LAST = 10
OPS = ("get_tuple", "put", "put_writes", "step")
FILES = [f"/notes/file_{i}.md" for i in range(5)]
STATUSES = ("pending", "in_progress", "completed")


# --- the workload -------------------------------------------------------------------------------


def _file(text: str) -> dict[str, Any]:
    """A file as deepagents' state keeps it."""
    return {
        "content": text.splitlines() or [""],
        "created_at": "2026-11-01T00:00:00+00:00",
        "modified_at": "2026-11-01T00:00:00+00:00",
    }


def _initial_values() -> dict[str, Any]:
    from langchain_core.messages import HumanMessage

    rng = random.Random(0)
    return {
        "messages": [HumanMessage(_text(rng, 300), id=str(uuid.UUID(int=0)))],
        "todos": [{"content": _text(rng, 40), "status": "pending"} for _ in range(8)],
        "files": {name: _file(_text(rng, 2000)) for name in FILES},
    }


def _step_messages(step: int) -> tuple[list[Any], Any]:
    """The messages step ``step`` adds, and the tool message its next task writes."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    rng = random.Random(step)
    call_id = f"call_{step}"
    name = "write_file" if step % 5 == 0 else "read_file"
    added: list[Any] = []
    if step % 10 == 0:
        added.append(HumanMessage(_text(rng, 200), id=f"human-{step}"))
    added.append(
        AIMessage(
            _text(rng, 300),
            id=f"ai-{step}",
            tool_calls=[{"name": name, "args": {"file_path": FILES[step % 5]}, "id": call_id}],
        )
    )
    added.append(ToolMessage(_text(rng, 300), tool_call_id=call_id, id=f"tool-{step}"))
    pending = ToolMessage(_text(rng, 200), tool_call_id=f"{call_id}-next", id=f"next-{step}")
    return added, pending


def _next(saver: Any, found: Any, config: dict[str, Any], step: int, run_id: str) -> tuple:
    """``put`` arguments and the pending writes of step ``step`` after ``found``."""
    from langgraph.checkpoint.base import create_checkpoint, empty_checkpoint

    if found is None:
        previous, values, parent = empty_checkpoint(), _initial_values(), config
        changed = {"messages", "todos", "files"}
    else:
        previous, parent = found.checkpoint, found.config
        values = dict(previous["channel_values"])
        changed = {"messages"}
    added, pending = _step_messages(step)
    values["messages"] = [*values["messages"], *added]
    writes: list[tuple[str, Any]] = [("messages", [pending])]
    if step % 3 == 0:
        todos = [dict(todo) for todo in values["todos"]]
        todos[step % 8]["status"] = STATUSES[step % 3]
        values["todos"] = todos
        changed.add("todos")
    if step % 5 == 0:
        rewritten = {FILES[step % 5]: _file(_text(random.Random(-step), 2000))}
        values["files"] = {**values["files"], **rewritten}
        changed.add("files")
        writes.append(("files", rewritten))
    versions = dict(previous["channel_versions"])
    new_versions = {ch: saver.get_next_version(versions.get(ch), None) for ch in sorted(changed)}
    versions.update(new_versions)
    checkpoint = create_checkpoint(previous, None, step)
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = versions
    metadata = {"source": "loop", "step": step, "parents": {}, "run_id": run_id}
    return (parent, checkpoint, metadata, new_versions), writes


def run_steps(saver: Any, thread_id: str, steps: int = STEPS) -> dict[str, list[float]]:
    """One run: ``steps`` steps on a new thread; milliseconds of each call, by operation."""
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    run_id = str(uuid.uuid4())
    samples: dict[str, list[float]] = {op: [] for op in OPS}
    clock = time.perf_counter_ns
    for step in range(steps):
        t0 = clock()
        found = saver.get_tuple(config)
        t1 = clock()
        arguments, writes = _next(saver, found, config, step, run_id)
        t2 = clock()
        stored = saver.put(*arguments)
        t3 = clock()
        saver.put_writes(stored, writes, f"task-{step}")
        t4 = clock()
        samples["get_tuple"].append((t1 - t0) / 1e6)
        samples["put"].append((t3 - t2) / 1e6)
        samples["put_writes"].append((t4 - t3) / 1e6)
        samples["step"].append(((t1 - t0) + (t4 - t2)) / 1e6)
    return samples


# --- bytes stored -------------------------------------------------------------------------------

# Value columns only (keys left out), per table: ours, then LangGraph's.
_OURS_COLUMNS = {
    "agent_checkpoints_lg_checkpoints": ("checkpoint", "metadata"),
    "agent_checkpoints_lg_blobs": ("blob",),
    "agent_checkpoints_lg_writes": ("blob",),
}
_SQLITE_COLUMNS = {"checkpoints": ("checkpoint", "metadata"), "writes": ("value",)}
_PG_COLUMNS = {
    "checkpoints": ("checkpoint", "metadata"),
    "checkpoint_blobs": ("blob",),
    "checkpoint_writes": ("blob",),
}


def _bytes(execute: Any, tables: dict[str, tuple[str, ...]], size: str, thread_id: str) -> int:
    total = 0
    for table, columns in tables.items():
        summed = " + ".join(f"coalesce({size}({column}), 0)" for column in columns)
        total += int(execute(f"SELECT coalesce(sum({summed}), 0) FROM {table}", thread_id))
    return total


def _rows(execute: Any, tables: dict[str, tuple[str, ...]], thread_id: str) -> int:
    return sum(int(execute(f"SELECT count(*) FROM {table}", thread_id)) for table in tables)


# --- running ------------------------------------------------------------------------------------


def _family(
    family: str,
    sides: dict[str, Any],
    theirs_columns: dict[str, tuple[str, ...]],
    execute: Any,
    size: str,
    settings: Settings,
) -> list[dict[str, Any]]:
    """Rotate the sides over the runs; one row per side, with its bytes after the last run."""
    names = list(sides)
    samples: dict[str, dict[str, list[float]]] = {n: {op: [] for op in OPS} for n in names}
    last: dict[str, str] = {}
    for rep in range(settings.turn_reps + 1):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            thread_id = f"savers-{rep}-{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
            settle()
            figures = run_steps(sides[name], thread_id)
            last[name] = thread_id
            if rep > 0:
                for op in OPS:
                    samples[name][op] += figures[op]
    rows = []
    for name in names:
        columns = theirs_columns if name == "theirs" else _OURS_COLUMNS
        row: dict[str, Any] = {"family": family, "saver": name, "steps": STEPS}
        for op in OPS:
            row[f"{op}_p50"] = p50(samples[name][op])
            row[f"{op}_p99"] = p99(samples[name][op])
        row["bytes_stored"] = _bytes(execute, columns, size, last[name])
        row["rows_stored"] = _rows(execute, columns, last[name])
        rows.append(row)
    theirs = next(row for row in rows if row["saver"] == "theirs")
    for row in rows:
        for op in OPS:
            row[f"speedup_{op}_p50"] = theirs[f"{op}_p50"] / row[f"{op}_p50"]
    return rows


def _ours(url: str, **options: Any) -> Any:
    from agents_persistence.langgraph import SQLCheckpointSaver

    return SQLCheckpointSaver.from_url(url, **{"keep_last": KEEP_LAST, **options})


def run(targets: dict[str, Target], settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    """The SQLite and PostgreSQL families whose store is up; rows and what was skipped."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError as exc:
        return rows, [f"savers: LangGraph's savers not installed ({exc})"]
    if "sqlite" in targets:
        target = targets["sqlite"]
        path = os.path.join(target.dir, "savers.sqlite3")
        url = f"sqlite:///{path}"
        from agents_persistence.migrations import upgrade

        upgrade(url)
        with ExitStack() as stack:
            conn = stack.enter_context(sqlite3.connect(path, check_same_thread=False))
            theirs = SqliteSaver(conn)
            theirs.setup()
            sides = {
                "ours": stack.enter_context(_ours(url)),
                "ours, exclusive_writes": stack.enter_context(_ours(url, exclusive_writes=True)),
                "ours, no retention": stack.enter_context(_ours(url, keep_last=None)),
                "theirs": theirs,
            }

            def execute(sql: str, thread_id: str) -> Any:
                return conn.execute(sql + " WHERE thread_id = ?", (thread_id,)).fetchone()[0]

            rows += _family("sqlite", sides, _SQLITE_COLUMNS, execute, "length", settings)
    else:
        skipped.append("savers sqlite: our SQLite store unavailable")
    if "postgresql" in targets:
        import psycopg

        target = targets["postgresql"]
        dsn = target.dsn()
        with ExitStack() as stack:
            theirs = stack.enter_context(PostgresSaver.from_conn_string(dsn))
            theirs.setup()
            sides = {
                "ours": stack.enter_context(_ours(target.url)),
                "ours, exclusive_writes": stack.enter_context(
                    _ours(target.url, exclusive_writes=True)
                ),
                "ours, no retention": stack.enter_context(_ours(target.url, keep_last=None)),
                "theirs": theirs,
            }
            conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))

            def execute(sql: str, thread_id: str) -> Any:
                found = conn.execute(sql + " WHERE thread_id = %s", (thread_id,)).fetchone()
                return found[0] if found else 0

            rows += _family("postgresql", sides, _PG_COLUMNS, execute, "pg_column_size", settings)
    else:
        skipped.append("savers postgresql: our PostgreSQL store unavailable")
    return rows, skipped

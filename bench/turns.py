"""Section 5: the per-turn job against LangGraph's checkpoint savers.

One thread, ``turns`` turns. Each turn loads the latest state, changes it the way an agent
turn does, and saves it: 2 messages appended (a user message and an agent reply), the
scratchpad's turn counter, one todo's status, and every 5th turn one of the 5 files (about 10 KB
of files in all). LangGraph gets the same state as plain channel values (``todos``, ``files``,
``scratchpad``, ``messages``) through its saver API (``get_tuple`` then ``put`` with
``new_versions`` naming only the channels that changed, as its Pregel loop does), so each
saver stores what it would store under a graph. Ours and LangGraph's alternate run by run on the
same database; the figures are medians over runs.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import time
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from agents_persistence import AgentMessage, AgentStateSnapshot, TodoItem
from bench import optional
from bench.common import _text, median, new_namespace, p50, p99, settle

if TYPE_CHECKING:
    from bench.common import Settings
    from bench.stores import Target

STATUSES = ("pending", "in_progress", "completed")
FILES = [f"notes/file_{i}.md" for i in range(5)]


# --- the workload, in both shapes ---------------------------------------------------------------


def _turn_texts(turn: int) -> tuple[str, str, str | None]:
    """The user message, the agent reply and (every 5th turn) a rewritten file of turn ``turn``."""
    rng = random.Random(turn)
    edit = _text(rng, 2000) if turn % 5 == 0 else None
    return _text(rng, 120), _text(rng, 380), edit


def initial_state() -> AgentStateSnapshot:
    rng = random.Random(0)
    return AgentStateSnapshot(
        todos=[TodoItem(content=_text(rng, 40)) for _ in range(10)],
        files={name: _text(rng, 2000) for name in FILES},
        scratchpad={"turn": 0, "plan": _text(rng, 200)},
    )


def apply_turn(state: AgentStateSnapshot, turn: int) -> None:
    user, agent, edit = _turn_texts(turn)
    state.messages.append(AgentMessage.text("User", user))
    state.messages.append(AgentMessage.text("Agent", agent))
    state.scratchpad["turn"] = turn
    state.todos[turn % 10].status = STATUSES[turn % 3]
    if edit is not None:
        state.files[FILES[turn % 5]] = edit


def initial_values() -> dict[str, Any]:
    return initial_state().model_dump(mode="json")


def apply_turn_values(values: dict[str, Any], turn: int) -> list[str]:
    """`apply_turn` on LangGraph channel values; returns the channels that changed."""
    user, agent, edit = _turn_texts(turn)
    values["messages"] = [
        *values.get("messages", []),
        {"role": "User", "content": {"type": "Text", "value": user}},
        {"role": "Agent", "content": {"type": "Text", "value": agent}},
    ]
    values["scratchpad"] = {**values["scratchpad"], "turn": turn}
    todos = [dict(todo) for todo in values["todos"]]
    todos[turn % 10]["status"] = STATUSES[turn % 3]
    values["todos"] = todos
    changed = ["messages", "scratchpad", "todos"]
    if edit is not None:
        values["files"] = {**values["files"], FILES[turn % 5]: edit}
        changed.append("files")
    return changed


# --- jobs ---------------------------------------------------------------------------------------


class OursJob:
    def __init__(self, cp: Any) -> None:
        self.cp = cp

    def turn(self, thread_id: str, turn: int) -> int:
        state = self.cp.load_state(thread_id) or initial_state()
        apply_turn(state, turn)
        return int(self.cp.save_state(thread_id, state).size)


class AsyncOursJob(OursJob):
    async def aturn(self, thread_id: str, turn: int) -> int:
        state = await self.cp.load_state(thread_id) or initial_state()
        apply_turn(state, turn)
        return int((await self.cp.save_state(thread_id, state)).size)


def _next_checkpoint(saver: Any, found: Any, config: dict[str, Any], turn: int) -> tuple:
    from langgraph.checkpoint.base import create_checkpoint, empty_checkpoint

    if found is None:
        previous, values, parent = empty_checkpoint(), initial_values(), config
        changed = [*apply_turn_values(values, turn), "files"]
    else:
        previous, parent = found.checkpoint, found.config
        values = dict(previous["channel_values"])
        changed = apply_turn_values(values, turn)
    versions = dict(previous["channel_versions"])
    new_versions = {ch: saver.get_next_version(versions.get(ch), None) for ch in set(changed)}
    versions.update(new_versions)
    checkpoint = create_checkpoint(previous, None, turn)
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = versions
    metadata = {"source": "loop", "step": turn, "parents": {}}
    return parent, checkpoint, metadata, new_versions


class LangGraphJob:
    def __init__(self, saver: Any) -> None:
        self.saver = saver

    def turn(self, thread_id: str, turn: int) -> int:
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        found = self.saver.get_tuple(config)
        self.saver.put(*_next_checkpoint(self.saver, found, config, turn))
        return 0


class AsyncLangGraphJob(LangGraphJob):
    async def aturn(self, thread_id: str, turn: int) -> int:
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        found = await self.saver.aget_tuple(config)
        await self.saver.aput(*_next_checkpoint(self.saver, found, config, turn))
        return 0


# --- bytes stored after the run -----------------------------------------------------------------


def _lg_sqlite_bytes(saver: Any, thread_id: str) -> int:
    row = saver.conn.execute(
        "SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM checkpoints"
        " WHERE thread_id = ?",
        (thread_id,),
    ).fetchone()
    writes = saver.conn.execute(
        "SELECT coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?", (thread_id,)
    ).fetchone()
    return int(row[0]) + int(writes[0])


def _lg_pg_bytes(dsn: str, thread_id: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        a = conn.execute(
            "SELECT coalesce(sum(pg_column_size(checkpoint) + pg_column_size(metadata)), 0)"
            " FROM checkpoints WHERE thread_id = %s",
            (thread_id,),
        ).fetchone()
        b = conn.execute(
            "SELECT coalesce(sum(pg_column_size(blob)), 0) FROM checkpoint_blobs"
            " WHERE thread_id = %s",
            (thread_id,),
        ).fetchone()
    assert a is not None
    assert b is not None
    return int(a[0]) + int(b[0])


def _lg_memory_bytes(saver: Any, thread_id: str) -> int:
    total = 0
    for saved in saver.storage[thread_id][""].values():
        total += len(saved[0][1]) + len(saved[1][1])
    for key, (_, blob) in saver.blobs.items():
        if key[0] == thread_id:
            total += len(blob)
    return total


def _ours_bytes(target: Target, namespace: str, thread_id: str, payload: int) -> int:
    """Bytes our store holds for the thread: head, manifest and pieces on SQL; memory: payload."""
    if target.name == "memory":
        return payload
    import sqlalchemy as sa

    pg = target.name == "postgresql"
    head = "pg_column_size(state)" if pg else "length(state)"
    manifest = "coalesce(pg_column_size(manifest), 0)" if pg else "coalesce(length(manifest), 0)"
    body = "pg_column_size(body)" if pg else "length(body)"
    where = "WHERE namespace = :ns AND thread_id = :tid"
    query = (
        f"SELECT (SELECT {head} + {manifest} FROM agent_checkpoints {where})"
        f" + (SELECT coalesce(sum({body}), 0) FROM agent_checkpoints_pieces {where})"
    )
    with target.engine.connect() as conn:
        return int(conn.execute(sa.text(query), {"ns": namespace, "tid": thread_id}).scalar())


# --- running ------------------------------------------------------------------------------------


def _job_figures(samples: list[float], total_s: float) -> dict[str, float]:
    return {"turn_p50": p50(samples), "turn_p99": p99(samples), "total_ms": total_s * 1e3}


def _run_sync_job(job: Any, thread_id: str, turns: int) -> tuple[dict[str, float], int]:
    samples = []
    size = 0
    start = time.perf_counter()
    for turn in range(1, turns + 1):
        t0 = time.perf_counter_ns()
        size = job.turn(thread_id, turn)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return _job_figures(samples, time.perf_counter() - start), size


async def _run_async_job(job: Any, thread_id: str, turns: int) -> tuple[dict[str, float], int]:
    samples = []
    size = 0
    start = time.perf_counter()
    for turn in range(1, turns + 1):
        t0 = time.perf_counter_ns()
        size = await job.aturn(thread_id, turn)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return _job_figures(samples, time.perf_counter() - start), size


def _summarise(
    family: str, name: str, runs: list[dict[str, float]], stored: int, payload: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"family": family, "saver": name}
    for key in runs[0]:
        out[key] = median([run[key] for run in runs])
    out["bytes_stored"] = stored
    out["final_state_bytes"] = payload
    return out


class _Runs:
    """Runs of several jobs on one database, in rotating order; run 0 only warms up.

    Side ``theirs`` is LangGraph's saver; every other side is a configuration of our store,
    and gets the median of its per-run ratios to ``theirs``.
    """

    def __init__(self, settings: Settings, prefix: str, sides: list[str]) -> None:
        self.settings = settings
        self.prefix = prefix
        self.sides = sides
        self.runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        self.threads: dict[str, list[str]] = {side: [] for side in sides}
        self.payload = 0

    def plan(self) -> list[tuple[int, str, str]]:
        out = []
        for rep in range(self.settings.turn_reps + 1):
            shift = rep % len(self.sides)
            sides = self.sides[shift:] + self.sides[:shift]
            out += [
                (rep, side, f"{self.prefix}-{rep}-{i}-{os.getpid()}")
                for i, side in enumerate(sides)
            ]
        return out

    def record(self, rep: int, side: str, thread_id: str, figures: dict, size: int) -> None:
        self.threads[side].append(thread_id)
        if rep > 0:
            self.runs[side].append(figures)
        if side != "theirs":
            self.payload = size

    def last(self, side: str) -> str:
        return self.threads[side][-1]

    def rows(self, family: str, names: dict[str, str], stored: dict[str, int]) -> list[dict]:
        theirs = self.runs["theirs"]
        out = []
        for side in self.sides:
            payload = 0 if side == "theirs" else self.payload
            row = _summarise(family, names[side], self.runs[side], stored[side], payload)
            if side != "theirs":
                for key in ("turn_p50", "total_ms"):
                    pairs = zip(self.runs[side], theirs, strict=True)
                    row[f"ratio_{key}"] = median([a[key] / b[key] for a, b in pairs])
            out.append(row)
        return out


def run_sync_family(
    family: str, target: Target, saver_name: str, saver: Any, bytes_of: Any, settings: Settings
) -> list[dict[str, Any]]:
    namespaces = {"ours": new_namespace("turns")}
    checkpointers = {"ours": target.sync(namespaces["ours"])}
    names = {"ours": f"ours ({target.label})", "theirs": saver_name}
    for label, options in target.ours_variants().items():
        namespaces[label] = new_namespace("turns")
        checkpointers[label] = target.sync(namespaces[label], **options)
        names[label] = f"ours ({target.label}, {label})"
    jobs: dict[str, Any] = {side: OursJob(cp) for side, cp in checkpointers.items()}
    jobs["theirs"] = LangGraphJob(saver)
    runs = _Runs(settings, "turns", list(jobs))
    try:
        for rep, side, thread_id in runs.plan():
            settle()
            figures, size = _run_sync_job(jobs[side], thread_id, settings.turns)
            runs.record(rep, side, thread_id, figures, size)
        stored = {
            side: _ours_bytes(target, namespaces[side], runs.last(side), runs.payload)
            for side in checkpointers
        }
        stored["theirs"] = bytes_of(saver, runs.last("theirs"))
        for thread_id in runs.threads["theirs"]:
            saver.delete_thread(thread_id)
    finally:
        for side, cp in checkpointers.items():
            cp.close()
            target.cleanup(namespaces[side])
    return runs.rows(family, names, stored)


async def run_async_pg(target: Target, settings: Settings) -> list[dict[str, Any]]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

    dsn = target.dsn()
    namespace = new_namespace("turns")
    cp = await target.async_(namespace)
    runs = _Runs(settings, "aturns", ["ours", "theirs"])
    try:
        async with AsyncPostgresSaver.from_conn_string(dsn) as saver:
            await saver.setup()
            jobs = {"ours": AsyncOursJob(cp), "theirs": AsyncLangGraphJob(saver)}
            for rep, side, thread_id in runs.plan():
                settle()
                figures, size = await _run_async_job(jobs[side], thread_id, settings.turns)
                runs.record(rep, side, thread_id, figures, size)
            stored = {
                "ours": _ours_bytes(target, namespace, runs.last("ours"), runs.payload),
                "theirs": _lg_pg_bytes(dsn, runs.last("theirs")),
            }
            for thread_id in runs.threads["theirs"]:
                await saver.adelete_thread(thread_id)
    finally:
        await cp.close()
        target.cleanup(namespace)
    names = {"ours": "ours (PostgreSQL, async)", "theirs": "AsyncPostgresSaver"}
    return runs.rows("postgresql async", names, stored)


def run(targets: dict[str, Target], settings: Settings) -> tuple[list[dict[str, Any]], list[str]]:
    """Every family whose store is up; returns rows and the reasons families were skipped."""
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    reason = optional.missing("langgraph.checkpoint.memory")
    if reason is not None:
        return rows, [f"turns section ({reason})"]

    if "memory" in targets:
        from langgraph.checkpoint.memory import InMemorySaver

        rows += run_sync_family(
            "memory",
            targets["memory"],
            "InMemorySaver",
            InMemorySaver(),
            _lg_memory_bytes,
            settings,
        )
    reason = optional.missing("langgraph.checkpoint.sqlite")
    if reason is not None:
        skipped.append(f"turns: sqlite family ({reason})")
    elif "sqlite" in targets:
        from langgraph.checkpoint.sqlite import SqliteSaver

        target = targets["sqlite"]
        path = os.path.join(target.dir, "langgraph.sqlite3")
        with ExitStack() as stack:
            conn = stack.enter_context(sqlite3.connect(path, check_same_thread=False))
            saver = SqliteSaver(conn)
            saver.setup()
            rows += run_sync_family(
                "sqlite", target, "SqliteSaver", saver, _lg_sqlite_bytes, settings
            )
    else:
        skipped.append("sqlite family: our SQLite store unavailable")
    reason = optional.missing("langgraph.checkpoint.postgres")
    if reason is not None:
        skipped.append(f"turns: postgresql family ({reason})")
    elif "postgresql" in targets:
        from langgraph.checkpoint.postgres import PostgresSaver

        target = targets["postgresql"]
        dsn = target.dsn()
        with PostgresSaver.from_conn_string(dsn) as saver:
            saver.setup()
            rows += run_sync_family(
                "postgresql",
                target,
                "PostgresSaver",
                saver,
                lambda _saver, tid: _lg_pg_bytes(dsn, tid),
                settings,
            )
        rows += asyncio.run(run_async_pg(target, settings))
    else:
        skipped.append("postgresql family: our PostgreSQL store unavailable")
    return rows, skipped

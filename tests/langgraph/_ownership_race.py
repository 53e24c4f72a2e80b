"""Savers with write ownership for the ownership tests, and the racing writer they start.

`race` runs in a process of its own (``spawn``): each step, it reads the thread's latest
checkpoint at the same moment as the other writer, then both try to store a child of it.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import empty_checkpoint

from agents_persistence.errors import ThreadForkError

if TYPE_CHECKING:
    from multiprocessing.queues import Queue
    from multiprocessing.synchronize import Barrier

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import BaseCheckpointSaver


def open_saver(kind: str, options: dict[str, Any], twin: str, **extra: Any) -> Any:
    """A saver of store ``kind`` (``sql``, ``redis``, ``dynamodb``), ``sync`` or ``async``."""
    from agents_persistence import langgraph as lg

    if kind == "sql":
        sql_class = lg.SQLCheckpointSaver if twin == "sync" else lg.AsyncSQLCheckpointSaver
        return sql_class.from_url(options["url"], **extra)
    if kind == "redis":
        redis_class = lg.RedisCheckpointSaver if twin == "sync" else lg.AsyncRedisCheckpointSaver
        return redis_class.from_url(options["url"], key_prefix=options["key_prefix"], **extra)
    dynamodb_class = (
        lg.DynamoDBCheckpointSaver if twin == "sync" else lg.AsyncDynamoDBCheckpointSaver
    )
    return dynamodb_class(**options, **extra)


def child(saver: BaseCheckpointSaver[str], parent: RunnableConfig, step: int) -> tuple[Any, ...]:
    """``put`` arguments storing a new checkpoint after ``parent`` (a message more)."""
    checkpoint = empty_checkpoint()
    version = saver.get_next_version(None, None)
    checkpoint["channel_values"] = {"messages": [f"m{i}" for i in range(step + 1)]}
    checkpoint["channel_versions"] = {"messages": version}
    metadata: Any = {"source": "loop", "step": step, "writer": os.getpid()}
    return parent, checkpoint, metadata, {"messages": version}


def race(
    kind: str,
    options: dict[str, Any],
    twin: str,
    thread_id: str,
    steps: int,
    barrier: Barrier,
    results: Queue[tuple[int, list[str]]],
) -> None:
    """Race the other writer for ``steps`` steps; put ``(pid, ["won" | "lost", ...])``."""
    base: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    outcomes: list[str] = []
    if twin == "sync":
        with open_saver(kind, options, twin, exclusive_writes=True) as saver:
            for step in range(steps):
                barrier.wait(60)
                latest = saver.get_tuple(base)
                barrier.wait(60)
                try:
                    saver.put(*child(saver, base if latest is None else latest.config, step))
                    outcomes.append("won")
                except ThreadForkError:
                    outcomes.append("lost")
    else:

        async def main() -> None:
            async with open_saver(kind, options, twin, exclusive_writes=True) as saver:
                for step in range(steps):
                    barrier.wait(60)
                    latest = await saver.aget_tuple(base)
                    barrier.wait(60)
                    try:
                        parent = base if latest is None else latest.config
                        await saver.aput(*child(saver, parent, step))
                        outcomes.append("won")
                    except ThreadForkError:
                        outcomes.append("lost")

        asyncio.run(main())
    results.put((os.getpid(), outcomes))

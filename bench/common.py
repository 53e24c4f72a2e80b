"""Shared pieces of the benchmarks: run settings, timing statistics, snapshots of a given size."""

from __future__ import annotations

import gc
import random
import statistics
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agents_persistence import AgentMessage, AgentStateSnapshot, TodoItem

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

KB = 1000
SIZES = {"1KB": 1 * KB, "10KB": 10 * KB, "100KB": 100 * KB, "1MB": 1000 * KB}


@dataclass(frozen=True)
class Settings:
    """How much each section measures; ``quick`` trades precision for minutes."""

    quick: bool
    reps: int  # repeated runs; every figure is the median over them
    ops: dict[str, int]  # operations per run, by snapshot size
    warmup: int
    workers: tuple[int, ...]
    throughput_seconds: float
    throughput_reps: int
    scale_threads: int  # SQL and Redis
    scale_threads_dynamodb: int
    turns: int
    turn_reps: int
    profile_ops: int

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(
                quick=True,
                reps=3,
                ops={"1KB": 30, "10KB": 30, "100KB": 10, "1MB": 3},
                warmup=3,
                workers=(1, 4, 16),
                throughput_seconds=1.0,
                throughput_reps=1,
                scale_threads=10_000,
                scale_threads_dynamodb=500,
                turns=100,
                turn_reps=1,
                profile_ops=150,
            )
        return cls(
            quick=False,
            reps=5,
            ops={"1KB": 200, "10KB": 200, "100KB": 60, "1MB": 12},
            warmup=10,
            workers=(1, 4, 16),
            throughput_seconds=3.0,
            throughput_reps=3,
            scale_threads=100_000,
            scale_threads_dynamodb=3_000,
            turns=100,
            turn_reps=5,
            profile_ops=600,
        )


def new_namespace(prefix: str = "bench") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# --- statistics --------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def p50(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def p99(samples: Sequence[float]) -> float:
    return percentile(samples, 99)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@dataclass
class Runs:
    """Per-run figures of one measured operation; the reported figure is their median."""

    p50s: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)

    def add(self, samples_ms: Sequence[float]) -> None:
        self.p50s.append(p50(samples_ms))
        self.p99s.append(p99(samples_ms))

    @property
    def p50(self) -> float:
        return median(self.p50s)

    @property
    def p99(self) -> float:
        return median(self.p99s)


def ratio_runs(ours: Runs, raw: Runs) -> tuple[float, float]:
    """Median over runs of the per-run ours/raw ratio, for p50 and p99."""
    r50 = median([a / b for a, b in zip(ours.p50s, raw.p50s, strict=True)])
    r99 = median([a / b for a, b in zip(ours.p99s, raw.p99s, strict=True)])
    return r50, r99


def timed(fn: Callable[..., Any], *args: Any) -> float:
    """Milliseconds one call of ``fn(*args)`` takes."""
    start = time.perf_counter_ns()
    fn(*args)
    return (time.perf_counter_ns() - start) / 1e6


async def atimed(fn: Callable[..., Awaitable[Any]], *args: Any) -> float:
    """Milliseconds one awaited call of ``fn(*args)`` takes."""
    start = time.perf_counter_ns()
    await fn(*args)
    return (time.perf_counter_ns() - start) / 1e6


def settle() -> None:
    """Collect garbage between runs so one run's garbage is not billed to the next."""
    gc.collect()


# --- snapshots ---------------------------------------------------------------------------------

_WORDS = [
    "agent",
    "tool",
    "call",
    "result",
    "file",
    "plan",
    "todo",
    "search",
    "read",
    "write",
    "edit",
    "patch",
    "review",
    "test",
    "build",
    "deploy",
    "context",
    "memory",
    "thread",
    "message",
    "user",
    "system",
    "state",
    "version",
    "checkpoint",
    "store",
    "cache",
    "index",
    "query",
    "row",
    "column",
    "page",
    "cursor",
    "token",
    "budget",
    "limit",
    "retry",
    "error",
    "warning",
    "note",
    "summary",
    "draft",
    "final",
]


def _text(rng: random.Random, length: int) -> str:
    """English-like text of exactly ``length`` ASCII characters (compresses like prose does)."""
    out: list[str] = []
    size = 0
    while size < length:
        word = rng.choice(_WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:length]


def make_state(size: int, *, seed: int = 7, messages: int = 2) -> AgentStateSnapshot:
    """An `AgentStateSnapshot` whose JSON is ``size`` bytes (within a few bytes).

    10 todos, a scratchpad, a few messages, and 5 files that carry the rest of the size.
    """
    rng = random.Random(seed)
    todos = [
        TodoItem(content=_text(rng, 20), status=("pending", "in_progress", "completed")[i % 3])
        for i in range(10)
    ]
    scratchpad: dict[str, Any] = {"turn": 1, "budget": {"tokens": 12000, "used": 3456}}
    msgs = [
        AgentMessage.text("User" if i % 2 == 0 else "Agent", _text(rng, 40))
        for i in range(messages)
    ]
    base = AgentStateSnapshot(todos=todos, scratchpad=scratchpad, messages=msgs)
    file_names = [f"src/module_{i}.py" for i in range(5)]
    empty = AgentStateSnapshot(
        todos=todos, scratchpad=scratchpad, messages=msgs, files=dict.fromkeys(file_names, "")
    )
    room = size - len(empty.model_dump_json())
    if room < 0:
        return base
    share, extra = divmod(room, 5)
    files = {name: _text(rng, share + (1 if i < extra else 0)) for i, name in enumerate(file_names)}
    return AgentStateSnapshot(todos=todos, scratchpad=scratchpad, messages=msgs, files=files)


def state_bytes(state: AgentStateSnapshot) -> int:
    return len(state.model_dump_json().encode())

"""Section 3, last rows: 50 workers on the pool each store ships with (fair waiting).

Each of the 50 workers (threads sync, tasks async) alternates ``save_state`` and ``load_state``
of 10 KB snapshots on its own threads, on a checkpointer made with the store's defaults (SQL:
``from_url`` without pool options; DynamoDB: its default HTTP pool), so that callers outnumber
connections. Reported over every call of every run: the p50, p99 and maximum time of a save
and of a load, and on SQL stores of the wait for a connection (from the call's start to the
pool's checkout, gate included). A worker still waiting at the deadline finishes its call, so
the maximum is not capped by the run's length. Failed calls are counted by kind, not retried.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from agents_persistence.errors import CheckpointerError
from bench.common import SIZES, make_state, new_namespace, p50, p99, settle

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.common import Settings
    from bench.stores import Target

WORKERS = 50
THREADS_PER_WORKER = 4


class _Samples:
    def __init__(self) -> None:
        self.saves: list[float] = []
        self.loads: list[float] = []
        self.waits: list[float] = []
        self.errors = 0
        self.kinds: dict[str, int] = {}
        self.ops = 0
        self.elapsed = 0.0


def _kind(exc: BaseException) -> str:
    """An error's type and the first words of its message, to tell causes apart."""
    return f"{type(exc).__name__}: {str(exc)[:80]}"


def _watch_checkouts(cp: Any, take_start: Callable[[], float | None], waits: list[float]) -> None:
    """Record, on SQL engines, each call's wait for a connection (start to pool checkout).

    ``take_start`` returns the current call's start and forgets it (one wait per call).
    """
    engine = getattr(cp, "engine", None)
    if engine is None:
        return
    from sqlalchemy import event

    sync_engine = getattr(engine, "sync_engine", engine)

    @event.listens_for(sync_engine, "checkout")
    def _checkout(*_: Any) -> None:
        start = take_start()
        if start is not None:
            waits.append((time.perf_counter() - start) * 1e3)


def _sync_once(cp: Any, seconds: float, state: Any, out: _Samples, local: Any) -> None:
    barrier = threading.Barrier(WORKERS + 1)
    deadline = [0.0]
    lock = threading.Lock()

    def work(w: int) -> None:
        tids = [f"f{w}-t{i}" for i in range(THREADS_PER_WORKER)]
        saves: list[float] = []
        loads: list[float] = []
        errors = 0
        kinds: dict[str, int] = {}
        barrier.wait()
        i = 0
        while time.perf_counter() < deadline[0]:
            tid = tids[i % THREADS_PER_WORKER]
            for save, into in ((True, saves), (False, loads)):
                local.start = t0 = time.perf_counter()
                try:
                    if save:
                        cp.save_state(tid, state)
                    else:
                        cp.load_state(tid)
                except CheckpointerError as exc:
                    errors += 1
                    kinds[_kind(exc)] = kinds.get(_kind(exc), 0) + 1
                local.start = None
                into.append((time.perf_counter() - t0) * 1e3)
            i += 1
        with lock:
            out.saves += saves
            out.loads += loads
            out.errors += errors
            for kind, count in kinds.items():
                out.kinds[kind] = out.kinds.get(kind, 0) + count

    pool = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
    for thread in pool:
        thread.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    barrier.wait()
    for thread in pool:
        thread.join()
    out.elapsed += time.perf_counter() - start


async def _async_once(
    cp: Any, seconds: float, state: Any, out: _Samples, starts: dict[Any, float]
) -> None:
    deadline = time.perf_counter() + seconds

    async def work(w: int) -> None:
        tids = [f"f{w}-t{i}" for i in range(THREADS_PER_WORKER)]
        task = asyncio.current_task()
        i = 0
        while time.perf_counter() < deadline:
            tid = tids[i % THREADS_PER_WORKER]
            for save, into in ((True, out.saves), (False, out.loads)):
                starts[task] = t0 = time.perf_counter()
                try:
                    if save:
                        await cp.save_state(tid, state)
                    else:
                        await cp.load_state(tid)
                except CheckpointerError as exc:
                    out.errors += 1
                    out.kinds[_kind(exc)] = out.kinds.get(_kind(exc), 0) + 1
                starts.pop(task, None)
                into.append((time.perf_counter() - t0) * 1e3)
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(work(w) for w in range(WORKERS)))
    out.elapsed += time.perf_counter() - start


def _row(target: Target, mode: str, out: _Samples) -> dict[str, Any]:
    row: dict[str, Any] = {
        "store": target.name,
        "mode": mode,
        "workers": WORKERS,
        "pool": "shipped",
        "ops_s": (len(out.saves) + len(out.loads)) / out.elapsed,
        "errors": out.errors,
        "error_kinds": out.kinds,
    }
    for name, samples in (("save", out.saves), ("load", out.loads), ("wait", out.waits)):
        if samples:
            row[f"{name}_p50"] = p50(samples)
            row[f"{name}_p99"] = p99(samples)
            row[f"{name}_max"] = max(samples)
    return row


def _seconds(settings: Settings) -> float:
    return max(2.0, settings.throughput_seconds)


def run_sync(target: Target, settings: Settings) -> list[dict[str, Any]]:
    namespace = new_namespace()
    state = make_state(SIZES["10KB"])
    cp = target.sync_shipped(namespace)
    out = _Samples()
    local = threading.local()

    def take_start() -> float | None:
        start: float | None = getattr(local, "start", None)
        local.start = None
        return start

    try:
        cp.save_state("warm-up", state)
        _watch_checkouts(cp, take_start, out.waits)
        for _ in range(settings.throughput_reps):
            settle()
            _sync_once(cp, _seconds(settings), state, out, local)
    finally:
        cp.close()
        target.cleanup(namespace)
    return [_row(target, "sync", out)]


async def _run_async(target: Target, settings: Settings) -> list[dict[str, Any]]:
    namespace = new_namespace()
    state = make_state(SIZES["10KB"])
    cp = await target.async_shipped(namespace)
    out = _Samples()
    starts: dict[Any, float] = {}
    try:
        await cp.save_state("warm-up", state)
        _watch_checkouts(cp, lambda: starts.pop(asyncio.current_task(), None), out.waits)
        for _ in range(settings.throughput_reps):
            settle()
            await _async_once(cp, _seconds(settings), state, out, starts)
    finally:
        await cp.close()
        target.cleanup(namespace)
    return [_row(target, "async", out)]


def run(target: Target, settings: Settings) -> list[dict[str, Any]]:
    """The sync and the async row of ``target``."""
    return run_sync(target, settings) + asyncio.run(_run_async(target, settings))

"""Section 3: throughput with 1, 4 and 16 concurrent workers (threads sync, tasks async).

Each worker owns its threads and alternates ``save_state`` and ``load_state`` of 10 KB
snapshots until the deadline. Reported: operations per second over all workers, and the p99 of
saves and of loads; medians over runs. Then 50 workers on the pool each store ships with
(`bench.fairness`): p50, p99 and maximum of each call and of its wait for a connection.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

from bench import fairness
from bench.common import SIZES, make_state, median, new_namespace, p50, p99, settle

if TYPE_CHECKING:
    from bench.common import Settings
    from bench.stores import Target

THREADS_PER_WORKER = 4


def _sync_once(cp: Any, workers: int, seconds: float, state: Any) -> dict[str, Any]:
    saves: list[list[float]] = [[] for _ in range(workers)]
    loads: list[list[float]] = [[] for _ in range(workers)]
    barrier = threading.Barrier(workers + 1)
    deadline = [0.0]
    errors: list[BaseException] = []

    def work(w: int) -> None:
        tids = [f"w{w}-t{i}" for i in range(THREADS_PER_WORKER)]
        clock = time.perf_counter_ns
        try:
            barrier.wait()
            i = 0
            while time.perf_counter() < deadline[0]:
                tid = tids[i % THREADS_PER_WORKER]
                t0 = clock()
                cp.save_state(tid, state)
                t1 = clock()
                cp.load_state(tid)
                t2 = clock()
                saves[w].append((t1 - t0) / 1e6)
                loads[w].append((t2 - t1) / 1e6)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in pool:
        thread.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    barrier.wait()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return _figures(saves, loads, elapsed)


async def _async_once(cp: Any, workers: int, seconds: float, state: Any) -> dict[str, Any]:
    saves: list[list[float]] = [[] for _ in range(workers)]
    loads: list[list[float]] = [[] for _ in range(workers)]
    deadline = time.perf_counter() + seconds

    async def work(w: int) -> None:
        tids = [f"w{w}-t{i}" for i in range(THREADS_PER_WORKER)]
        clock = time.perf_counter_ns
        i = 0
        while time.perf_counter() < deadline:
            tid = tids[i % THREADS_PER_WORKER]
            t0 = clock()
            await cp.save_state(tid, state)
            t1 = clock()
            await cp.load_state(tid)
            t2 = clock()
            saves[w].append((t1 - t0) / 1e6)
            loads[w].append((t2 - t1) / 1e6)
            i += 1

    start = time.perf_counter()
    await asyncio.gather(*(work(w) for w in range(workers)))
    return _figures(saves, loads, time.perf_counter() - start)


def _figures(saves: list[list[float]], loads: list[list[float]], elapsed: float) -> dict[str, Any]:
    all_saves = [x for per in saves for x in per]
    all_loads = [x for per in loads for x in per]
    return {
        "ops_s": (len(all_saves) + len(all_loads)) / elapsed,
        "save_p50": p50(all_saves),
        "save_p99": p99(all_saves),
        "load_p50": p50(all_loads),
        "load_p99": p99(all_loads),
    }


def _summary(target: Target, mode: str, workers: int, runs: list[dict[str, Any]]) -> dict:
    out: dict[str, Any] = {"store": target.name, "mode": mode, "workers": workers}
    for key in runs[0]:
        out[key] = median([run[key] for run in runs])
    return out


def run_sync(target: Target, settings: Settings) -> list[dict[str, Any]]:
    namespace = new_namespace()
    state = make_state(SIZES["10KB"])
    cp = target.sync(namespace)
    rows = []
    try:
        _sync_once(cp, 2, 0.2, state)  # warm up connections and caches
        for workers in settings.workers:
            runs = []
            for _ in range(settings.throughput_reps):
                settle()
                runs.append(_sync_once(cp, workers, settings.throughput_seconds, state))
            rows.append(_summary(target, "sync", workers, runs))
    finally:
        cp.close()
        target.cleanup(namespace)
    return rows


async def _run_async(target: Target, settings: Settings) -> list[dict[str, Any]]:
    namespace = new_namespace()
    state = make_state(SIZES["10KB"])
    cp = await target.async_(namespace)
    rows = []
    try:
        await _async_once(cp, 2, 0.2, state)
        for workers in settings.workers:
            runs = []
            for _ in range(settings.throughput_reps):
                settle()
                runs.append(await _async_once(cp, workers, settings.throughput_seconds, state))
            rows.append(_summary(target, "async", workers, runs))
    finally:
        await cp.close()
        target.cleanup(namespace)
    return rows


def run(target: Target, settings: Settings) -> list[dict[str, Any]]:
    rows = run_sync(target, settings) + asyncio.run(_run_async(target, settings))
    return rows + fairness.run(target, settings)

"""Section 4: one namespace with many threads: listing, full iteration, purge, peak memory.

The namespace is seeded behind the library (bulk insert, pipeline or batch write: see each
store's ``seed``) with records shaped exactly like the ones the store writes itself, 10% of
them already expired. Then, through the library (sync): the first page of ``list_threads``
(p50 and p99 of repeated calls, expired threads still stored), ``purge_expired``, one full
``iter_threads``, and the peak memory of a second full iteration (tracemalloc: Python
allocations only; traced from 10% of the threads on, read at 20% and at 100%: equal peaks are
what "flat in the number of threads" means).
"""

from __future__ import annotations

import time
import tracemalloc
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bench import optional
from bench.common import new_namespace, p50, p99, settle
from bench.profiling import analyse

if TYPE_CHECKING:
    from pathlib import Path

    from bench.common import Settings
    from bench.stores import Target

FIRST_PAGE_CALLS = 30
PAGE_SIZE = 100


def run(target: Target, settings: Settings, out_dir: Path) -> list[dict[str, Any]]:
    count = settings.scale_threads if target.name != "dynamodb" else settings.scale_threads_dynamodb
    namespace = new_namespace("scale")
    now = datetime.now(UTC)
    started = time.perf_counter()
    expired = target.seed(namespace, count, now)
    seed_s = time.perf_counter() - started
    cp = target.sync(namespace)
    try:
        check = cp.load_checkpoint("seed-000001")
        if check is None or check.info.version != 1:
            raise RuntimeError(f"{target.name}: a seeded thread does not load through the store")
        live = count - expired

        cold = _first_page(cp)  # right after the bulk load: planner statistics not refreshed
        target.analyze()
        first = _first_page(cp)
        profile = _profile_first_page(cp, target, out_dir)

        t0 = time.perf_counter()
        purged = cp.purge_expired()
        purge_s = time.perf_counter() - t0

        settle()
        t0 = time.perf_counter()
        seen = sum(1 for _ in cp.iter_threads(page_size=PAGE_SIZE))
        iterate_s = time.perf_counter() - t0
        if seen != live:
            raise RuntimeError(f"{target.name}: iterated {seen} threads, expected {live}")

        # Peak memory: tracing starts once 10% of the threads went by (caches, pools and
        # compiled statements are warm by then); the peak after 20% and after 100% must match.
        settle()
        tracemalloc.start()
        peak_20 = 0
        for i, _ in enumerate(cp.iter_threads(page_size=PAGE_SIZE), 1):
            if i == live // 10:
                tracemalloc.reset_peak()
            elif i == live // 5:
                peak_20 = tracemalloc.get_traced_memory()[1]
        peak_100 = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

    finally:
        cp.close()
        target.cleanup(namespace)
    return [
        {
            "store": target.name,
            "threads": count,
            "expired": expired,
            "seed_s": seed_s,
            "first_page_cold_p50": p50(cold),
            "first_page_p50": p50(first),
            "first_page_p99": p99(first),
            "iterate_s": iterate_s,
            "iterated": seen,
            "peak_kib_20pct": peak_20 / 1024,
            "peak_kib_100pct": peak_100 / 1024,
            "purge_s": purge_s,
            "purged": purged,
        }
        | ({} if profile is None else {"first_page_profile": profile})
    ]


def _first_page(cp: Any) -> list[float]:
    samples: list[float] = []
    for _ in range(FIRST_PAGE_CALLS):
        t0 = time.perf_counter_ns()
        page = cp.list_threads(limit=PAGE_SIZE)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    if len(page.threads) != PAGE_SIZE:
        raise RuntimeError(f"first page has {len(page.threads)} threads")
    return samples


def _profile_first_page(cp: Any, target: Target, out_dir: Path) -> dict[str, Any] | None:
    """Where the time of a first page goes (pyinstrument, see `bench.profiling`).

    ``None`` without pyinstrument (the run records that skip).
    """
    if optional.missing("pyinstrument") is not None:
        return None
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    for _ in range(FIRST_PAGE_CALLS):
        cp.list_threads(limit=PAGE_SIZE)
    profiler.stop()
    return analyse(profiler, f"{target.name}-list", out_dir)

"""Sections 1 and 2: latency of save_state and load_state per store, against the raw driver.

Ours and raw run interleaved operation by operation (which one goes first alternates), on the
same server, in the same process, so both see the same noise. Each run yields a p50 and a p99
per side; the figures reported are the medians over runs, and the ratio is the median of the
per-run ratios.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bench.common import SIZES, Runs, atimed, make_state, new_namespace, ratio_runs, settle, timed

if TYPE_CHECKING:
    from bench.common import Settings
    from bench.stores import Target

POOL = 16  # threads cycled through, so a run is not one hot row


def sizes_for(target: Target) -> dict[str, int]:
    """The snapshot sizes a store is measured at: up to 1 MB, or just under its limit."""
    limit = target.max_state_bytes()
    out = {name: size for name, size in SIZES.items() if size <= limit}
    if len(out) < len(SIZES):
        top = int(limit * 0.9) // 1000 * 1000
        out[f"{top // 1000}KB"] = top
    return out


def _count(target: Target, settings: Settings, size_name: str) -> int:
    """Operations per run: fewer on slow stores (moto), never fewer than 10."""
    n = settings.ops.get(size_name, settings.ops["1MB"])
    return max(10, int(n * target.ops_factor)) if target.ops_factor < 1 else n


def _row(target: Target, mode: str, op: str, size: str, ours: Runs, raw: Runs) -> dict[str, Any]:
    r50, r99 = ratio_runs(ours, raw)
    return {
        "store": target.name,
        "mode": mode,
        "op": op,
        "size": size,
        "ours_p50": ours.p50,
        "ours_p99": ours.p99,
        "raw_p50": raw.p50,
        "raw_p99": raw.p99,
        "ratio_p50": r50,
        "ratio_p99": r99,
    }


def _interleave(n: int, rep: int, ours: Any, raw: Any) -> tuple[list[float], list[float]]:
    """Time ``ours(i)`` and ``raw(i)`` for each i, alternating which of the two goes first."""
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        if (i + rep) % 2 == 0:
            a.append(timed(ours, i))
            b.append(timed(raw, i))
        else:
            b.append(timed(raw, i))
            a.append(timed(ours, i))
    return a, b


async def _ainterleave(n: int, rep: int, ours: Any, raw: Any) -> tuple[list[float], list[float]]:
    """`_interleave` for coroutine functions."""
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        if (i + rep) % 2 == 0:
            a.append(await atimed(ours, i))
            b.append(await atimed(raw, i))
        else:
            b.append(await atimed(raw, i))
            a.append(await atimed(ours, i))
    return a, b


class _Ops:
    """The four measured operations on one snapshot, cycling through `POOL` threads."""

    def __init__(self, cp: Any, raw: Any, state: Any, asynchronous: bool) -> None:
        self.tids = [f"thread-{i}" for i in range(POOL)]
        tid = self.tids.__getitem__
        if asynchronous:
            self.ours_save = lambda i: cp.save_state(tid(i % POOL), state)
            self.raw_save = lambda i: raw.asave(tid(i % POOL), state)
            self.ours_load = lambda i: cp.load_state(tid(i % POOL))
            self.raw_load = lambda i: raw.aload(tid(i % POOL))
        else:
            self.ours_save = lambda i: cp.save_state(tid(i % POOL), state)
            self.raw_save = lambda i: raw.save(tid(i % POOL), state)
            self.ours_load = lambda i: cp.load_state(tid(i % POOL))
            self.raw_load = lambda i: raw.load(tid(i % POOL))


def _rows(
    target: Target, mode: str, size: str, runs: dict[str, Runs], floor: str = "driver"
) -> list[dict[str, Any]]:
    return [
        {**_row(target, mode, "save", size, runs["ours_save"], runs["raw_save"]), "floor": floor},
        {**_row(target, mode, "load", size, runs["ours_load"], runs["raw_load"]), "floor": floor},
    ]


def _new_runs() -> dict[str, Runs]:
    return {key: Runs() for key in ("ours_save", "raw_save", "ours_load", "raw_load")}


def _measure_sync(
    target: Target,
    settings: Settings,
    cp: Any,
    raw: Any,
    floor: str,
    largest: int = 0,
    label: str = "as shipped",
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size_name, size in sizes_for(target).items():
        if largest and size > largest:
            continue
        state = make_state(size)
        n = _count(target, settings, size_name)
        ops = _Ops(cp, raw, state, asynchronous=False)
        for i in range(POOL + settings.warmup):
            ops.ours_save(i), ops.raw_save(i), ops.ours_load(i), ops.raw_load(i)
        if ops.ours_load(0) != state or ops.raw_load(0) != state:
            raise RuntimeError(f"{target.name}: a round trip changed the state")
        runs = _new_runs()
        for rep in range(settings.reps):
            settle()
            for a, b in (("ours_save", "raw_save"), ("ours_load", "raw_load")):
                ours, theirs = _interleave(n, rep, getattr(ops, a), getattr(ops, b))
                runs[a].add(ours)
                runs[b].add(theirs)
        rows += [{**row, "ours": label} for row in _rows(target, "sync", size_name, runs, floor)]
    return rows


def run_sync(target: Target, settings: Settings) -> list[dict[str, Any]]:
    ns_ours = new_namespace()
    floors = {"driver": new_namespace()}
    cp = target.sync(ns_ours)
    raw = target.raw(floors["driver"])
    rows: list[dict[str, Any]] = []
    try:
        rows += _measure_sync(target, settings, cp, raw, "driver")
        for label, options in target.ours_variants().items():
            floors[label] = new_namespace()
            tuned = target.sync(floors[label], **options)
            try:
                rows += _measure_sync(
                    target, settings, tuned, raw, "driver", SIZES["100KB"], label=label
                )
            finally:
                tuned.close()
        for label in target.raw_variants(ns_ours) if not settings.quick else ():
            floors[label] = new_namespace()
            variant = target.raw_variants(floors[label])[label]
            try:
                # Variants are a side comparison: up to 100 KB (moto refuses UpdateItem near
                # the item limit).
                rows += _measure_sync(target, settings, cp, variant, label, SIZES["100KB"])
            finally:
                variant.close()
    finally:
        cp.close()
        raw.close()
        target.cleanup(ns_ours)
        for namespace in floors.values():
            target.cleanup(namespace)
    return rows


async def _run_async(target: Target, settings: Settings) -> list[dict[str, Any]]:
    ns_ours, ns_raw = new_namespace(), new_namespace()
    cp = await target.async_(ns_ours)
    raw = await target.araw(ns_raw)
    rows: list[dict[str, Any]] = []
    try:
        for size_name, size in sizes_for(target).items():
            state = make_state(size)
            n = _count(target, settings, size_name)
            ops = _Ops(cp, raw, state, asynchronous=True)
            for i in range(POOL + settings.warmup):
                await ops.ours_save(i)
                await ops.raw_save(i)
                await ops.ours_load(i)
                await ops.raw_load(i)
            if await ops.ours_load(0) != state or await ops.raw_load(0) != state:
                raise RuntimeError(f"{target.name}: a round trip changed the state")
            runs = _new_runs()
            for rep in range(settings.reps):
                settle()
                for a, b in (("ours_save", "raw_save"), ("ours_load", "raw_load")):
                    ours, theirs = await _ainterleave(n, rep, getattr(ops, a), getattr(ops, b))
                    runs[a].add(ours)
                    runs[b].add(theirs)
            rows += _rows(target, "async", size_name, runs)
    finally:
        await cp.close()
        await raw.aclose()
        target.cleanup(ns_ours)
        target.cleanup(ns_raw)
    return rows


def run_async(target: Target, settings: Settings) -> list[dict[str, Any]]:
    return asyncio.run(_run_async(target, settings))


def run(target: Target, settings: Settings) -> list[dict[str, Any]]:
    return run_sync(target, settings) + run_async(target, settings)

"""What each layer of a SQLite save costs: the 10 KB save ratio with one layer taken out.

``python -m bench.ablation`` measures the sync SQLite save of a 10 KB snapshot against the raw
driver's, as the latency section does (ours and raw alternate call by call over 16 threads),
as shipped and with one layer taken out per variant. The variants take turns call by call in
one process (a layer is taken out by replacing one function or attribute of the library, and
put back for the next call), so the machine's drift and the process's own layout weigh on all
of them alike: a variant's ratio against the shipped one is what that layer costs. Each ratio
is the median save of the variant over the median raw save beside it; the figure is the
median over the rounds.

The variants are measurements, not configurations: each removes something a save needs (the
check that what is written can be read back, the fair admission gates, the check for event
listeners, the pool's checkout and return, running a one-statement save outside a
transaction). Nothing here is part of the library.

Usage: ``python -m bench.ablation [--rounds N] [--saves N]`` (saves per variant and round).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import TYPE_CHECKING, Any

from bench import raw as rawmod
from bench.common import make_state
from bench.stores import TABLE, SQLiteTarget

if TYPE_CHECKING:
    from collections.abc import Callable

THREADS = 16
VARIANTS = {
    "as shipped": "nothing taken out",
    "no read-back check": "the save does not parse its JSON back (fail closed)",
    "no admission gates": "no first-come-first-served gates for the pool and the writer",
    "no listener check": "the per-call check for event listeners answers 'none' at once",
    "one held connection": "one pooled connection kept checked out across calls",
    "BEGIN/COMMIT": "a one-statement save runs in a transaction, as before 2026-11-29",
}


def _switches(cp: Any) -> dict[str, Callable[[bool], None]]:
    """Per variant, a switch that takes its layer out (``True``) or puts it back (``False``)."""
    import agents_persistence._layout as layout_module
    from agents_persistence.repositories import _sql_ops, sql
    from agents_persistence.repositories._fair import NO_ADMISSION

    check, lean, alone = layout_module._check, sql.lean, _sql_ops._alone
    admission = cp._admission
    engine = cp.engine
    pooled = engine.raw_connection
    held = pooled()

    class Held:
        """The one connection, handed out again and again; its ``close`` keeps it out."""

        def __getattr__(self, name: str) -> Any:
            return getattr(held, name)

        def close(self) -> None:
            return None

    proxy = Held()

    def no_check(out: bool) -> None:
        layout_module._check = (lambda *args: None) if out else check  # type: ignore[assignment]

    def no_admission(out: bool) -> None:
        cp._admission = NO_ADMISSION if out else admission

    def no_lean_check(out: bool) -> None:
        sql.lean = (lambda engine: True) if out else lean  # type: ignore[attr-defined]

    def one_connection(out: bool) -> None:
        engine.raw_connection = (lambda: proxy) if out else pooled

    def in_transaction(out: bool) -> None:
        _sql_ops._alone = (lambda stmts, request: False) if out else alone

    return {
        "no read-back check": no_check,
        "no admission gates": no_admission,
        "no listener check": no_lean_check,
        "one held connection": one_connection,
        "BEGIN/COMMIT": in_transaction,
    }


def run(rounds: int, saves: int) -> dict[str, list[float]]:
    """Per variant, its ratio in each round (see the module)."""
    from agents_persistence import open_checkpointer

    target = SQLiteTarget()  # its file, in a folder of its own; the raw floor's pragmas
    cp = open_checkpointer(target.url, auto_migrate=True)
    raw = rawmod.RawSQLite(target.path, "raw", TABLE, pragmas=target.pragmas())
    switches: dict[str, Callable[[bool], None]] = {}
    try:
        switches = _switches(cp)
        variants = list(VARIANTS)
        state = make_state(10_000)
        threads = [f"thread-{i}" for i in range(THREADS)]
        for i in range(50):
            cp.save_state(threads[i % THREADS], state)
            raw.save(threads[i % THREADS], state)
        ratios: dict[str, list[float]] = {name: [] for name in variants}
        clock = time.perf_counter_ns
        for _ in range(rounds):
            ours: dict[str, list[int]] = {name: [] for name in variants}
            theirs: dict[str, list[int]] = {name: [] for name in variants}
            for i in range(saves * len(variants)):
                variant = variants[i % len(variants)]
                for name, switch in switches.items():
                    switch(name == variant)
                thread = threads[i % THREADS]
                start = clock()
                cp.save_state(thread, state)
                middle = clock()
                raw.save(thread, state)
                ours[variant].append(middle - start)
                theirs[variant].append(clock() - middle)
            for name in variants:
                median = statistics.median
                ratios[name].append(median(ours[name]) / median(theirs[name]))
        return ratios
    finally:
        for switch in switches.values():
            switch(False)
        cp.close()
        raw.close()
        target.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--saves", type=int, default=2000)
    args = parser.parse_args(argv)
    ratios = run(args.rounds, args.saves)
    shipped = statistics.median(ratios["as shipped"])
    print(f"SQLite, sync save of 10 KB, ours / raw (median of {args.rounds} rounds):")
    print("| variant | what is taken out | ratio | change | rounds |")
    print("|---|---|---|---|---|")
    for name, values in ratios.items():
        ratio = statistics.median(values)
        rounds = ", ".join(f"{value:.2f}" for value in values)
        print(f"| {name} | {VARIANTS[name]} | {ratio:.2f} | {ratio - shipped:+.2f} | {rounds} |")


if __name__ == "__main__":
    main()

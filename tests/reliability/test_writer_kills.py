"""Writers killed with SIGKILL mid-save leave no corrupt record and lose no acknowledged save.

Writer processes increment a few shared threads with ``expected_version`` and report each
acknowledged save on a pipe the moment it returns. The test kills writers at random moments
(most of a writer's time is spent inside a load or a save), replacing each with a fresh one,
then reads every thread back: it must decode, hold ``n == version``, and be at or past every
version acknowledged before the kills. The store must then still accept a save on every
thread (no lock or half-applied write left behind).
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import pytest

from ._workload import Ledger, increment, verify
from ._writers import WriterProcess
from .conftest import LONG, STORES, new_namespace

if TYPE_CHECKING:
    from ._results import Results
    from .conftest import Target

THREADS = [f"t{i}" for i in range(3)]
UNLIMITED = 2**31
# Quick: two writers, both killed. Long: four at once, each victim replaced, 40 kills.
QUICK = {"writers": 2, "kills": 2, "replace": False}
FULL = {"writers": 4, "kills": 40, "replace": True}
# Writer processes are slow to start on a small machine: the quick run kills writers of a
# file store and a server store; the long run covers every store.
QUICK_STORES = ["sqlite", "postgresql", "redis"]
CASES = [
    *(pytest.param(store, QUICK, id=f"{store}-quick") for store in QUICK_STORES),
    *(
        pytest.param(store, FULL, id=f"{store}-long", marks=[pytest.mark.reliability_long])
        for store in STORES
    ),
]


@pytest.mark.parametrize(("target", "scale"), CASES, indirect=["target"])
@pytest.mark.timeout(1800)
def test_writers_killed_mid_save_leave_every_ack_readable(
    target: Target, scale: dict[str, int], results: Results, request: pytest.FixtureRequest
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    namespace = new_namespace()
    options = {**target.options, "namespace": namespace}
    ledger = Ledger()
    spawned = 0

    def spawn() -> WriterProcess:
        nonlocal spawned
        spawned += 1
        return WriterProcess(
            target.url, options, THREADS, UNLIMITED, f"w{spawned}", ledger, seed=seed + spawned
        )

    live = [spawn() for _ in range(scale["writers"])]
    everyone = list(live)
    kills = 0
    try:
        while kills < scale["kills"] and live:
            victim = live.pop(rng.randrange(len(live)))
            assert victim.wait_first_ack(120), f"writer never saved: {victim.stderr()}"
            time.sleep(rng.uniform(0.0, 0.25))  # a random moment of its load-save loop
            victim.kill()
            kills += 1
            if scale["replace"] and kills < scale["kills"]:
                replacement = spawn()
                live.append(replacement)
                everyone.append(replacement)
    finally:
        for writer in everyone:
            writer.kill()
            writer.close()

    with target.open(namespace) as cp:
        verdict = verify(cp, ledger.highest(), THREADS)
        # Nothing is left locked or half-written: each thread takes one more save.
        after = {t: increment(cp, t, "after").version for t in THREADS if not verdict.unreadable}

    if request.node.get_closest_marker(LONG) is not None:
        results.long_run = True
    results.add(
        "Writer processes killed with SIGKILL mid-save",
        store=target.name,
        writers_at_once=scale["writers"],
        kills=kills,
        acked=len(ledger.acks),
        lost=len(verdict.lost),
        duplicate_wins=len(ledger.duplicates()),
        corrupt=len(verdict.unreadable),
        inconsistent=len(verdict.inconsistent),
        typed_errors=dict(ledger.errors) or 0,
        untyped=len(ledger.untyped),
        seed=seed,
    )
    assert ledger.untyped == []
    assert len(ledger.acks) >= kills  # every victim had saved before it was killed
    assert verdict.unreadable == []
    assert verdict.lost == []
    assert verdict.inconsistent == []
    assert ledger.duplicates() == []
    assert after == {t: verdict.versions[t] + 1 for t in THREADS}

"""Racing compare-and-set increments: every store ends with counter == version == wins.

Several writers load one thread, add 1 to its counter and save with ``expected_version``,
retrying on `ConflictError`, until the version reaches the target. If any update were lost
(two writers both winning one version), the counter would fall behind the number of
acknowledged saves. The quick case races threads of one process through one checkpointer;
the long case races separate processes, each with its own connections.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import pytest

from ._workload import Ledger, cas_loop
from ._writers import WriterProcess
from .conftest import LONG, new_namespace

if TYPE_CHECKING:
    from ._results import Results
    from .conftest import Target

QUICK = {"increments": 200, "workers": 4, "processes": False}
FULL = {"increments": 10_000, "workers": 4, "processes": True}
# moto serves one request at a time inside the test process: fewer racers, fewer retries.
QUICK_WORKERS = {"dynamodb": 2}


def race_threads(target: Target, namespace: str, increments: int, workers: int) -> Ledger:
    ledger = Ledger()
    cp = target.open(namespace)
    try:
        with ThreadPoolExecutor(workers) as pool:
            futures = [
                pool.submit(cas_loop, cp, "counter", f"w{w}", limit=increments, ledger=ledger)
                for w in range(workers)
            ]
            wins = [future.result() for future in futures]
    finally:
        cp.close()
    assert sum(wins) == len(ledger.acks)
    return ledger


def race_processes(target: Target, namespace: str, increments: int, workers: int) -> Ledger:
    ledger = Ledger()
    options = {**target.options, "namespace": namespace}
    writers = [
        WriterProcess(target.url, options, ["counter"], increments, f"p{w}", ledger, seed=w)
        for w in range(workers)
    ]
    try:
        for writer in writers:
            code = writer.wait(3600)
            assert code == 0, f"writer exited {code}: {writer.stderr()}"
    finally:
        for writer in writers:
            writer.close()
    wins = [writer.done[0] for writer in writers if writer.done is not None]
    assert len(wins) == workers, "a writer did not report its wins"
    assert sum(wins) == len(ledger.acks)
    return ledger


@pytest.mark.parametrize(
    "scale",
    [
        pytest.param(QUICK, id="quick"),
        pytest.param(FULL, id="long", marks=[pytest.mark.reliability_long]),
    ],
)
@pytest.mark.timeout(3600)
def test_racing_increments_lose_nothing(
    target: Target, scale: dict[str, int], results: Results, request: pytest.FixtureRequest
) -> None:
    namespace = new_namespace()
    increments, workers = scale["increments"], scale["workers"]
    if not scale["processes"]:
        workers = QUICK_WORKERS.get(target.name, workers)
    race = race_processes if scale["processes"] else race_threads
    started = time.monotonic()
    ledger = race(target, namespace, increments, workers)
    elapsed = time.monotonic() - started

    with target.open(namespace) as cp:
        final = cp.load_checkpoint("counter")
    assert final is not None
    assert not ledger.untyped, ledger.untyped
    assert ledger.duplicates() == []
    assert len(ledger.acks) == increments
    assert final.info.version == increments
    assert final.state.scratchpad["n"] == increments

    if request.node.get_closest_marker(LONG) is not None:
        results.long_run = True
    results.add(
        "Racing compare-and-set increments",
        store=target.name,
        writers=f"{workers} {'processes' if scale['processes'] else 'threads'}",
        acked=len(ledger.acks),
        final_version=final.info.version,
        counter=final.state.scratchpad["n"],
        lost=increments - final.state.scratchpad["n"],
        duplicate_wins=len(ledger.duplicates()),
        conflicts_retried=ledger.conflicts,
        typed_errors=dict(ledger.errors) or 0,
        untyped=len(ledger.untyped),
        wall_s=f"{elapsed:.1f}",
    )

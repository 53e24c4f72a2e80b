"""Racing writers: optimistic concurrency never loses an update."""

from __future__ import annotations

from typing import Any

from agents_persistence import AgentStateSnapshot, ConflictError

WORKERS = 8
ROUNDS = 3


def test_racing_writers_with_expected_version(cp: Any, harness: Any) -> None:
    cp.save_state("race", AgentStateSnapshot(scratchpad={"seen": []}))

    def writer(worker: int) -> tuple[int, int]:
        successes = conflicts = 0
        for round_ in range(ROUNDS):
            while True:
                checkpoint = cp.load_checkpoint("race")
                state = checkpoint.state.model_copy(deep=True)
                state.scratchpad["seen"].append(f"w{worker}r{round_}")
                try:
                    cp.save_state("race", state, expected_version=checkpoint.info.version)
                except ConflictError:
                    conflicts += 1
                    continue
                successes += 1
                break
        return successes, conflicts

    results = harness.race(WORKERS, writer)
    successes = sum(s for s, _ in results)
    final = cp.load_checkpoint("race")
    assert successes == WORKERS * ROUNDS
    assert final.info.version == 1 + successes
    expected = {f"w{w}r{r}" for w in range(WORKERS) for r in range(ROUNDS)}
    assert sorted(final.state.scratchpad["seen"]) == sorted(expected)


def test_racing_creators_exactly_one_wins(cp: Any, harness: Any) -> None:
    def creator(worker: int) -> bool:
        try:
            cp.save_state("once", AgentStateSnapshot(scratchpad={"w": worker}), expected_version=0)
        except ConflictError:
            return False
        return True

    wins = harness.race(WORKERS, creator)
    assert wins.count(True) == 1
    winner = wins.index(True)
    checkpoint = cp.load_checkpoint("once")
    assert checkpoint.info.version == 1
    assert checkpoint.state.scratchpad == {"w": winner}


def test_unconditional_racing_saves_each_get_a_version(cp: Any, harness: Any) -> None:
    def saver(worker: int) -> list[int]:
        return [
            cp.save_state("many", AgentStateSnapshot(scratchpad={"w": worker})).version
            for _ in range(ROUNDS)
        ]

    versions = [v for vs in harness.race(WORKERS, saver) for v in vs]
    assert sorted(versions) == list(range(1, WORKERS * ROUNDS + 1))
    assert cp.load_checkpoint("many").info.version == WORKERS * ROUNDS

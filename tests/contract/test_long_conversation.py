"""A long conversation on every store: what a save writes follows the change, never the state.

1,000 turns (200 in async mode) of change and save, loading every 25th turn (and after
another writer), each turn adding two messages, with a file rewritten every 10 turns, old
messages edited in the middle, the transcript summarised, restarts (a fresh checkpointer:
nothing remembered) and a second writer between saves (the first one's remembered base is
stale). Every load equals what was saved last, exactly.
"""

from __future__ import annotations

import random
from typing import Any

from agents_persistence import AgentMessage, AgentStateSnapshot, TodoItem

P = "agents_persistence."


def _turn(state: AgentStateSnapshot, turn: int, rng: random.Random) -> None:
    state.messages.append(AgentMessage.text("User", f"q{turn} " + "u" * rng.randrange(40, 120)))
    state.messages.append(AgentMessage.text("Agent", f"a{turn} " + "a" * rng.randrange(80, 300)))
    state.scratchpad["turn"] = turn
    state.todos[turn % len(state.todos)].status = ("pending", "in_progress", "completed")[turn % 3]
    if turn % 10 == 0:
        state.files[f"notes/{turn % 5}.md"] = f"rewritten at {turn}\n" + "f" * 2000
    if turn % 97 == 0:  # an edit deep in the transcript
        middle = state.messages[len(state.messages) // 2]
        middle.content.value = f"edited at turn {turn}"  # type: ignore[union-attr]
    if turn % 151 == 0:  # a summary replaces the older half
        half = len(state.messages) // 2
        state.messages[:half] = [AgentMessage.text("System", f"summary of {half} messages")]


def test_a_long_conversation_loads_exactly_what_was_saved(harness: Any, otel: Any) -> None:
    turns = 1000 if harness.mode == "sync" else 200
    rng = random.Random(12)
    cp = harness.make()
    state = AgentStateSnapshot(
        todos=[TodoItem(content=f"step {i}") for i in range(5)],
        files={f"notes/{i}.md": "f" * 2000 for i in range(5)},
    )
    version = cp.save_state("long", state, expected_version=0).version
    for turn in range(1, turns + 1):
        if turn % 50 == 0:  # a restart: the next save has nothing remembered
            cp = harness.make()
        if turn % 25 == 0 or turn % 37 == 1:  # else the turn goes on from the state it saved
            checkpoint = cp.load_checkpoint("long")
            assert checkpoint is not None
            assert checkpoint.info.version == version
            assert checkpoint.state == state, f"turn {turn}"
            state = checkpoint.state
        _turn(state, turn, rng)
        if turn % 37 == 0:  # another writer moves the thread; our remembered base is stale
            other = harness.make()
            moved = other.load_state("long")
            moved.scratchpad["other"] = turn
            other.save_state("long", moved)
            version += 1
            version = cp.save_state("long", state).version  # unconditional: ours wins, whole
        else:
            version = cp.save_state("long", state, expected_version=version).version
    final = harness.make().load_checkpoint("long")
    assert final is not None
    assert final.info.version == version
    assert final.state == state

    # What the late saves sent: a small part of the state, not the whole of it.
    saves = [
        s.attributes
        for s in otel.spans(harness.namespace)
        if s.attributes and s.attributes.get(P + "operation") == "save_state"
    ] or [
        s.attributes
        for s in otel.spans(harness.namespace)
        if s.attributes and str(s.name).startswith("save_state")
    ]
    late = [a for a in saves[-30:] if a.get(P + "write.size")]
    assert late, "saves report agents_persistence.write.size"
    small = [a for a in late if a[P + "write.size"] * 4 < a[P + "payload.size"]]
    assert len(small) >= len(late) // 2, [
        (a[P + "write.size"], a[P + "payload.size"]) for a in late
    ]

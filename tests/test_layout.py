"""The storage layout: a save writes what changed, and a load assembles exactly the state saved."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from agents_persistence import AgentMessage, AgentStateSnapshot, TodoItem
from agents_persistence._layout import (
    ENTRY_PIECE_BYTES,
    FANOUT,
    SMALL_STATE_BYTES,
    Layout,
    Manifest,
    assemble,
    splitter,
)
from agents_persistence.errors import CorruptStateError

SPLIT = splitter(AgentStateSnapshot)


class Stored:
    """A thread as a store keeps it: head, manifest and piece bodies (applied as stores do)."""

    def __init__(self) -> None:
        self.head = b""
        self.manifest: Manifest | None = None
        self.pieces: dict[str, bytes] = {}

    def save(self, state: BaseModel, base: Manifest | None = None) -> Layout:
        layout = SPLIT.split("t", state, base).against(self.manifest)
        if layout.base is None:
            self.pieces = dict(layout.pieces)
        else:
            for key in layout.drop:
                del self.pieces[key]
            self.pieces.update(layout.pieces)
        self.head, self.manifest = layout.head, layout.manifest
        return layout

    def load(self) -> AgentStateSnapshot:
        assert self.manifest is not None
        text = assemble("t", self.head, self.manifest, self.pieces)
        return AgentStateSnapshot.model_validate_json(text)


def _state(turns: int, files: int = 5) -> AgentStateSnapshot:
    state = AgentStateSnapshot(
        todos=[TodoItem(content="plan")],
        files={f"f{i}.md": "x" * 4000 for i in range(files)},
        scratchpad={"turn": 0},
    )
    for turn in range(turns):
        state.messages.append(AgentMessage.text("User", f"question {turn} " + "q" * 200))
        state.messages.append(AgentMessage.text("Agent", f"answer {turn} " + "a" * 300))
    return state


def test_an_appending_save_writes_only_the_new_messages_and_changed_parts() -> None:
    store = Stored()
    state = _state(100)
    first = store.save(state)
    assert first.base is None
    assert first.written > first.size  # everything, plus the manifest

    state.messages.append(AgentMessage.text("User", "one more"))
    state.messages.append(AgentMessage.text("Agent", "and a reply"))
    state.scratchpad["turn"] = 101
    delta = store.save(state, store.manifest)
    assert delta.base is not None
    segment = next(body for key, body in delta.pieces.items() if key.endswith(".t"))
    assert json.loads(b"[" + segment + b"]") == [
        m.model_dump(mode="json", exclude_none=True) for m in state.messages[-2:]
    ]
    assert len(delta.pieces) == 2  # the segment and the scratchpad's group: files unchanged
    assert delta.written < 2_000  # the segment, the small scratchpad group, head and manifest
    assert delta.drop == (first.manifest.maps["scratchpad"][""][0],)
    assert store.load() == state


def test_an_unchanged_file_is_not_rewritten_and_a_changed_one_is() -> None:
    store = Stored()
    state = _state(3)
    store.save(state)
    before = dict(store.manifest.maps["files"])  # type: ignore[union-attr]
    state.files["f2.md"] = "y" * 3000
    layout = store.save(state, store.manifest)
    after = layout.manifest.maps["files"]
    assert {name for name in after if after[name] != before[name]} == {".f2.md"}
    assert layout.drop == (before[".f2.md"][0],)
    assert store.load() == state

    del state.files["f3.md"]
    layout = store.save(state, store.manifest)
    assert layout.pieces == {}
    assert layout.drop == (after[".f3.md"][0],)
    assert store.load() == state


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: setattr(s.messages[10].content, "value", "edited"), id="edit"),
        pytest.param(lambda s: s.messages.__delitem__(slice(5, 9)), id="truncate"),
        pytest.param(lambda s: s.messages.__setitem__(slice(None), s.messages[-4:]), id="summary"),
        pytest.param(lambda s: s.messages.clear(), id="clear"),
    ],
)
def test_earlier_messages_changed_rewrite_the_transcript(change: Any) -> None:
    store = Stored()
    state = _state(20)
    store.save(state)
    state.messages.append(AgentMessage.text("User", "new"))
    change(state)
    layout = store.save(state, store.manifest)
    old_segments = {s[0] for s in layout.base.segments}  # type: ignore[union-attr]
    assert old_segments <= set(layout.drop)
    assert len(layout.manifest.segments) == (1 if state.messages else 0)
    assert store.load() == state


def test_segments_merge_in_tiers_so_they_never_pile_up() -> None:
    store = Stored()
    state = _state(1)
    store.save(state)
    written = []
    for turn in range(FANOUT**3 + 5):
        state.messages.append(AgentMessage.text("User", f"turn {turn:04} " + "m" * 100))
        written.append(store.save(state, store.manifest).written)
        assert store.manifest is not None
        levels = [segment[3] for segment in store.manifest.segments]
        assert levels == sorted(levels, reverse=True)  # older segments are the larger ones
        assert all(levels.count(level) < FANOUT for level in set(levels))
    assert store.load() == state
    assert set(store.pieces) == store.manifest.keys()  # nothing dropped is left behind
    assert len(store.manifest.segments) <= 4 * (FANOUT - 1) + 1
    # Most saves append one segment; merges rewrite a run of the newest segments only, so
    # each message is rewritten about once per level over its life.
    written.sort()
    assert written[len(written) // 2] < 2_000, written[len(written) // 2]
    assert sum(written) / len(written) < 3_000, sum(written) / len(written)


def test_a_delta_on_a_base_the_store_no_longer_holds_becomes_a_full_write() -> None:
    store, other = Stored(), Stored()
    state = _state(5)
    other.save(state)
    stale = other.manifest
    store.save(_state(2))
    state.messages.append(AgentMessage.text("User", "x"))
    layout = store.save(state, stale)
    assert layout.base is None
    assert store.load() == state


def test_the_size_is_the_assembled_length() -> None:
    for state in (AgentStateSnapshot(), _state(0), _state(7), _state(7, files=0)):
        layout = SPLIT.split("t", state, None)
        assert layout.size == len(assemble("t", layout.head, layout.manifest, layout.pieces))
        assert layout.size == len(state.model_dump_json().encode())


def test_a_missing_or_altered_piece_fails_closed() -> None:
    store = Stored()
    store.save(_state(4))
    assert store.manifest is not None
    segment = store.manifest.segments[0][0]
    body = store.pieces.pop(segment)
    with pytest.raises(CorruptStateError, match="missing"):
        store.load()
    store.pieces[segment] = body.replace(b"question", b"quest1on")
    with pytest.raises(CorruptStateError, match="digest"):
        store.load()
    store.pieces[segment] = body
    file_key = store.manifest.maps["files"][".f0.md"][0]
    store.pieces[file_key] = store.pieces[file_key][:-2] + b'z"'
    with pytest.raises(CorruptStateError, match="digest"):
        store.load()


def test_a_malformed_or_newer_manifest_is_corrupt() -> None:
    with pytest.raises(CorruptStateError, match="malformed"):
        Manifest.from_json("t", '{"f":1}')
    with pytest.raises(CorruptStateError, match="newer"):
        Manifest.from_json("t", '{"f":99}')
    manifest = SPLIT.split("t", _state(3), None).manifest
    assert Manifest.from_json("t", manifest.to_json()) == manifest


def test_a_small_state_is_one_head_until_it_grows() -> None:
    store = Stored()
    state = _state(3, files=1)
    layout = store.save(state)
    assert layout.size < SMALL_STATE_BYTES
    assert layout.pieces == {}
    assert layout.head == state.model_dump_json().encode()  # the whole state, as before
    while layout.size < SMALL_STATE_BYTES:
        state.messages.append(AgentMessage.text("User", "m" * 500))
        layout = store.save(state, store.manifest)
        assert store.load() == state
    assert layout.pieces  # past the threshold, split
    state.messages.clear()
    state.files.clear()
    store.save(state, store.manifest)
    assert store.load() == state


def test_other_state_models_are_stored_whole_in_the_head() -> None:
    class Other(BaseModel):
        messages: dict[str, int] = {}
        files: list[str] = []

    layout = splitter(Other).split("t", Other(messages={"a": 1}, files=["x"]), None)
    assert layout.pieces == {}
    assert json.loads(layout.head) == {"messages": {"a": 1}, "files": ["x"]}


_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 3), _TEXT),
        st.tuples(st.just("edit"), st.integers(0, 50), _TEXT),
        st.tuples(st.just("truncate"), st.integers(0, 50), st.just("")),
        st.tuples(st.just("file"), st.integers(0, 4), st.integers(0, 3000)),
        st.tuples(st.just("unfile"), st.integers(0, 4), st.just("")),
        st.tuples(st.just("pad"), _TEXT, st.integers(0, 2 * ENTRY_PIECE_BYTES)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS)
def test_any_sequence_of_changes_loads_back_equal(ops: list[tuple[str, Any, Any]]) -> None:
    store = Stored()
    state = _state(2, files=2)
    store.save(state)
    for op, a, b in ops:
        if op == "append":
            state.messages.extend(AgentMessage.text("User", b) for _ in range(a))
        elif op == "edit" and state.messages:
            state.messages[a % len(state.messages)].content.value = b  # type: ignore[union-attr]
        elif op == "truncate":
            del state.messages[a:]
        elif op == "file":
            state.files[f"f{a}.md"] = "z" * b
        elif op == "unfile":
            state.files.pop(f"f{a}.md", None)
        elif op == "pad":
            state.scratchpad[a] = "p" * b
        store.save(state, store.manifest)
        assert store.load() == state
        assert set(store.pieces) == store.manifest.keys()  # type: ignore[union-attr]


def test_large_pieces_are_compressed_and_a_damaged_frame_is_corrupt() -> None:
    from agents_persistence._layout import COMPRESS_BYTES, chunks, pack, unpack

    small = b'"k":"' + b"v" * 100 + b'"'
    assert pack(small) == small
    large = b",".join([b'{"role":"User","content":{"type":"Text","value":"hello"}}'] * 500)
    packed = pack(large)
    assert len(large) >= COMPRESS_BYTES
    assert len(packed) < len(large) / 10
    assert unpack("t", packed) == large
    assert unpack("t", small) == small
    with pytest.raises(CorruptStateError, match="decompress"):
        unpack("t", packed[:-3])
    assert b"".join(chunks(packed, 7)) == packed
    assert chunks(b"", 7) == [b""]


def test_a_small_state_on_a_small_base_is_a_delta_with_nothing_to_remove() -> None:
    store = Stored()
    state = _state(1, files=1)
    store.save(state)
    state.scratchpad["turn"] = 2
    layout = SPLIT.split("t", state, store.manifest)
    assert layout.base is store.manifest
    assert (layout.pieces, layout.drop) == ({}, ())
    assert layout.against(store.manifest) is layout
    full = layout.against("another token")
    assert full.base is None
    assert full.head == layout.head


def test_a_model_that_always_writes_its_transcript_round_trips_empty_and_full() -> None:
    class Always(BaseModel):
        messages: list[AgentMessage] = []
        files: dict[str, str] = {}
        note: str = "n" * 20_000  # above the one-head threshold

    split = splitter(Always)
    for state in (Always(), Always(messages=[AgentMessage.text("User", "hi")] * 3)):
        layout = split.split("t", state, None)
        text = assemble("t", layout.head, layout.manifest, layout.pieces)
        assert Always.model_validate_json(text) == state
        assert len(text) == layout.size

"""The Redis store's layout: a save sends what changed, a load reads record and pieces at once.

Byte counts come from a real client that adds up the arguments it sends (`Counting`), so they
measure what crosses the wire, compression included.
"""

from __future__ import annotations

import base64
import json
import os
import random
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio

from agents_persistence import (
    AgentMessage,
    AgentStateSnapshot,
    AsyncRedisCheckpointer,
    RedisCheckpointer,
    TodoItem,
)
from agents_persistence._layout import COMPRESS_BYTES, Manifest

from ..conftest import _ready
from ..kits.redis import KITS, RedisKit, pieces_key, thread_key

if TYPE_CHECKING:
    from ..support import Portal

KIT = next(kit for kit in KITS if kit.name == "redis")


class Counting(redis.Redis):  # type: ignore[type-arg]
    """A redis-py client that counts the bytes of the arguments it sends, and its calls."""

    sent = 0
    calls = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.calls += 1
        self.sent += sum(len(a) if isinstance(a, bytes | str) else 8 for a in args)
        return super().execute_command(*args, **options)

    def take(self) -> tuple[int, int]:
        """Bytes and calls since the last `take`."""
        taken = (self.sent, self.calls)
        self.sent = self.calls = 0
        return taken


@pytest.fixture
def kit() -> RedisKit:
    ready = _ready(KIT)
    assert isinstance(ready, RedisKit)
    return ready


@pytest.fixture
def ns(kit: RedisKit) -> Any:
    name = "l" + uuid.uuid4().hex[:16]
    yield name
    keys = list(kit.client.scan_iter(match=f"agents_persistence:{{{name}}}:*", count=1000))
    if keys:
        kit.client.delete(*keys)


@pytest.fixture
def counting(kit: RedisKit) -> Any:
    client = Counting.from_url(kit.url)
    yield client
    client.close()


def conversation(turns: int, files: int = 3) -> AgentStateSnapshot:
    state = AgentStateSnapshot(
        todos=[TodoItem(content="plan")],
        files={f"notes/{i}.md": f"file {i} " + "n" * 3000 for i in range(files)},
        scratchpad={"turn": turns},
    )
    for turn in range(turns):
        add_turn(state, turn)
    return state


def add_turn(state: AgentStateSnapshot, turn: int) -> None:
    state.messages.append(AgentMessage.text("User", f"question {turn} " + "q" * 480))
    state.messages.append(AgentMessage.text("Agent", f"answer {turn} " + "a" * 480))
    state.scratchpad["turn"] = turn


def stored_keys(kit: RedisKit, ns: str) -> set[str]:
    pattern = f"agents_persistence:{{{ns}}}:*"
    return {key.decode() for key in kit.client.scan_iter(match=pattern, count=1000)}


# -- a save sends what changed ---------------------------------------------------------------


def test_late_saves_of_a_long_conversation_send_only_the_new_turn(
    counting: Counting, ns: str
) -> None:
    cp = RedisCheckpointer(counting, namespace=ns, ttl=3600)
    state = conversation(0)
    sent: list[int] = []
    for turn in range(100):
        add_turn(state, turn)
        counting.take()
        cp.save_state("t", state)
        bytes_sent, calls = counting.take()
        assert calls == 1  # one script per save: the base is the stored version
        sent.append(bytes_sent)
    whole = len(state.model_dump_json())
    assert whole > 100_000
    # The first save sends everything; late ones the two new messages, the head and manifest.
    assert sent[0] > 9_000
    assert max(sent[50:]) < 6_000 < whole / 15
    assert cp.load_state("t") == state
    manifest = Manifest.from_json("t", counting.hget(thread_key(ns, "t"), "manifest"))
    assert manifest.count == 200


def test_a_load_is_one_round_trip_and_primes_the_next_delta(counting: Counting, ns: str) -> None:
    writer = RedisCheckpointer(counting, namespace=ns)
    state = conversation(30)
    writer.save_state("t", state)
    reader = RedisCheckpointer(counting, namespace=ns)
    counting.take()
    loaded = reader.load_state("t")
    assert loaded == state
    assert counting.take()[1] == 1
    assert loaded is not None
    add_turn(loaded, 30)
    reader.save_state("t", loaded, expected_version=1)
    bytes_sent, calls = counting.take()
    assert calls == 1
    assert bytes_sent < 5_000  # a delta on what it loaded
    assert writer.load_state("t") == loaded


@pytest.mark.parametrize(
    "change",
    ["edit an old message", "truncate", "summarise", "remove a file", "rewrite a file", "clear"],
)
def test_rewrites_load_exactly_what_was_saved(kit: RedisKit, ns: str, change: str) -> None:
    cp = RedisCheckpointer(kit.client, namespace=ns)
    state = conversation(20)
    cp.save_state("t", state)
    for turn in range(20, 25):
        add_turn(state, turn)
        cp.save_state("t", state)
    if change == "edit an old message":
        state.messages[3] = AgentMessage.text("Agent", "edited " + "e" * 600)
    elif change == "truncate":
        del state.messages[10:]
    elif change == "summarise":
        state.messages = [AgentMessage.text("System", "summary"), *state.messages[-4:]]
    elif change == "remove a file":
        del state.files["notes/1.md"]
    elif change == "rewrite a file":
        state.files["notes/2.md"] = "rewritten " + "r" * 5000
    else:
        state = AgentStateSnapshot()
    cp.save_state("t", state)
    assert cp.load_state("t") == state
    fresh = RedisCheckpointer(kit.client, namespace=ns)
    assert fresh.load_state("t") == state
    add_turn(state, 99)
    cp.save_state("t", state)
    assert fresh.load_state("t") == state
    # Only the pieces of the stored version are kept.
    manifest = Manifest.from_json("t", kit.client.hget(thread_key(ns, "t"), "manifest"))
    stored = {key.decode() for key in kit.client.hkeys(pieces_key(ns, "t"))}
    assert stored == manifest.keys()


def test_two_checkpointers_alternating_never_load_a_wrong_state(
    kit: RedisKit, counting: Counting, ns: str
) -> None:
    one = RedisCheckpointer(counting, namespace=ns)
    two = RedisCheckpointer(kit.client, namespace=ns)
    state = conversation(5)
    one.save_state("t", state)
    two.load_state("t")  # both now base their next save on version 1
    for turn in range(5, 25):
        add_turn(state, turn)
        writer = one if turn % 2 else two
        counting.take()
        writer.save_state("t", state)
        if writer is one and turn > 5:
            # Its base (its own last save) was replaced by the other: the delta is refused
            # and the whole state sent in the same call.
            assert counting.take()[1] == 2
        assert RedisCheckpointer(kit.client, namespace=ns).load_state("t") == state
        state.messages[turn] = AgentMessage.text("User", f"edited at {turn}")  # an old message


def test_a_save_abandoned_between_its_round_trips_leaves_the_previous_version(
    kit: RedisKit, ns: str
) -> None:
    one = RedisCheckpointer(kit.client, namespace=ns)
    two = RedisCheckpointer(kit.client, namespace=ns)
    state = conversation(5)
    one.save_state("t", state)
    newer = conversation(6)
    two.save_state("t", newer)
    add_turn(state, 7)
    request = one._core.prepare_write("t", state, None)
    plan = one._ops.write(request, "write-1", one._core.now())
    assert one._execute(next(plan))[0] == b"full"  # the delta's base is gone
    plan.close()  # the process dies before sending the whole state
    assert one.load_state("t") == newer
    assert one.save_state("t", state).version == 3
    assert two.load_state("t") == state


def test_pieces_left_beside_a_version_are_ignored_and_dropped_by_a_full_write(
    kit: RedisKit, ns: str
) -> None:
    cp = RedisCheckpointer(kit.client, namespace=ns)
    state = conversation(4)
    cp.save_state("t", state)
    kit.client.hset(pieces_key(ns, "t"), "stray.t", b'{"role":"User"}')
    assert cp.load_state("t") == state
    RedisCheckpointer(kit.client, namespace=ns).save_state("t", state)  # whole: no base
    assert b"stray.t" not in kit.client.hkeys(pieces_key(ns, "t"))


# -- records written before the layout ------------------------------------------------------


def write_old_record(kit: RedisKit, ns: str, thread_id: str, state: AgentStateSnapshot) -> None:
    """A record as the store wrote it before the layout: the whole state in ``state``."""
    micros = 1_700_000_000_000_000
    kit.client.hset(
        thread_key(ns, thread_id),
        mapping={
            "version": 4,
            "created_at": micros,
            "updated_at": micros + 10,
            "expires_at": "",
            "size": len(state.model_dump_json()),
            "state": state.model_dump_json(),
            "write_id": os.urandom(16).hex(),
        },
    )
    kit.client.zadd(f"agents_persistence:{{{ns}}}:updated", {thread_id: micros + 10})


def test_an_old_record_reads_and_its_next_save_converts_it(kit: RedisKit, ns: str) -> None:
    state = conversation(10)
    write_old_record(kit, ns, "t", state)
    cp = RedisCheckpointer(kit.client, namespace=ns)
    checkpoint = cp.load_checkpoint("t")
    assert checkpoint is not None
    assert checkpoint.state == state
    assert checkpoint.info.version == 4
    assert [t.thread_id for t in cp.list_threads().threads] == ["t"]
    add_turn(state, 10)
    assert cp.save_state("t", state, expected_version=4).version == 5
    record = kit.client.hgetall(thread_key(ns, "t"))
    manifest = Manifest.from_json("t", record[b"manifest"])
    assert manifest.count == 22
    assert len(record[b"state"]) < 100  # the head only
    assert {key.decode() for key in kit.client.hkeys(pieces_key(ns, "t"))} == manifest.keys()
    assert RedisCheckpointer(kit.client, namespace=ns).load_state("t") == state


def test_a_delta_over_a_record_rewritten_the_old_way_sends_the_whole_state(
    kit: RedisKit, ns: str
) -> None:
    cp = RedisCheckpointer(kit.client, namespace=ns)
    cp.save_state("t", conversation(3))
    older = conversation(8)
    # A process still running the previous version replaces the record (its script deleted
    # the hash and wrote every field it knew: no manifest).
    kit.client.delete(thread_key(ns, "t"))
    write_old_record(kit, ns, "t", older)
    assert cp.load_state("t") == older
    newer = conversation(9)
    assert cp.save_state("t", newer).version == 5
    assert cp.load_state("t") == newer


# -- size, compression, clients ---------------------------------------------------------------


def test_a_10_mb_state_saves_and_loads(kit: RedisKit, ns: str) -> None:
    rng = random.Random(12)

    def noise(size: int) -> str:
        return base64.b64encode(rng.randbytes(size * 3 // 4)).decode()

    state = AgentStateSnapshot(
        files={f"data/{i}.b64": noise(400_000) for i in range(15)},
        scratchpad={"blob": noise(50_000)},
    )
    state.messages = [AgentMessage.text("Tool", noise(20_000)) for _ in range(200)]
    assert len(state.model_dump_json()) > 10_000_000
    cp = RedisCheckpointer(kit.client, namespace=ns, ttl=600)
    cp.save_state("big", state)
    assert RedisCheckpointer(kit.client, namespace=ns).load_state("big") == state
    state.messages.append(AgentMessage.text("User", "and one more"))
    cp.save_state("big", state)
    assert RedisCheckpointer(kit.client, namespace=ns).load_state("big") == state
    assert 0 < kit.client.pttl(pieces_key(ns, "big")) <= 600_000


def test_large_pieces_are_stored_compressed(kit: RedisKit, ns: str) -> None:
    cp = RedisCheckpointer(kit.client, namespace=ns)
    state = AgentStateSnapshot(files={"a.md": "compressible " * 2_000})
    cp.save_state("t", state)
    (body,) = kit.client.hvals(pieces_key(ns, "t"))
    assert len(body) < COMPRESS_BYTES < len(state.files["a.md"])
    assert body.startswith(b"\x28\xb5\x2f\xfd")  # a zstd frame


@pytest.mark.parametrize("options", [{"decode_responses": True}, {"protocol": 3}])
def test_clients_that_decode_replies_read_compressed_pieces(
    kit: RedisKit, ns: str, options: Any
) -> None:
    state = conversation(40)
    RedisCheckpointer(kit.client, namespace=ns).save_state("t", state)
    with redis.Redis.from_url(kit.url, **options) as client:
        cp = RedisCheckpointer(client, namespace=ns)
        assert cp.load_state("t") == state
        add_turn(state, 40)
        cp.save_state("t", state)
        assert cp.load_state("t") == state


def test_thousands_of_pieces_in_one_save_and_one_drop(kit: RedisKit, ns: str) -> None:
    cp = RedisCheckpointer(kit.client, namespace=ns)
    state = AgentStateSnapshot(files={f"f{i}": f"{i} " + "y" * 1_100 for i in range(1_500)})
    cp.save_state("t", state)
    assert kit.client.hlen(pieces_key(ns, "t")) == 1_500
    assert cp.load_state("t") == state
    state.files = {"only": "z"}
    cp.save_state("t", state)  # a delta dropping 1,500 pieces
    assert kit.client.hlen(pieces_key(ns, "t")) == 1
    assert cp.load_state("t") == state


# -- delete, expiry, restore ----------------------------------------------------------------


def test_delete_restore_and_purge_remove_the_pieces(kit: RedisKit, ns: str) -> None:
    cp = RedisCheckpointer(kit.client, namespace=ns, ttl=60)
    state = conversation(10)
    info = cp.save_state("t", state)
    assert pieces_key(ns, "t") in stored_keys(kit, ns)
    assert cp.delete_thread("t") is True
    assert stored_keys(kit, ns) == set()
    cp.restore_checkpoint("t", state, info)
    assert cp.load_state("t") == state
    manifest = Manifest.from_json("t", kit.client.hget(thread_key(ns, "t"), "manifest"))
    assert {key.decode() for key in kit.client.hkeys(pieces_key(ns, "t"))} == manifest.keys()
    # Logically expired: the pieces go with the record at the purge.
    kit.client.hset(thread_key(ns, "t"), "expires_at", 1)
    kit.client.zadd(f"agents_persistence:{{{ns}}}:expires", {"t": 1})
    assert cp.load_state("t") is None
    assert cp.purge_expired() == 1
    assert stored_keys(kit, ns) == set()


def test_an_expired_thread_saved_again_starts_over_whole(kit: RedisKit, ns: str) -> None:
    cp = RedisCheckpointer(kit.client, namespace=ns, ttl=60)
    cp.save_state("t", conversation(5))
    kit.client.hset(thread_key(ns, "t"), "expires_at", 1)  # logically expired, still stored
    state = conversation(6)
    assert cp.save_state("t", state).version == 1
    assert cp.load_state("t") == state
    manifest = Manifest.from_json("t", kit.client.hget(thread_key(ns, "t"), "manifest"))
    assert {key.decode() for key in kit.client.hkeys(pieces_key(ns, "t"))} == manifest.keys()


def test_the_async_twin_sends_deltas_and_reads_what_the_sync_one_wrote(
    kit: RedisKit, ns: str, portal: Portal
) -> None:
    state = conversation(10)
    RedisCheckpointer(kit.client, namespace=ns).save_state("t", state)

    async def scenario() -> tuple[AgentStateSnapshot | None, int]:
        async with AsyncRedisCheckpointer.from_url(kit.url, namespace=ns) as cp:
            loaded = await cp.load_state("t")
            assert loaded is not None
            add_turn(loaded, 10)
            info = await cp.save_state("t", loaded, expected_version=1)
            return loaded, info.version

    loaded, version = portal.call(scenario)
    assert version == 2
    assert RedisCheckpointer(kit.client, namespace=ns).load_state("t") == loaded
    segments = json.loads(kit.client.hget(thread_key(ns, "t"), "manifest"))["s"]
    assert len(segments) == 2  # the loaded transcript, then the appended turn

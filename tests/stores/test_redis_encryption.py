"""Encryption at rest on Redis: what the hashes hold, and the store's own paths under keys.

The contract suite runs in full on the ``redis+encrypted`` kit; these tests cover what is the
Redis store's own: the sealed head in the ``state`` field beside a redacted ``manifest`` that
the write script still reads its delta token from, a delta retried as a full write, clients
that decode responses, records stored whole before the layout, and Redis Cluster.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import pytest
import redis

from agents_persistence import (
    AgentStateSnapshot,
    AsyncRedisCheckpointer,
    DecryptionError,
    RedisCheckpointer,
    open_checkpointer,
)
from agents_persistence._codec import is_sealed
from agents_persistence._layout import Manifest

from ..conftest import _ready
from ..kits.encrypted import keyring
from ..kits.redis import KITS, RedisClusterKit, RedisKit, pieces_key, thread_key
from .test_redis_layout import Counting, add_turn, conversation

if TYPE_CHECKING:
    from ..support import Portal

KIT = next(kit for kit in KITS if kit.name == "redis")
CLUSTER_KIT = next(kit for kit in KITS if kit.name == "redis-cluster")
SECRET = "confidential-5e1f"


@pytest.fixture
def kit() -> RedisKit:
    ready = _ready(KIT)
    assert isinstance(ready, RedisKit)
    return ready


@pytest.fixture
def ns(kit: RedisKit) -> Any:
    name = "e" + uuid.uuid4().hex[:16]
    yield name
    keys = list(kit.client.scan_iter(match=f"agents_persistence:{{{name}}}:*", count=1000))
    if keys:
        kit.client.delete(*keys)


@pytest.fixture
def counting(kit: RedisKit) -> Any:
    client = Counting.from_url(kit.url)
    yield client
    client.close()


def secret_conversation(turns: int) -> AgentStateSnapshot:
    """A conversation whose file paths and scratchpad keys (manifest entries) are secret."""
    state = conversation(turns)
    state.files[f"{SECRET}/plan.md"] = "p" * 3000
    state.scratchpad[f"{SECRET}-key"] = "s" * 3000
    return state


def stored(client: Any, ns: str, thread_id: str) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """The thread's record hash and pieces hash, raw."""
    return client.hgetall(thread_key(ns, thread_id)), client.hgetall(pieces_key(ns, thread_id))


def test_the_head_is_sealed_beside_a_redacted_manifest(kit: RedisKit, ns: str) -> None:
    cp = RedisCheckpointer(kit.client, namespace=ns, keys=keyring())
    state = secret_conversation(10)
    cp.save_state("t", state)
    record, pieces = stored(kit.client, ns, "t")
    assert is_sealed(record[b"state"])
    with pytest.raises(UnicodeDecodeError):
        record[b"state"].decode()
    assert pieces
    assert all(is_sealed(body) for body in pieces.values())
    clear = Manifest.from_json("t", record[b"manifest"])
    assert clear.keys() == {key.decode() for key in pieces}
    # Neither the manifest kept in clear nor anything else stored names a file or a key.
    everything = b"".join([*record.values(), *pieces.keys(), *pieces.values()])
    assert SECRET.encode() not in everything
    assert cp.load_state("t") == state


def test_a_sealed_delta_sends_only_what_changed(counting: Counting, ns: str) -> None:
    cp = RedisCheckpointer(counting, namespace=ns, keys=keyring())
    state = secret_conversation(20)
    cp.save_state("t", state)
    _, before = stored(counting, ns, "t")
    add_turn(state, 20)
    counting.take()
    cp.save_state("t", state, expected_version=1)
    bytes_sent, calls = counting.take()
    assert calls == 1  # the script found the base token in the redacted manifest
    assert bytes_sent < 6_000 < len(state.model_dump_json()) / 3
    _, after = stored(counting, ns, "t")
    kept = set(before) & set(after)
    assert kept
    assert all(before[key] == after[key] for key in kept)  # untouched pieces keep their seal
    assert RedisCheckpointer(counting, namespace=ns, keys=keyring()).load_state("t") == state


def test_a_delta_on_a_moved_base_is_resent_whole_and_sealed(counting: Counting, ns: str) -> None:
    mine = RedisCheckpointer(counting, namespace=ns, keys=keyring())
    theirs = RedisCheckpointer(counting, namespace=ns, keys=keyring())
    state = secret_conversation(20)
    mine.save_state("t", state)  # mine's next save is a delta on this version
    other = secret_conversation(5)
    theirs.save_state("t", other, expected_version=1)
    _, between = stored(counting, ns, "t")
    add_turn(state, 20)
    counting.take()
    assert mine.save_state("t", state).version == 3
    assert counting.take()[1] == 2  # the delta, refused by the script, then the full form
    record, pieces = stored(counting, ns, "t")
    assert is_sealed(record[b"state"])
    assert all(is_sealed(body) for body in pieces.values())
    assert set(Manifest.from_json("t", record[b"manifest"]).keys()) == {k.decode() for k in pieces}
    assert not set(between.items()) & set(pieces.items())  # every piece written anew
    reader = RedisCheckpointer(counting, namespace=ns, keys=keyring())
    assert reader.load_state("t") == state
    assert reader.refresh_thread("t") == "current"


def test_clients_that_decode_responses_read_sealed_heads(
    kit: RedisKit, ns: str, portal: Portal
) -> None:
    decoding = redis.Redis.from_url(kit.url, decode_responses=True)
    try:
        cp = RedisCheckpointer(decoding, namespace=ns, keys=keyring())
        state = secret_conversation(8)
        cp.save_state("t", state)
        assert cp.load_state("t") == state
        add_turn(state, 8)
        cp.save_state("t", state, expected_version=1)
    finally:
        decoding.close()

    async def scenario() -> AgentStateSnapshot | None:
        options = {"decode_responses": True}
        async with AsyncRedisCheckpointer.from_url(
            kit.url, namespace=ns, keys=keyring(), client_options=options
        ) as acp:
            return await acp.load_state("t")

    assert portal.call(scenario) == state


def test_a_record_stored_whole_loads_with_keys_and_is_then_sealed(kit: RedisKit, ns: str) -> None:
    state = AgentStateSnapshot(scratchpad={"note": SECRET})
    kit.client.hset(
        thread_key(ns, "t"),
        mapping={
            "version": 4,
            "created_at": 1_700_000_000_000_000,
            "updated_at": 1_700_000_000_000_000,
            "size": 100,
            "state": state.model_dump_json(),
        },
    )
    kit.client.zadd(f"agents_persistence:{{{ns}}}:updated", {"t": 1_700_000_000_000_000})
    cp = RedisCheckpointer(kit.client, namespace=ns, keys=keyring())
    assert cp.load_state("t") == state
    assert cp.refresh_thread("t") == "rewritten"
    record, _ = stored(kit.client, ns, "t")
    assert is_sealed(record[b"state"])
    assert record[b"version"] == b"4"
    assert cp.load_state("t") == state
    with pytest.raises(DecryptionError):
        RedisCheckpointer(kit.client, namespace=ns).load_state("t")


def test_plaintext_records_keep_their_exact_form_without_keys(kit: RedisKit, ns: str) -> None:
    cp = RedisCheckpointer(kit.client, namespace=ns)
    state = secret_conversation(10)
    cp.save_state("t", state)
    record, pieces = stored(kit.client, ns, "t")
    assert json.loads(record[b"state"])["todos"][0]["content"] == "plan"
    assert Manifest.from_json("t", record[b"manifest"]).to_json().encode() == record[b"manifest"]
    assert not any(is_sealed(body) for body in pieces.values())
    # A checkpointer with keys reads them, and its refresh seals them in place.
    sealed = RedisCheckpointer(kit.client, namespace=ns, keys=keyring())
    assert sealed.load_state("t") == state
    assert sealed.refresh_thread("t") == "rewritten"
    assert is_sealed(stored(kit.client, ns, "t")[0][b"state"])
    assert sealed.load_state("t") == state


def test_threads_copy_between_a_sealed_and_a_plaintext_namespace(kit: RedisKit, ns: str) -> None:
    """What ``agents-persistence copy`` does, thread by thread, across the two forms."""
    source = RedisCheckpointer(kit.client, namespace=ns, keys=keyring())
    state = secret_conversation(10)
    source.save_state("t", state)
    add_turn(state, 10)
    source.save_state("t", state, expected_version=1)
    plain_ns, sealed_ns = f"{ns}-plain", f"{ns}-sealed"
    try:
        plain = RedisCheckpointer(kit.client, namespace=plain_ns)
        with open_checkpointer(kit.url, namespace=sealed_ns, keys=keyring("k2")) as sealed:
            for src, dst in ((source, plain), (plain, sealed)):
                for thread in src.iter_threads():
                    checkpoint = src.load_checkpoint(thread.thread_id)
                    assert checkpoint is not None
                    dst.restore_checkpoint(thread.thread_id, checkpoint.state, checkpoint.info)
            copied = sealed.load_checkpoint("t")
        assert copied is not None
        assert copied.state == state
        assert copied.info == source.load_checkpoint("t").info  # type: ignore[union-attr]
        assert not is_sealed(stored(kit.client, plain_ns, "t")[0][b"state"])
        record, pieces = stored(kit.client, sealed_ns, "t")
        assert all(is_sealed(value) for value in [record[b"state"], *pieces.values()])
    finally:
        for name in (plain_ns, sealed_ns):
            keys = list(kit.client.scan_iter(match=f"agents_persistence:{{{name}}}:*"))
            if keys:
                kit.client.delete(*keys)


def test_sealed_threads_on_a_cluster(portal: Portal) -> None:
    cluster = _ready(CLUSTER_KIT)
    assert isinstance(cluster, RedisClusterKit)
    ns = "e" + uuid.uuid4().hex[:12]
    cp = RedisCheckpointer(cluster.client, namespace=ns, keys=keyring(), ttl=600)
    state = secret_conversation(10)
    cp.save_state("t", state)
    add_turn(state, 10)
    cp.save_state("t", state, expected_version=1)
    assert is_sealed(cluster.client.hget(thread_key(ns, "t"), "state"))

    async def scenario() -> AgentStateSnapshot | None:
        async with AsyncRedisCheckpointer.from_url(
            cluster.url, namespace=ns, keys=keyring()
        ) as acp:
            loaded = await acp.load_state("t")
            assert loaded is not None
            add_turn(loaded, 11)
            await acp.save_state("t", loaded, expected_version=2)
            return loaded

    saved = portal.call(scenario)
    assert cp.load_state("t") == saved
    listing = RedisCheckpointer(cluster.client, namespace=ns).list_threads()  # without keys
    assert [thread.thread_id for thread in listing.threads] == ["t"]
    assert cp.delete_thread("t")

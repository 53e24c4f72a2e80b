"""The redis-om record model is the single source of the Redis record.

The hash's fields, their codecs and the Lua scripts' field lists are all read from the model:
these tests read the model and check the scripts and the stored hashes against it, and change
a test-built model to see the scripts and the records change with it.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
import redis_om

from agents_persistence import (
    AgentStateSnapshot,
    ConfigurationError,
    CorruptStateError,
    RedisCheckpointer,
)
from agents_persistence.models.redis import (
    FIELDS,
    CheckpointHash,
    KeyLayout,
    checkpoint_model,
    hash_fields,
)
from agents_persistence.repositories._redis_mapping import RecordMapping
from agents_persistence.repositories._redis_ops import RedisOps

from ..conftest import _ready
from ..kits.redis import KITS, RedisKit, thread_key

if TYPE_CHECKING:
    from agents_persistence.repositories._redis_lua import Scripts

KIT = next(kit for kit in KITS if kit.name == "redis")


@pytest.fixture
def client() -> Any:
    ready = _ready(KIT)
    assert isinstance(ready, RedisKit)
    return ready.client


@pytest.fixture
def ns() -> str:
    return "m" + uuid.uuid4().hex[:16]


_QUOTED = re.compile(r"'([A-Za-z_][A-Za-z0-9_]*)'")
_HASH_READ = re.compile(r"redis\.call\('(?:HMGET|HGET)', [^,]+, ([^)]*)\)")
_NAME_TEST = re.compile(r"name == ('[A-Za-z_][A-Za-z0-9_]*')")


def hash_fields_named(scripts: Scripts) -> set[str]:
    """Every hash field a script names: read with HGET/HMGET, or picked out of the pairs."""
    names: set[str] = set()
    for script in (scripts.write, scripts.read, scripts.remove, scripts.page, scripts.purge):
        for arguments in _HASH_READ.findall(script.source):
            names.update(_QUOTED.findall(arguments))
        for quoted in _NAME_TEST.findall(script.source):
            names.update(_QUOTED.findall(quoted))
    return names


def page_fields(scripts: Scripts) -> list[str]:
    (arguments,) = re.findall(r"redis\.call\('HMGET', key, ([^)]*)\)", scripts.page.source)
    return _QUOTED.findall(arguments)


def test_fields_are_the_models_own() -> None:
    model_fields = list(CheckpointHash.model_fields)
    assert model_fields[0] == "thread_id"  # the primary key: in the key, never stored
    assert FIELDS == tuple(model_fields[1:]) == hash_fields(CheckpointHash)
    mapping = RecordMapping.of(CheckpointHash)
    assert mapping.fields == FIELDS
    unlisted = set(CheckpointHash.unlisted_fields)
    assert [codec.name for codec in mapping.listed] == [f for f in FIELDS if f not in unlisted]


def test_every_field_the_scripts_touch_is_a_model_field() -> None:
    mapping = RecordMapping.of(CheckpointHash)
    named = hash_fields_named(mapping.scripts)
    assert named <= set(FIELDS)
    assert page_fields(mapping.scripts) == [codec.name for codec in mapping.listed]
    # The write script stores every field: the ones it decides itself plus the pairs it is given.
    assert {"version", "created_at", "expires_at", "write_id", "manifest"} <= named


def test_a_save_stores_exactly_the_model_fields(client: Any, ns: str) -> None:
    cp = RedisCheckpointer(client, namespace=ns, ttl=60)
    cp.save_state("t", AgentStateSnapshot(files={"big.txt": "x" * 500}))
    stored = {name.decode() for name in client.hgetall(thread_key(ns, "t"))}
    assert stored == set(FIELDS)
    client.delete(*client.keys(f"agents_persistence:{{{ns}}}:*"))


class _Extended(CheckpointHash):
    """A test-built record with one more listed field and one more unlisted field."""

    priority: int = 7
    note: str | None = None

    unlisted_fields: ClassVar[tuple[str, ...]] = ("state", "write_id", "manifest", "note")


class _Renamed(redis_om.HashModel, index=False):  # type: ignore[misc,call-arg]
    """A test-built record whose version field has another name."""

    thread_id: str = redis_om.Field(primary_key=True)
    revision: int
    created_at: int
    updated_at: int
    expires_at: int | None = None
    size: int
    state: str = ""
    write_id: str = ""
    manifest: str = ""
    unlisted_fields: ClassVar[tuple[str, ...]] = ("state", "write_id", "manifest")

    class Meta:
        database = CheckpointHash.Meta.database


def test_the_scripts_follow_a_changed_model() -> None:
    base = RecordMapping.of(CheckpointHash)
    extended = RecordMapping.of(_Extended)
    assert extended.fields == (*FIELDS, "priority", "note")
    assert page_fields(extended.scripts) == [*page_fields(base.scripts), "priority"]
    assert extended.scripts.page.sha != base.scripts.page.sha
    with pytest.raises(ConfigurationError, match="'version'"):
        RecordMapping.of(_Renamed)


def test_a_field_type_the_store_cannot_write_is_refused() -> None:
    class Odd(CheckpointHash):
        tags: float = 0.0

    with pytest.raises(ConfigurationError, match="tags"):
        RecordMapping.of(Odd)


def test_a_text_or_bytes_field_keeps_bytes_that_are_not_text() -> None:
    # The model's state field: the head's JSON text, or a sealed head (never UTF-8).
    assert CheckpointHash.model_fields["state"].annotation == str | bytes
    (state,) = (c for c in RecordMapping.of(CheckpointHash).codecs if c.name == "state")
    sealed = b"\xf5\x01" + bytes(range(256))
    assert state.encode(sealed) is sealed
    assert state.encode('{"a":1}') == '{"a":1}'
    assert state.decode(sealed) == sealed
    assert state.decode('{"é":1}'.encode()) == '{"é":1}'


def test_a_test_built_model_drives_what_is_stored_and_listed(client: Any, ns: str) -> None:
    cp = RedisCheckpointer(client, namespace=ns)
    mapping = RecordMapping.of(_Extended)
    cp._ops = RedisOps(mapping, cp._ops.layout, cp._ops.codec)
    info = cp.save_state("t", AgentStateSnapshot(scratchpad={"n": 1}))
    stored = {k.decode(): v.decode() for k, v in client.hgetall(thread_key(ns, "t")).items()}
    assert set(stored) == set(mapping.fields)  # a hash's field order is Redis's business
    assert stored["priority"] == "7"
    assert stored["note"] == ""  # None, as redis-om writes it
    assert [thread.thread_id for thread in cp.list_threads().threads] == ["t"]
    assert cp.load_checkpoint("t").info == info
    client.hset(thread_key(ns, "t"), "priority", "not a number")
    with pytest.raises(CorruptStateError, match="priority"):
        cp.load_state("t")
    client.delete(*client.keys(f"agents_persistence:{{{ns}}}:*"))


def test_namespace_models_are_cached_and_distinct() -> None:
    first = checkpoint_model("app", "tenant-1")
    assert checkpoint_model("app", "tenant-1") is first
    other = checkpoint_model("app", "tenant-2")
    assert other is not first
    assert first.__qualname__ != other.__qualname__
    assert issubclass(first, CheckpointHash)
    assert hash_fields(first) == FIELDS  # a namespace model changes keys, never fields
    layout = KeyLayout.of(first, key_prefix="app", namespace="tenant-1")
    assert layout.thread_key("t") == "app:{tenant-1}:thread:t"


def test_checkpointers_share_one_mapping(client: Any) -> None:
    one = RedisCheckpointer(client, namespace="a")
    two = RedisCheckpointer(client, namespace="b", key_prefix="other")
    assert one._ops.mapping is two._ops.mapping is RecordMapping.of(CheckpointHash)


def test_the_model_is_not_bound_to_a_client() -> None:
    with pytest.raises(ConfigurationError, match="RedisCheckpointer"):
        checkpoint_model("app", "x").db().ping()

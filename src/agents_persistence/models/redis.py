"""The Redis record: one redis-om `HashModel`, declared once, and the keys around it.

One thread is one record hash plus a hash of its pieces. The record's fields are its metadata
beside the state's head (the JSON object of every field but the transcript and the large maps)
and the manifest naming the pieces of the version (`agents_persistence._layout`). A small state
is one head whose manifest names no piece (no pieces hash); a record without a manifest was
written whole, before that layout, and its ``state`` is the whole state too. Written with
keys (encryption at rest), ``state`` is the sealed head instead: bytes that are never UTF-8,
which hold the whole manifest, while ``manifest`` keeps only its redacted form in clear.
Timestamps are integer microseconds since the Unix epoch (UTC), so they keep their precision
(redis-om's own datetime fields are float seconds, which cannot hold every microsecond).

`CheckpointHash` is the single declaration of those fields: the store derives from it
the hash's field names and order, how each value is written and read (its annotation), and the
field lists of its Lua scripts. Each (key prefix, namespace) gets a subclass that only changes
the key layout (`checkpoint_model`, cached), so the fields exist once.

Key layout, for ``key_prefix="agents_persistence"`` and ``namespace="default"``::

    agents_persistence:{default}:thread:<thread_id>   hash: one thread's record
    agents_persistence:{default}:pieces:<thread_id>   hash: its pieces, piece key -> body
    agents_persistence:{default}:updated              sorted set: thread id by updated_at
    agents_persistence:{default}:expires              sorted set: thread id by expires_at

The braces are a Redis Cluster hash tag: every key of a namespace hashes to the same slot, so
one Lua script can update a record, its pieces and both indexes atomically on a cluster too.
The pieces have a key of their own, not the record's key plus a suffix, which could be the
record key of another thread id. No I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar, NoReturn

import redis_om

from agents_persistence.errors import ConfigurationError

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "FIELDS",
    "KeyLayout",
    "CheckpointHash",
    "hash_fields",
    "checkpoint_model",
    "validate_key_prefix",
]

DEFAULT_KEY_PREFIX = "agents_persistence"
_KEY_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.-]+)*")
_MAX_KEY_PREFIX = 64
_MODELS_CACHED = 1024
"""Most namespace models kept; one beyond it is simply built again when next needed."""


class _Unbound:
    """``Meta.database`` of the record models: they describe records, the store does the I/O.

    Given so that redis-om does not open a default connection of its own for every model class;
    any use of redis-om's own I/O on a record model fails with this message.
    """

    def __getattr__(self, name: str) -> NoReturn:
        raise ConfigurationError(
            "the Redis record model is not bound to a client: read and write records through"
            " RedisCheckpointer / AsyncRedisCheckpointer"
        )


class CheckpointHash(redis_om.HashModel, index=False):  # type: ignore[misc,call-arg]
    """One thread's record: the hash fields, their types, and the key of the default namespace.

    The primary key ``thread_id`` is part of the key, not a stored field. The model is
    deliberately not indexed: RediSearch is not required, and redis-om's own ``save()`` (which
    needs an indexed model) would bypass the version check and the listing indexes, so it
    refuses to run. Records are written by the store's Lua scripts only.
    """

    thread_id: str = redis_om.Field(primary_key=True)
    version: int
    created_at: int
    updated_at: int
    expires_at: int | None = None
    size: int
    state: str | bytes = ""
    """The state's head: its JSON text or, written with keys, the sealed head (bytes)."""
    write_id: str = ""
    manifest: str = ""

    unlisted_fields: ClassVar[tuple[str, ...]] = ("state", "write_id", "manifest")
    """The fields a listing does not read: the state's head, the id of the save, the manifest."""

    class Meta:
        """Key layout of the default key prefix and namespace; see `checkpoint_model`."""

        global_key_prefix = DEFAULT_KEY_PREFIX
        model_key_prefix = "{default}:thread"
        database = _Unbound()


def hash_fields(model: type[Any]) -> tuple[str, ...]:
    """The stored hash fields of a record model, in declaration order (its primary key left out).

    Read through pydantic's public ``model_fields``; redis-om marks the primary key's field info.
    """
    return tuple(
        name
        for name, info in model.model_fields.items()
        if getattr(info, "primary_key", False) is not True
    )


FIELDS = hash_fields(CheckpointHash)
"""The hash fields of a record, in the order the model declares them."""


def validate_key_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a valid key prefix, else raise `ConfigurationError`.

    A prefix is 1 to 64 of ``A-Z a-z 0-9 _ . -`` in ``:``-separated parts; braces are refused
    because they would move the cluster hash tag.
    """
    if (
        not isinstance(prefix, str)
        or len(prefix) > _MAX_KEY_PREFIX
        or not _KEY_PREFIX_RE.fullmatch(prefix)
    ):
        raise ConfigurationError(
            f"invalid key_prefix {prefix!r:.80}: use up to {_MAX_KEY_PREFIX} of"
            " A-Z a-z 0-9 _ . - in parts separated by single colons"
        )
    return prefix


@lru_cache(maxsize=_MODELS_CACHED)
def checkpoint_model(key_prefix: str, namespace: str) -> type[CheckpointHash]:
    """The record model of one namespace: `CheckpointHash` with that namespace's keys.

    Args:
        key_prefix: Validated key prefix (see `validate_key_prefix`).
        namespace: Validated namespace; it becomes the cluster hash tag.

    Returns:
        A subclass that adds no field, only its key layout. Built once per (key prefix,
        namespace) and cached; each has its own ``__qualname__``, so several never overwrite
        each other in redis-om's model registry.
    """
    meta = type(
        "Meta",
        (),
        {
            "global_key_prefix": key_prefix,
            "model_key_prefix": f"{{{namespace}}}:thread",
            "database": CheckpointHash.Meta.database,
        },
    )
    name = CheckpointHash.__name__
    return type(
        name,
        (CheckpointHash,),
        {
            "Meta": meta,
            "__module__": __name__,
            "__qualname__": f"{name}[{key_prefix}:{namespace}]",
            "__doc__": f"One thread's record in namespace {namespace!r}.",
        },
    )


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The keys of one namespace.

    Attributes:
        thread_prefix: The record key of thread ``t`` is ``thread_prefix + t``.
        pieces_prefix: The key of the hash of its pieces is ``pieces_prefix + t``.
        updated_index: Sorted set of thread ids scored by ``updated_at`` (microseconds);
            equal scores are ordered by thread id, as Redis orders equal scores bytewise.
        expiry_index: Sorted set of the thread ids that have a TTL, scored by ``expires_at``.
    """

    thread_prefix: str
    pieces_prefix: str
    updated_index: str
    expiry_index: str

    @classmethod
    def of(cls, model: type[Any], *, key_prefix: str, namespace: str) -> KeyLayout:
        """The layout of a model made by `checkpoint_model`."""
        tag = f"{key_prefix}:{{{namespace}}}"
        thread_prefix = str(model.make_primary_key(""))
        if not thread_prefix.startswith(tag + ":"):
            raise ConfigurationError(f"unexpected redis-om key layout {thread_prefix!r}")
        return cls(thread_prefix, f"{tag}:pieces:", f"{tag}:updated", f"{tag}:expires")

    def thread_key(self, thread_id: str) -> str:
        """The key of one thread's hash."""
        return self.thread_prefix + thread_id

    def pieces_key(self, thread_id: str) -> str:
        """The key of the hash of one thread's pieces."""
        return self.pieces_prefix + thread_id

    def thread_keys(self, thread_id: str) -> tuple[str, str, str, str]:
        """The keys a save or delete of one thread touches, in the order its script takes them.

        The thread's hash, the ``updated`` and ``expires`` indexes, the hash of its pieces.
        """
        return (
            self.thread_prefix + thread_id,
            self.updated_index,
            self.expiry_index,
            self.pieces_prefix + thread_id,
        )

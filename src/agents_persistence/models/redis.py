"""The Redis record: a redis-om `HashModel` built per namespace, and the keys around it.

One thread is one hash. Its fields are the record's metadata beside the state's JSON text;
timestamps are integer microseconds since the Unix epoch (UTC), so they keep their precision
(redis-om's own datetime fields are float seconds, which cannot hold every microsecond).

Key layout, for ``key_prefix="agents_persistence"`` and ``namespace="default"``::

    agents_persistence:{default}:thread:<thread_id>   hash: one thread's record
    agents_persistence:{default}:updated              sorted set: thread id by updated_at
    agents_persistence:{default}:expires              sorted set: thread id by expires_at

The braces are a Redis Cluster hash tag: every key of a namespace hashes to the same slot, so
one Lua script can update a record and both indexes atomically on a cluster too. No I/O here.
"""

from __future__ import annotations

import re
import types
from dataclasses import dataclass
from typing import Any, cast

import aredis_om
import redis_om

from agents_persistence.errors import ConfigurationError

__all__ = [
    "DEFAULT_KEY_PREFIX",
    "FIELDS",
    "KeyLayout",
    "record_model",
    "validate_key_prefix",
]

DEFAULT_KEY_PREFIX = "agents_persistence"
_KEY_PREFIX_RE = re.compile(r"[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.-]+)*")
_MAX_KEY_PREFIX = 64

FIELDS = ("version", "created_at", "updated_at", "expires_at", "size", "state", "write_id")
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


def record_model(*, asyncio: bool, key_prefix: str, namespace: str, database: Any) -> type[Any]:
    """Build the redis-om hash model of one namespace.

    Args:
        asyncio: Build on `aredis_om.HashModel` (for the asyncio store) rather than
            `redis_om.HashModel`.
        key_prefix: Validated key prefix (see `validate_key_prefix`).
        namespace: Validated namespace; it becomes the cluster hash tag.
        database: The client the model is bound to (``Meta.database``).

    Returns:
        A `HashModel` subclass whose primary key is ``thread_id``.

    The model is deliberately not indexed: RediSearch is not required, and redis-om's own
    ``save()`` (which needs an indexed model) would bypass the version check and the listing
    indexes, so it refuses to run. Records are written by the store's Lua script only.
    """
    om: Any = aredis_om if asyncio else redis_om
    # A database is always given so that redis-om does not open a default connection itself.
    meta = type(
        "Meta",
        (),
        {
            "global_key_prefix": key_prefix,
            "model_key_prefix": f"{{{namespace}}}:thread",
            "database": database,
        },
    )
    name = "AsyncRedisCheckpointRecord" if asyncio else "RedisCheckpointRecord"

    def body(attrs: dict[str, Any]) -> None:
        attrs["__module__"] = __name__
        attrs["__qualname__"] = f"{name}[{key_prefix}:{namespace}]"
        attrs["__doc__"] = f"One thread's record in namespace {namespace!r}."
        attrs["__annotations__"] = {
            "thread_id": str,
            "version": int,
            "created_at": int,
            "updated_at": int,
            "expires_at": int | None,
            "size": int,
            "state": str,
            "write_id": str,
        }
        attrs["thread_id"] = om.Field(primary_key=True)
        attrs["expires_at"] = None
        attrs["state"] = ""
        attrs["write_id"] = ""
        attrs["Meta"] = meta

    model: Any = types.new_class(name, (om.HashModel,), {"index": False}, body)
    declared = tuple(field for field in model.model_fields if field != "thread_id")
    if declared != FIELDS:  # a redis-om upgrade that adds or drops fields must not go unseen
        raise ConfigurationError(f"record model fields {declared} differ from {FIELDS}")
    return cast("type[Any]", model)


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """The keys of one namespace.

    Attributes:
        thread_prefix: The record key of thread ``t`` is ``thread_prefix + t``.
        updated_index: Sorted set of thread ids scored by ``updated_at`` (microseconds);
            equal scores are ordered by thread id, as Redis orders equal scores bytewise.
        expiry_index: Sorted set of the thread ids that have a TTL, scored by ``expires_at``.
    """

    thread_prefix: str
    updated_index: str
    expiry_index: str

    @classmethod
    def of(cls, model: type[Any], *, key_prefix: str, namespace: str) -> KeyLayout:
        """The layout of a model made by `record_model`."""
        tag = f"{key_prefix}:{{{namespace}}}"
        thread_prefix = str(model.make_primary_key(""))
        if not thread_prefix.startswith(tag + ":"):
            raise ConfigurationError(f"unexpected redis-om key layout {thread_prefix!r}")
        return cls(thread_prefix, f"{tag}:updated", f"{tag}:expires")

    def thread_key(self, thread_id: str) -> str:
        """The key of one thread's hash."""
        return self.thread_prefix + thread_id

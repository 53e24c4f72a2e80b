"""What both Redis savers share besides their plans: settings, options and list merging."""

from __future__ import annotations

# First, before any dependency: without the extras this raises MissingExtraError naming them.
from agents_persistence.repositories import _redis_extra  # noqa: F401

# isort: split

from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio

from agents_persistence._core import _validate_ttl
from agents_persistence.errors import ConfigurationError, InvalidArgumentError
from agents_persistence.langgraph._redis_plans import PAGE_SIZE, RedisPlans
from agents_persistence.langgraph._setup import no_pickle
from agents_persistence.langgraph._threaded import check_keep_last
from agents_persistence.models.redis import validate_key_prefix
from agents_persistence.repositories._call_budget import validate_call_timeout

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import timedelta

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import CheckpointTuple
    from langgraph.checkpoint.serde.base import SerializerProtocol

__all__ = ["client_options", "list_scope", "newest_first", "plans_for", "prune_keep", "row_count"]


def plans_for(
    key_prefix: str,
    serde: SerializerProtocol | None,
    keep_last: int | None,
    ttl: float | timedelta | None,
    exclusive_writes: bool = False,
) -> RedisPlans:
    """The plans of a saver, its arguments validated."""
    return RedisPlans(
        validate_key_prefix(key_prefix),
        no_pickle(serde),
        keep_last=check_keep_last(keep_last),
        ttl=_validate_ttl(ttl),
        exclusive=bool(exclusive_writes),
    )


def call_timeout(value: float | None) -> float | None:
    """``call_timeout`` validated (``None``: the client's own timeouts bound a call)."""
    return None if value is None else validate_call_timeout(value)


def check_client(client: Any) -> None:
    """Refuse a client that decodes replies: values are bytes, not text.

    A cluster client is not asked (that would discover the cluster before the first call).
    """
    plain: Any = client  # typed loosely: the types-redis stubs predate redis-py 5
    single = isinstance(client, redis.Redis | redis.asyncio.Redis)
    if single and plain.get_connection_kwargs().get("decode_responses"):
        raise ConfigurationError(
            "the Redis savers store bytes: open the client with decode_responses=False"
        )


def client_options(named: dict[str, Any], more: Mapping[str, Any] | None) -> dict[str, Any]:
    """The client keywords of ``from_url``: its named ones plus ``client_options``."""
    extra = dict(more or {})
    clash = sorted(set(extra) & set(named))
    if clash:
        raise ConfigurationError(
            f"pass {', '.join(clash)} as from_url's own keyword, not in client_options"
        )
    return {**named, **extra}


def list_scope(
    config: RunnableConfig | None, before: RunnableConfig | None
) -> tuple[str | None, str | None, str | None, str | None]:
    """``(thread_id, namespace, checkpoint_id, before_id)`` a listing is restricted to."""
    configurable = (config or {}).get("configurable") or {}
    thread_id = configurable.get("thread_id")
    if thread_id is not None and not isinstance(thread_id, str):
        raise InvalidArgumentError(f"thread_id must be a str, not {thread_id!r:.40}")
    namespace = configurable.get("checkpoint_ns")
    checkpoint_id = configurable.get("checkpoint_id") or None
    before_id = ((before or {}).get("configurable") or {}).get("checkpoint_id") or None
    return thread_id, namespace, checkpoint_id, before_id


def row_count(limit: int | None, filtered: bool, remaining: int | None) -> int:
    """How many checkpoints the next page reads."""
    if filtered or remaining is None:
        return PAGE_SIZE
    return max(1, min(remaining, PAGE_SIZE))


def newest_first(tuples: list[CheckpointTuple], limit: int | None) -> list[CheckpointTuple]:
    """Tuples of several threads in the SQL savers' order: id, thread, namespace, descending."""

    def key(item: CheckpointTuple) -> tuple[str, str, str]:
        c = item.config["configurable"]
        return c["checkpoint_id"], c["thread_id"], c["checkpoint_ns"]

    ordered = sorted(tuples, key=key, reverse=True)
    return ordered if limit is None else ordered[:limit]


def prune_keep(strategy: str) -> int | None:
    """How many checkpoints per namespace ``strategy`` keeps (``None``: delete the threads)."""
    if strategy == "keep_latest":
        return 1
    if strategy == "delete":
        return None
    raise InvalidArgumentError(
        f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'"
    )

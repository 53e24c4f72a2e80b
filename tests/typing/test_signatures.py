"""A misspelt keyword fails at the call with a `TypeError` naming the public class."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import open_checkpointer

if TYPE_CHECKING:
    from collections.abc import Callable


def _memory() -> list[tuple[str, Callable[..., Any]]]:
    from agents_persistence import AsyncMemoryCheckpointer, MemoryCheckpointer

    return [
        ("MemoryCheckpointer.__init__", MemoryCheckpointer),
        ("AsyncMemoryCheckpointer.__init__", AsyncMemoryCheckpointer),
        (
            "MemoryCheckpointer.from_url",
            lambda **kw: MemoryCheckpointer.from_url("memory://", **kw),
        ),
        (
            "AsyncMemoryCheckpointer.from_url",
            lambda **kw: AsyncMemoryCheckpointer.from_url("memory://", **kw),
        ),
    ]


def _sql() -> list[tuple[str, Callable[..., Any]]]:
    from sqlalchemy import create_engine
    from sqlalchemy.ext.asyncio import create_async_engine

    from agents_persistence import AsyncSQLCheckpointer, SQLCheckpointer

    return [
        (
            "SQLCheckpointer.__init__",
            lambda **kw: SQLCheckpointer(create_engine("sqlite://"), **kw),
        ),
        (
            "AsyncSQLCheckpointer.__init__",
            lambda **kw: AsyncSQLCheckpointer(create_async_engine("sqlite+aiosqlite://"), **kw),
        ),
        ("SQLCheckpointer.from_url", lambda **kw: SQLCheckpointer.from_url("sqlite://", **kw)),
        (
            "AsyncSQLCheckpointer.from_url",
            lambda **kw: AsyncSQLCheckpointer.from_url("sqlite://", **kw),
        ),
    ]


def _redis() -> list[tuple[str, Callable[..., Any]]]:
    import redis
    import redis.asyncio

    from agents_persistence import AsyncRedisCheckpointer, RedisCheckpointer

    return [
        ("RedisCheckpointer.__init__", lambda **kw: RedisCheckpointer(redis.Redis(), **kw)),
        (
            "AsyncRedisCheckpointer.__init__",
            lambda **kw: AsyncRedisCheckpointer(redis.asyncio.Redis(), **kw),
        ),
        ("RedisCheckpointer.from_url", lambda **kw: RedisCheckpointer.from_url("redis://", **kw)),
        (
            "AsyncRedisCheckpointer.from_url",
            lambda **kw: AsyncRedisCheckpointer.from_url("redis://", **kw),
        ),
    ]


def _dynamodb() -> list[tuple[str, Callable[..., Any]]]:
    from agents_persistence import AsyncDynamoDBCheckpointer, DynamoDBCheckpointer

    return [
        ("DynamoDBCheckpointer.__init__", lambda **kw: DynamoDBCheckpointer("table", **kw)),
        (
            "AsyncDynamoDBCheckpointer.__init__",
            lambda **kw: AsyncDynamoDBCheckpointer("table", **kw),
        ),
        (
            "DynamoDBCheckpointer.from_url",
            lambda **kw: DynamoDBCheckpointer.from_url("dynamodb://table", **kw),
        ),
        (
            "AsyncDynamoDBCheckpointer.from_url",
            lambda **kw: AsyncDynamoDBCheckpointer.from_url("dynamodb://table", **kw),
        ),
    ]


@pytest.mark.parametrize("store", [_memory, _sql, _redis, _dynamodb])
def test_a_misspelt_keyword_names_the_public_class(
    store: Callable[[], list[tuple[str, Callable[..., Any]]]],
) -> None:
    for name, call in store():
        with pytest.raises(TypeError) as caught:
            call(namepsace="bot")
        assert str(caught.value) == f"{name}() got an unexpected keyword argument 'namepsace'"


def test_open_checkpointer_passes_a_misspelt_keyword_to_the_store_that_refuses_it() -> None:
    with pytest.raises(TypeError, match=r"^MemoryCheckpointer\.from_url\(\) got an unexpected"):
        open_checkpointer("memory://", namepsace="bot")

"""Checked by mypy in ``test_inference.py``, never run: what a type checker infers for users.

A comment ``# E: <text>`` says that the next line must get exactly that mypy error; every other
line must get none.
"""

from __future__ import annotations

from typing import assert_type

import redis
import redis.asyncio
from pydantic import BaseModel
from sqlalchemy import create_engine
from sqlalchemy.ext.asyncio import create_async_engine

from agents_persistence import (
    AgentStateSnapshot,
    AsyncCheckpointer,
    AsyncDynamoDBCheckpointer,
    AsyncMemoryCheckpointer,
    AsyncRedisCheckpointer,
    AsyncSQLCheckpointer,
    Checkpointer,
    DynamoDBCheckpointer,
    MemoryCheckpointer,
    RedisCheckpointer,
    SQLCheckpointer,
    open_async_checkpointer,
    open_checkpointer,
)


class MyState(BaseModel):
    step: int = 0


def takes(checkpointer: Checkpointer[MyState]) -> None: ...


async def takes_async(checkpointer: AsyncCheckpointer[MyState]) -> None: ...


def memory() -> None:
    assert_type(MemoryCheckpointer(state_type=MyState), MemoryCheckpointer[MyState])
    assert_type(MemoryCheckpointer(), MemoryCheckpointer[AgentStateSnapshot])
    assert_type(
        MemoryCheckpointer.from_url("memory://", state_type=MyState), MemoryCheckpointer[MyState]
    )
    assert_type(MemoryCheckpointer.from_url("memory://"), MemoryCheckpointer[AgentStateSnapshot])
    assert_type(AsyncMemoryCheckpointer(state_type=MyState), AsyncMemoryCheckpointer[MyState])
    assert_type(AsyncMemoryCheckpointer(), AsyncMemoryCheckpointer[AgentStateSnapshot])
    assert_type(
        AsyncMemoryCheckpointer.from_url("memory://", state_type=MyState),
        AsyncMemoryCheckpointer[MyState],
    )
    takes(MemoryCheckpointer(state_type=MyState))
    state = MemoryCheckpointer(state_type=MyState).load_state("t")
    assert_type(state, MyState | None)
    # E: Unexpected keyword argument "namepsace" for "MemoryCheckpointer"; did you mean "namespace"?  [call-arg]
    MemoryCheckpointer(namepsace="x")
    # E: Unexpected keyword argument "tll" for "from_url" of "MemoryCheckpointer"  [call-arg]
    MemoryCheckpointer.from_url("memory://", tll=5)
    # E: Argument 1 to "takes" has incompatible type "MemoryCheckpointer[AgentStateSnapshot]"; expected "Checkpointer[MyState]"  [arg-type]
    takes(MemoryCheckpointer())


async def sql() -> None:
    engine = create_engine("sqlite://")
    async_engine = create_async_engine("sqlite+aiosqlite://")
    assert_type(SQLCheckpointer(engine, state_type=MyState), SQLCheckpointer[MyState])
    assert_type(SQLCheckpointer(engine), SQLCheckpointer[AgentStateSnapshot])
    assert_type(SQLCheckpointer.from_url("sqlite://", state_type=MyState), SQLCheckpointer[MyState])
    assert_type(SQLCheckpointer.from_url("sqlite://"), SQLCheckpointer[AgentStateSnapshot])
    assert_type(
        AsyncSQLCheckpointer(async_engine, state_type=MyState), AsyncSQLCheckpointer[MyState]
    )
    assert_type(AsyncSQLCheckpointer(async_engine), AsyncSQLCheckpointer[AgentStateSnapshot])
    assert_type(
        AsyncSQLCheckpointer.from_url("sqlite://", state_type=MyState),
        AsyncSQLCheckpointer[MyState],
    )
    assert_type(
        AsyncSQLCheckpointer.from_url("sqlite://"), AsyncSQLCheckpointer[AgentStateSnapshot]
    )
    takes(SQLCheckpointer(engine, state_type=MyState))
    await takes_async(AsyncSQLCheckpointer(async_engine, state_type=MyState))
    # E: Unexpected keyword argument "namepsace" for "SQLCheckpointer"; did you mean "namespace"?  [call-arg]
    SQLCheckpointer(engine, namepsace="x")
    # E: Unexpected keyword argument "pool_sise" for "from_url" of "AsyncSQLCheckpointer"; did you mean "pool_size"?  [call-arg]
    AsyncSQLCheckpointer.from_url("sqlite://", pool_sise=1)


async def redis_store() -> None:
    client = redis.Redis()
    async_client = redis.asyncio.Redis()
    assert_type(RedisCheckpointer(client, state_type=MyState), RedisCheckpointer[MyState])
    assert_type(RedisCheckpointer(client), RedisCheckpointer[AgentStateSnapshot])
    assert_type(
        RedisCheckpointer.from_url("redis://", state_type=MyState), RedisCheckpointer[MyState]
    )
    assert_type(RedisCheckpointer.from_url("redis://"), RedisCheckpointer[AgentStateSnapshot])
    assert_type(
        AsyncRedisCheckpointer(async_client, state_type=MyState), AsyncRedisCheckpointer[MyState]
    )
    assert_type(AsyncRedisCheckpointer(async_client), AsyncRedisCheckpointer[AgentStateSnapshot])
    assert_type(
        AsyncRedisCheckpointer.from_url("redis://", state_type=MyState),
        AsyncRedisCheckpointer[MyState],
    )
    await takes_async(AsyncRedisCheckpointer.from_url("redis://", state_type=MyState))
    # E: Unexpected keyword argument "key_prefx" for "from_url" of "RedisCheckpointer"; did you mean "key_prefix"?  [call-arg]
    RedisCheckpointer.from_url("redis://", key_prefx="x")


async def dynamodb() -> None:
    assert_type(DynamoDBCheckpointer("t", state_type=MyState), DynamoDBCheckpointer[MyState])
    assert_type(DynamoDBCheckpointer("t"), DynamoDBCheckpointer[AgentStateSnapshot])
    assert_type(
        DynamoDBCheckpointer.from_url("dynamodb://t", state_type=MyState),
        DynamoDBCheckpointer[MyState],
    )
    assert_type(
        DynamoDBCheckpointer.from_url("dynamodb://t"), DynamoDBCheckpointer[AgentStateSnapshot]
    )
    assert_type(
        AsyncDynamoDBCheckpointer("t", state_type=MyState), AsyncDynamoDBCheckpointer[MyState]
    )
    assert_type(AsyncDynamoDBCheckpointer("t"), AsyncDynamoDBCheckpointer[AgentStateSnapshot])
    assert_type(
        AsyncDynamoDBCheckpointer.from_url("dynamodb://t", state_type=MyState),
        AsyncDynamoDBCheckpointer[MyState],
    )
    takes(DynamoDBCheckpointer("t", state_type=MyState))
    # E: Unexpected keyword argument "max_thread" for "AsyncDynamoDBCheckpointer"; did you mean "max_threads"?  [call-arg]
    AsyncDynamoDBCheckpointer("t", max_thread=2)


async def from_a_url() -> None:
    assert_type(open_checkpointer("memory://", state_type=MyState), Checkpointer[MyState])
    assert_type(open_checkpointer("memory://"), Checkpointer[AgentStateSnapshot])
    assert_type(
        open_async_checkpointer("memory://", state_type=MyState), AsyncCheckpointer[MyState]
    )
    assert_type(open_async_checkpointer("memory://"), AsyncCheckpointer[AgentStateSnapshot])
    takes(open_checkpointer("sqlite:///a.db", state_type=MyState, auto_migrate=True))
    await takes_async(open_async_checkpointer("memory://", state_type=MyState))

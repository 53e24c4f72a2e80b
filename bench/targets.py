"""Every store entry of the benchmark, in report order."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.stores import MariaDBTarget, MemoryTarget, PostgresTarget, SQLiteTarget
from bench.stores_kv import DynamoDBTarget, RedisTarget

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench.stores import Target

FACTORIES: dict[str, Callable[[], Target]] = {
    "memory": MemoryTarget,
    "sqlite": SQLiteTarget,
    "postgresql": PostgresTarget,
    "mariadb": MariaDBTarget,
    "redis": RedisTarget,
    "dynamodb": DynamoDBTarget,
}

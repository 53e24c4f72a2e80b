"""Redis and DynamoDB entries of the benchmark (see `bench.stores`).

DynamoDB runs on moto's server in a process of its own (``python -m moto.server``), reached
over HTTP on loopback like the real service: our store and the boto3 floor share it, and it
does not compete with the benchmark for this process's GIL.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from bench import raw_kv
from bench.stores import Target, _importable, _reachable, seed_state

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
SEED_TTL = timedelta(days=1)
SEED_CONCURRENCY = 32


async def _seed_through_library(target: Target, namespace: str, count: int, now: datetime) -> int:
    """Save ``count`` threads through our async store, ``SEED_CONCURRENCY`` at a time.

    Every thread gets the store's TTL (1 day); every 10th is saved with a clock two days
    back, so it is expired now while its record is still physically there, which is what
    ``purge_expired`` has to clean up.
    """
    state = seed_state()
    past = now - 2 * SEED_TTL
    fresh = await target.async_(namespace, ttl=SEED_TTL)
    stale = await target.async_(namespace, ttl=SEED_TTL, clock=lambda: past)
    queue = iter(range(count))

    async def worker() -> None:
        for i in queue:
            cp = stale if i % 10 == 9 else fresh
            await cp.save_state(f"seed-{i:06d}", state)

    try:
        await asyncio.gather(*(worker() for _ in range(SEED_CONCURRENCY)))
    finally:
        await fresh.close()
        await stale.close()
    return count // 10


class RedisTarget(Target):
    name = "redis"
    label = "Redis"
    module = "agents_persistence.repositories.redis"

    def __init__(self) -> None:
        from bench.stores import REDIS_URL

        self.url = REDIS_URL

    def unavailable(self) -> str | None:
        return super().unavailable() or _reachable(self.url, 6379)

    def server_version(self) -> str:
        import redis

        with redis.Redis.from_url(self.url) as client:
            return f"Redis {client.info('server')['redis_version']}"

    def sync(self, namespace: str, **options: Any) -> Any:
        from agents_persistence.repositories.redis import RedisCheckpointer

        return RedisCheckpointer.from_url(self.url, namespace=namespace, **options)

    async def async_(self, namespace: str, **options: Any) -> Any:
        from agents_persistence.repositories.redis import AsyncRedisCheckpointer

        return AsyncRedisCheckpointer.from_url(self.url, namespace=namespace, **options)

    def raw(self, namespace: str) -> Any:
        return raw_kv.RawRedis(self.url, namespace)

    async def araw(self, namespace: str) -> Any:
        return raw_kv.AsyncRawRedis(self.url, namespace)

    def seed(self, namespace: str, count: int, now: datetime) -> int:
        """Seeded through our own store (async, 32 at a time): exactly what it writes."""
        return asyncio.run(_seed_through_library(self, namespace, count, now))

    def cleanup(self, namespace: str) -> None:
        import redis

        with redis.Redis.from_url(self.url) as client:
            batch = []
            for key in client.scan_iter(match=f"agents_persistence:{{{namespace}}}:*", count=1000):
                batch.append(key)
                if len(batch) == 1000:
                    client.unlink(*batch)
                    batch = []
            if batch:
                client.unlink(*batch)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DynamoDBTarget(Target):
    name = "dynamodb"
    label = "DynamoDB (moto)"
    ops_factor = 0.4  # moto answers in milliseconds, not microseconds
    module = "agents_persistence.repositories.dynamodb"

    def __init__(self) -> None:
        self.table = "ap-bench-" + uuid.uuid4().hex[:8]
        self.raw_table = self.table + "-raw"  # single-item items, as the raw baseline writes
        self.endpoint = ""
        self.server: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    def unavailable(self) -> str | None:
        return super().unavailable() or _importable("moto.server") or _importable("boto3")

    def start(self) -> None:
        from agents_persistence.repositories.dynamodb import DynamoDBCheckpointer

        port = _free_port()
        self.server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while _reachable(f"http://127.0.0.1:{port}", port) is not None:
            if time.monotonic() > deadline or self.server.poll() is not None:
                raise RuntimeError("moto server did not start")
            time.sleep(0.1)
        self.endpoint = f"http://127.0.0.1:{port}"
        with DynamoDBCheckpointer(self.table, **self.connection()) as cp:
            cp.create_table()
        with DynamoDBCheckpointer(self.raw_table, **self.connection()) as cp:
            cp.create_table(table_format="single-item")

    def stop(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(10)
            self.server = None

    def server_version(self) -> str:
        from importlib import metadata

        return f"moto {metadata.version('moto')} server (separate process)"

    def connection(self) -> dict[str, Any]:
        # moto is not DynamoDB: one process answering every request in turn, and slower as a
        # table grows (seeding 100,000 threads). A wider budget than the default 5 s keeps the
        # seeding from failing; it changes no latency measured here.
        return {
            "region": REGION,
            "endpoint_url": self.endpoint,
            "call_timeout": 60.0,
            **CREDENTIALS,
        }

    def max_state_bytes(self) -> int:
        # The raw baseline writes one item per thread: sizes stay under that item's limit.
        from agents_persistence.repositories.dynamodb import SINGLE_ITEM_MAX_STATE_BYTES

        return SINGLE_ITEM_MAX_STATE_BYTES

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "dynamodb",
                region_name=REGION,
                endpoint_url=self.endpoint,
                config=Config(max_pool_connections=20),
                **CREDENTIALS,
            )
        return self._client

    def sync(self, namespace: str, **options: Any) -> Any:
        from agents_persistence.repositories.dynamodb import DynamoDBCheckpointer

        return DynamoDBCheckpointer(
            self.table,
            namespace=namespace,
            max_pool_connections=20,
            **{**self.connection(), **options},
        )

    async def async_(self, namespace: str, **options: Any) -> Any:
        from agents_persistence.repositories.dynamodb import AsyncDynamoDBCheckpointer

        return AsyncDynamoDBCheckpointer(
            self.table, namespace=namespace, max_threads=16, **{**self.connection(), **options}
        )

    def sync_shipped(self, namespace: str) -> Any:
        from agents_persistence.repositories.dynamodb import DynamoDBCheckpointer

        return DynamoDBCheckpointer(self.table, namespace=namespace, **self.connection())

    async def async_shipped(self, namespace: str) -> Any:
        from agents_persistence.repositories.dynamodb import AsyncDynamoDBCheckpointer

        return AsyncDynamoDBCheckpointer(self.table, namespace=namespace, **self.connection())

    def raw(self, namespace: str) -> Any:
        return raw_kv.RawDynamoDB(self.client, self.raw_table, namespace)

    def raw_variants(self, namespace: str) -> dict[str, Any]:
        return {"UpdateItem": raw_kv.RawDynamoDBUpdate(self.client, self.raw_table, namespace)}

    async def araw(self, namespace: str) -> Any:
        from bench.raw import ThreadedAsync

        return ThreadedAsync(raw_kv.RawDynamoDB(self.client, self.raw_table, namespace))

    def seed(self, namespace: str, count: int, now: datetime) -> int:
        """Seeded through our own store (async, 32 at a time): exactly what it writes."""
        return asyncio.run(_seed_through_library(self, namespace, count, now))

    def cleanup(self, namespace: str) -> None:
        paginator = self.client.get_paginator("query")
        for table in (self.table, self.raw_table):
            pages = paginator.paginate(
                TableName=table,
                IndexName="by_updated",
                KeyConditionExpression="list_pk = :ns",
                ExpressionAttributeValues={":ns": {"S": namespace}},
                ProjectionExpression="pk",
            )
            keys: list[dict[str, Any]] = []
            for page in pages:
                for item in page["Items"]:
                    if table == self.raw_table:
                        keys.append({"pk": item["pk"]})
                        continue
                    partition = paginator.paginate(  # the head and its pieces
                        TableName=table,
                        KeyConditionExpression="pk = :pk",
                        ExpressionAttributeValues={":pk": item["pk"]},
                        ProjectionExpression="pk, sk",
                    )
                    keys += [row for part in partition for row in part["Items"]]
            for start in range(0, len(keys), 25):
                requests = [{"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]]
                self.client.batch_write_item(RequestItems={table: requests})

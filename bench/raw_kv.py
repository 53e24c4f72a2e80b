"""Raw floors of the key-value stores: redis-py with a Lua script, boto3 on DynamoDB.

Same contract as `bench.raw`: a save encodes with pydantic and bumps the version atomically
(reset past expiry), a load reads the live record and decodes it. The keys and items have the
store's layout, in their own namespace.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from agents_persistence import AgentStateSnapshot

State = AgentStateSnapshot
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


# --- Redis -------------------------------------------------------------------------------------

# One atomic step, as the store's: read the live version, write the hash, index it by
# updated_at (and by expires_at with a TTL), set the key's TTL.
REDIS_WRITE = """
local now = tonumber(ARGV[2])
local live = redis.call('HMGET', KEYS[1], 'version', 'created_at', 'expires_at')
local version, created = 1, ARGV[2]
if live[1] and (not live[3] or live[3] == '' or tonumber(live[3]) > now) then
  version = tonumber(live[1]) + 1
  created = live[2]
end
redis.call('HSET', KEYS[1], 'version', version, 'created_at', created, 'updated_at', ARGV[2],
  'expires_at', ARGV[3], 'size', ARGV[5], 'state', ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
return {version, created}
"""


class _RedisKeys:
    def __init__(self, namespace: str, ttl: timedelta | None) -> None:
        tag = f"agents_persistence:{{{namespace}}}"
        self.prefix = f"{tag}:thread:"
        self.updated = f"{tag}:updated"
        self.expires = f"{tag}:expires"
        self.ttl = ttl

    def call(self, thread_id: str, state: State) -> tuple[list[str], list[Any]]:
        payload = state.model_dump_json()
        now = datetime.now(UTC)
        expires = "" if self.ttl is None else str(_micros(now + self.ttl))
        ttl_ms = "" if self.ttl is None else str(int(self.ttl.total_seconds() * 1000))
        keys = [self.prefix + thread_id, self.updated, self.expires]
        args = [thread_id, str(_micros(now)), expires, ttl_ms, len(payload.encode()), payload]
        return keys, args

    @staticmethod
    def decode(fields: dict[bytes, bytes]) -> State | None:
        if not fields:
            return None
        expires = fields.get(b"expires_at")
        if expires and int(expires) <= _micros(datetime.now(UTC)):
            return None
        return State.model_validate_json(fields[b"state"])


class RawRedis(_RedisKeys):
    """redis-py: the write script by EVALSHA, HGETALL for a load."""

    def __init__(self, url: str, namespace: str, ttl: timedelta | None = None) -> None:
        import redis

        super().__init__(namespace, ttl)
        self.client = redis.Redis.from_url(url)
        self.script = self.client.register_script(REDIS_WRITE)

    def save(self, thread_id: str, state: State) -> int:
        keys, args = self.call(thread_id, state)
        return int(self.script(keys=keys, args=args)[0])

    def load(self, thread_id: str) -> State | None:
        return self.decode(self.client.hgetall(self.prefix + thread_id))

    def close(self) -> None:
        self.client.close()


class AsyncRawRedis(_RedisKeys):
    """redis.asyncio, the same calls as `RawRedis`."""

    def __init__(self, url: str, namespace: str, ttl: timedelta | None = None) -> None:
        import redis.asyncio

        super().__init__(namespace, ttl)
        self.client = redis.asyncio.Redis.from_url(url)
        self.script = self.client.register_script(REDIS_WRITE)

    async def asave(self, thread_id: str, state: State) -> int:
        keys, args = self.call(thread_id, state)
        return int((await self.script(keys=keys, args=args))[0])

    async def aload(self, thread_id: str) -> State | None:
        return self.decode(await self.client.hgetall(self.prefix + thread_id))

    async def aclose(self) -> None:
        await self.client.aclose()


# --- DynamoDB ----------------------------------------------------------------------------------


def ddb_time(moment: datetime) -> str:
    """How the store writes a timestamp (PynamoDB's UTC format, fixed width)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def ddb_item(
    namespace: str,
    thread_id: str,
    payload: str,
    version: int,
    created: str,
    now: datetime,
    expires: datetime | None,
) -> dict[str, Any]:
    """The item the store writes for one save, in DynamoDB's wire format."""
    item: dict[str, Any] = {
        "pk": {"S": f"{namespace}#{thread_id}"},
        "list_pk": {"S": namespace},
        "list_sk": {"S": f"{ddb_time(now)}#{thread_id}"},
        "state": {"S": payload},
        "version": {"N": str(version)},
        "created_at": {"S": created},
        "updated_at": {"S": ddb_time(now)},
        "size": {"N": str(len(payload.encode()))},
    }
    if expires is not None:
        item["expires_at"] = {"N": str(int(expires.timestamp()) + 1)}
        item["expires_at_us"] = {"N": str(_micros(expires))}
    return item


class RawDynamoDB:
    """boto3, the store's algorithm: a consistent GetItem of the version, then a PutItem
    conditional on it (on the absent or expired item for a first save)."""

    def __init__(
        self, client: Any, table: str, namespace: str, ttl: timedelta | None = None
    ) -> None:
        self.client = client
        self.table = table
        self.namespace = namespace
        self.ttl = ttl

    def _key(self, thread_id: str) -> dict[str, Any]:
        return {"pk": {"S": f"{self.namespace}#{thread_id}"}}

    def save(self, thread_id: str, state: State) -> int:
        payload = state.model_dump_json()
        for _ in range(10):
            now = datetime.now(UTC)
            expires = None if self.ttl is None else now + self.ttl
            found = self.client.get_item(
                TableName=self.table,
                Key=self._key(thread_id),
                ConsistentRead=True,
                ProjectionExpression="version, created_at, updated_at, expires_at_us",
            ).get("Item")
            live = found is not None and (
                "expires_at_us" not in found or int(found["expires_at_us"]["N"]) > _micros(now)
            )
            if live and found is not None:
                version = int(found["version"]["N"]) + 1
                created = found["created_at"]["S"]
                condition = "version = :v AND updated_at = :u"
                values = {":v": found["version"], ":u": found["updated_at"]}
            else:
                version, created = 1, ddb_time(now)
                condition = "attribute_not_exists(pk) OR expires_at_us <= :now"
                values = {":now": {"N": str(_micros(now))}}
            item = ddb_item(self.namespace, thread_id, payload, version, created, now, expires)
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item=item,
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
            except self.client.exceptions.ConditionalCheckFailedException:
                time.sleep(0.001)
                continue
            return version
        raise RuntimeError("too many concurrent saves")

    def load(self, thread_id: str) -> State | None:
        item = self.client.get_item(
            TableName=self.table, Key=self._key(thread_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        expires = item.get("expires_at_us")
        if expires is not None and int(expires["N"]) <= _micros(datetime.now(UTC)):
            return None
        return State.model_validate_json(item["state"]["S"])

    def close(self) -> None:
        pass


class RawDynamoDBUpdate(RawDynamoDB):
    """boto3, one request per save: an UpdateItem that increments the version in place
    (``if_not_exists(version, 0) + 1``) on condition that the item is absent or live, and
    returns the new version. An expired item fails the condition and is replaced by a
    conditional PutItem at version 1 (not exercised by the benchmark)."""

    def save(self, thread_id: str, state: State) -> int:
        payload = state.model_dump_json()
        now = datetime.now(UTC)
        expires = None if self.ttl is None else now + self.ttl
        item = ddb_item(self.namespace, thread_id, payload, 0, ddb_time(now), now, expires)
        sets = ["version = if_not_exists(version, :zero) + :one"]
        sets.append("created_at = if_not_exists(created_at, :created_at)")
        values = {":zero": {"N": "0"}, ":one": {"N": "1"}, ":now_us": {"N": str(_micros(now))}}
        names = {}
        for name, value in item.items():
            if name in ("pk", "version", "created_at"):
                if name == "created_at":
                    values[":created_at"] = value
                continue
            names[f"#{name}"] = name
            values[f":{name}"] = value
            sets.append(f"#{name} = :{name}")
        try:
            reply = self.client.update_item(
                TableName=self.table,
                Key=self._key(thread_id),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression="attribute_not_exists(pk)"
                " OR attribute_not_exists(expires_at_us) OR expires_at_us > :now_us",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="UPDATED_NEW",
            )
        except self.client.exceptions.ConditionalCheckFailedException:
            return super().save(thread_id, state)
        return int(reply["Attributes"]["version"]["N"])

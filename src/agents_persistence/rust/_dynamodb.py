"""The Rust SDK's DynamoDB layout (crate ``agents-aws``), read only.

The user creates the table: hash key ``thread_id`` (S); attributes ``state`` (S, the JSON),
``updated_at`` (S, RFC 3339) and, with a TTL, ``ttl`` (N, epoch seconds). DynamoDB removes
expired items up to days late, so an item past its ``ttl`` is skipped here. The layout has no
index to list by, so listing is a paginated Scan of the thread ids only: a one-off read for a
copy, never the library's own way of listing.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from agents_persistence._core import as_utc, utc_now
from agents_persistence.errors import ConfigurationError, CorruptStateError, SchemaNotReadyError
from agents_persistence.repositories._dynamodb_errors import driver_errors

from ._base import RustRecord, RustSource, query_options

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DynamoDBRustSource"]

_OPTIONS = ("region", "endpoint", "connect_timeout", "read_timeout", "retries")


def _seconds(options: dict[str, str], key: str, default: float) -> float:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"rust+dynamodb:// URL option {key}={raw!r} is invalid") from exc
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"rust+dynamodb:// URL option {key}={raw!r} is invalid")
    return value


def _text(item: dict[str, Any], name: str, thread_id: str, *, optional: bool = False) -> Any:
    value = item.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("S"), str):
        raise CorruptStateError(thread_id, f"attribute {name!r} is not a string (S): {value!r:.80}")
    return value["S"]


class DynamoDBRustSource(RustSource):
    """A Rust SDK DynamoDB table, read only.

    Args:
        table_name: The table.
        region: AWS region (else the standard AWS configuration's).
        endpoint_url: ``http://host:port`` of a local server.
        connect_timeout: Seconds per connection attempt.
        read_timeout: Seconds per reply.
        max_retries: Retries of a failed request.
        aws_access_key_id: Credentials (else the standard AWS chain).
        aws_secret_access_key: Credentials.
        aws_session_token: Credentials.
    """

    layout = "dynamodb"

    def __init__(
        self,
        table_name: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        max_retries: int = 2,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
    ) -> None:
        from pynamodb.connection import Connection

        if not table_name or len(table_name) > 255:
            raise ConfigurationError(f"invalid DynamoDB table name {table_name!r:.80}")
        self.table_name = table_name
        self.endpoint_url = endpoint_url
        self.region = region
        self.connection = Connection(
            region=region,
            host=endpoint_url,
            connect_timeout_seconds=connect_timeout,
            read_timeout_seconds=read_timeout,
            max_retry_attempts=max_retries,
            aws_access_key_id=aws_access_key_id,
            aws_secret_access_key=aws_secret_access_key,
            aws_session_token=aws_session_token,
        )

    @classmethod
    def from_url(cls, url: str, **credentials: str | None) -> DynamoDBRustSource:
        """Open ``rust+dynamodb://TABLE?region=...&endpoint=...``.

        Other query keys: ``connect_timeout``, ``read_timeout`` (seconds), ``retries``.
        Credentials never go in URLs: pass ``aws_access_key_id`` and the like, or let the
        standard AWS chain find them.

        Raises:
            ConfigurationError: A malformed URL.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "rust+dynamodb":
            raise ConfigurationError(f"not a rust+dynamodb:// URL: {parts.scheme}://")
        options = query_options(url, _OPTIONS)
        retries = options.get("retries", "2")
        if not retries.isdigit():
            raise ConfigurationError(f"rust+dynamodb:// URL option retries={retries!r} is invalid")
        return cls(
            unquote(parts.netloc + parts.path.rstrip("/")),
            region=options.get("region") or None,
            endpoint_url=options.get("endpoint") or None,
            connect_timeout=_seconds(options, "connect_timeout", 5.0),
            read_timeout=_seconds(options, "read_timeout", 10.0),
            max_retries=int(retries),
            **credentials,
        )

    def describe(self) -> str:
        where = self.endpoint_url or "AWS"
        return (
            f"Rust DynamoDB table {self.table_name!r} ({where}, {self.region or 'default region'})"
        )

    @contextmanager
    def _errors(self, thread_id: str = "") -> Iterator[None]:
        try:
            with driver_errors(self.table_name, thread_id=thread_id):
                yield
        except SchemaNotReadyError as exc:
            raise SchemaNotReadyError(
                f"the Rust DynamoDB table {self.table_name!r} does not exist (check the table"
                " name, region and endpoint in the URL)"
            ) from exc

    def iter_thread_ids(self, *, page_size: int = 500) -> Iterator[str]:
        start: Any = None
        while True:
            request: dict[str, Any] = {
                "TableName": self.table_name,
                "ProjectionExpression": "thread_id",
                "Limit": page_size,
                "ConsistentRead": True,
            }
            if start:
                request["ExclusiveStartKey"] = start
            with self._errors():
                page = self.connection.client.scan(**request)
            for item in page.get("Items", []):
                value = item.get("thread_id", {}).get("S")
                if isinstance(value, str):
                    yield value
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def load(self, thread_id: str) -> RustRecord | None:
        with self._errors(thread_id):
            reply = self.connection.client.get_item(
                TableName=self.table_name,
                Key={"thread_id": {"S": thread_id}},
                ConsistentRead=True,
            )
        item = reply.get("Item")
        if not item:
            return None
        expires_at = None
        ttl = item.get("ttl")
        if ttl is not None:
            try:
                expires_at = datetime.fromtimestamp(float(ttl["N"]), UTC)
            except (KeyError, TypeError, ValueError, OverflowError) as exc:
                raise CorruptStateError(
                    thread_id, f"attribute 'ttl' is not a number: {ttl!r:.80}"
                ) from exc
            if expires_at <= utc_now():
                return None  # past its TTL; DynamoDB has not removed it yet
        updated_at = None
        updated = _text(item, "updated_at", thread_id, optional=True)
        if updated is not None:
            try:
                updated_at = as_utc(datetime.fromisoformat(updated))
            except ValueError as exc:
                raise CorruptStateError(
                    thread_id, f"'updated_at' is not RFC 3339: {updated!r:.60}"
                ) from exc
        return RustRecord(
            thread_id, _text(item, "state", thread_id), updated_at=updated_at, expires_at=expires_at
        )

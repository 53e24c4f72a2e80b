"""The LangGraph DynamoDB savers' I/O: PynamoDB requests on one table, payloads split in parts.

`LangGraphTable` owns a PynamoDB `TableConnection` (as the DynamoDB store's table does), reads
and writes `LangGraphItem` models, and sends batch requests through the connection's botocore
client, retrying the items the service left unprocessed. Every request runs within the
saver call's deadline (`agents_persistence.repositories._dynamodb_budget`); errors are
translated by the caller with `agents_persistence.repositories._dynamodb_errors.driver_errors`.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]
from pynamodb.connection import TableConnection
from pynamodb.connection.base import MetaTable
from pynamodb.constants import PAY_PER_REQUEST_BILLING_MODE
from pynamodb.exceptions import PynamoDBException, TableDoesNotExist

from agents_persistence.errors import BackendUnavailableError, CorruptStateError
from agents_persistence.langgraph._dynamodb_model import (
    LangGraphItem,
    create_table_arguments,
    meta_table_description,
    part_key,
    split,
)
from agents_persistence.repositories._call_budget import fits
from agents_persistence.repositories._dynamodb_budget import BudgetHooks
from agents_persistence.repositories._dynamodb_errors import error_code

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from pynamodb.expressions.condition import Condition

    from agents_persistence.models.dynamodb import ConnectionSettings

__all__ = ["Key", "LangGraphTable"]

Key = tuple[str, str]
"""``(pk, sk)`` of an item."""

_BATCH_WRITE = 25  # DynamoDB's most requests per BatchWriteItem
_BATCH_GET = 100  # DynamoDB's most keys per BatchGetItem
_POLL_SECONDS = 1.0
_CONDITION_FAILED = "ConditionalCheckFailedException"


class LangGraphTable:
    """Requests on the LangGraph table through one PynamoDB connection.

    Args:
        settings: Table name and connection settings (those of the DynamoDB store).
    """

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        self.table_name = settings.table_name
        self._connection = TableConnection(
            settings.table_name,
            region=settings.region,
            host=settings.endpoint_url,
            connect_timeout_seconds=settings.connect_timeout,
            read_timeout_seconds=settings.read_timeout,
            max_retry_attempts=settings.max_retries,
            max_pool_connections=settings.max_pool_connections,
            aws_access_key_id=settings.aws_access_key_id,
            aws_secret_access_key=settings.aws_secret_access_key,
            aws_session_token=settings.aws_session_token,
            meta_table=MetaTable(meta_table_description(settings.table_name)),
        )
        self._used = False
        self._budget = BudgetHooks(
            settings.connect_timeout + settings.read_timeout, 1 + settings.max_retries
        )

    @property
    def connection(self) -> TableConnection:
        """PynamoDB's connection, its client kept within the call's budget."""
        self._used = True
        self._budget.install(self._connection.connection.client)
        return self._connection

    @property
    def client(self) -> Any:
        """The connection's botocore client (batch requests)."""
        return self.connection.connection.client

    # --- single items --------------------------------------------------------------------

    def get(self, key: Key, attributes: Sequence[str] | None = None) -> LangGraphItem | None:
        """The item of ``key`` by a strongly consistent read, or ``None``."""
        found = self.connection.get_item(
            key[0],
            key[1],
            consistent_read=True,
            attributes_to_get=None if attributes is None else list(attributes),
        )
        data = found.get("Item") if found else None
        return None if not data else LangGraphItem.from_raw_data(data)

    def put(self, item: LangGraphItem, condition: Condition | None = None) -> bool:
        """Write ``item`` if ``condition`` holds; False when it did not."""
        raw = item.serialize()
        raw.pop(LangGraphItem.pk.attr_name)
        raw.pop(LangGraphItem.sk.attr_name)
        try:
            self.connection.put_item(item.pk, item.sk, attributes=raw, condition=condition)
        except PynamoDBException as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    def put_both(
        self, first: LangGraphItem, condition: tuple[str, dict[str, Any]], second: LangGraphItem
    ) -> bool:
        """Write two items in one transaction if ``condition`` holds on the first's old item.

        ``condition`` is a condition expression and its values; attribute names are written
        as ``#<name>`` for every attribute of the model. False when the condition failed.
        """
        expression, values = condition
        names = {
            f"#{name}": name
            for name in (
                LangGraphItem.pk.attr_name,
                LangGraphItem.gen.attr_name,
                LangGraphItem.checkpoint_id.attr_name,
            )
            if f"#{name}" in expression
        }
        guarded: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": first.serialize(),
            "ConditionExpression": expression,
        }
        if names:
            guarded["ExpressionAttributeNames"] = names
        if values:
            guarded["ExpressionAttributeValues"] = {k: {"S": v} for k, v in values.items()}
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {"Put": guarded},
                    {"Put": {"TableName": self.table_name, "Item": second.serialize()}},
                ]
            )
        except ClientError as exc:
            reasons = exc.response.get("CancellationReasons") or []
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False
            raise
        return True

    def delete(self, key: Key, condition: Condition | None = None) -> bool:
        """Delete the item of ``key`` if ``condition`` holds; False when it did not."""
        try:
            self.connection.delete_item(key[0], key[1], condition=condition)
        except PynamoDBException as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    # --- many items ----------------------------------------------------------------------

    def query(
        self,
        pk: str,
        condition: Condition | None,
        *,
        descending: bool = False,
        attributes: Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[LangGraphItem]:
        """The items of partition ``pk`` whose sort key meets ``condition`` (all with ``None``)."""
        start = None
        while True:
            page = self.connection.query(
                pk,
                range_key_condition=condition,
                attributes_to_get=None if attributes is None else list(attributes),
                consistent_read=True,
                exclusive_start_key=start,
                scan_index_forward=not descending,
                limit=page_size,
            )
            for data in page.get("Items", []):
                yield LangGraphItem.from_raw_data(data)
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def scan(
        self, condition: Condition, attributes: Sequence[str] | None = None
    ) -> Iterator[LangGraphItem]:
        """Every item of the table meeting ``condition`` (maintenance and global listings)."""
        start = None
        while True:
            page = self.connection.scan(
                filter_condition=condition,
                attributes_to_get=None if attributes is None else list(attributes),
                consistent_read=True,
                exclusive_start_key=start,
            )
            for data in page.get("Items", []):
                yield LangGraphItem.from_raw_data(data)
            start = page.get("LastEvaluatedKey")
            if not start:
                return

    def _key_map(self, key: Key) -> dict[str, Any]:
        return {
            LangGraphItem.pk.attr_name: {"S": key[0]},
            LangGraphItem.sk.attr_name: {"S": key[1]},
        }

    def batch_get(self, keys: Iterable[Key]) -> dict[Key, LangGraphItem]:
        """The items of ``keys`` that exist, by key (strongly consistent)."""
        wanted = sorted(set(keys))
        found: dict[Key, LangGraphItem] = {}
        for start in range(0, len(wanted), _BATCH_GET):
            request: dict[str, Any] = {
                self.table_name: {
                    "Keys": [self._key_map(key) for key in wanted[start : start + _BATCH_GET]],
                    "ConsistentRead": True,
                }
            }
            attempt = 0
            while request:
                reply = self.client.batch_get_item(RequestItems=request)
                for data in reply.get("Responses", {}).get(self.table_name, []):
                    item = LangGraphItem.from_raw_data(data)
                    found[(item.pk, item.sk)] = item
                request = reply.get("UnprocessedKeys") or {}
                attempt = self._pause(attempt) if request else attempt
        return found

    def batch_write(self, puts: Sequence[LangGraphItem] = (), deletes: Iterable[Key] = ()) -> None:
        """Write ``puts``, then delete ``deletes`` (unconditionally), 25 per request, in order."""
        # One request per key, the last given winning (a batch refuses duplicate keys).
        unique = {(item.pk, item.sk): item for item in puts}
        requests = [{"PutRequest": {"Item": item.serialize()}} for item in unique.values()]
        requests += [
            {"DeleteRequest": {"Key": self._key_map(key)}} for key in dict.fromkeys(deletes)
        ]
        for start in range(0, len(requests), _BATCH_WRITE):
            pending: dict[str, Any] = {self.table_name: requests[start : start + _BATCH_WRITE]}
            attempt = 0
            while pending:
                reply = self.client.batch_write_item(RequestItems=pending)
                pending = reply.get("UnprocessedItems") or {}
                attempt = self._pause(attempt) if pending else attempt

    @staticmethod
    def _pause(attempt: int) -> int:
        """Back off before sending unprocessed items again (throttling); the next attempt."""
        delay = random.uniform(0, min(1.0, 0.02 * 2**attempt))
        if not fits(delay + 0.1):
            raise BackendUnavailableError(
                "DynamoDB left items unprocessed (throttling) and call_timeout is spent"
            )
        time.sleep(delay)
        return attempt + 1

    # --- payloads ------------------------------------------------------------------------

    @staticmethod
    def with_payload(item: LangGraphItem, data: bytes) -> list[LangGraphItem]:
        """``item`` holding ``data``, and the part items of a payload too large for one item.

        The parts come first in the list: written in order, the item that names them is
        written last.
        """
        pieces = split(data)
        item.data = pieces[0]
        if len(pieces) == 1:
            item.parts = None
            item.part_key = None
            return [item]
        token = uuid.uuid4().hex
        item.parts = len(pieces)
        item.part_key = token
        parts = [
            LangGraphItem(item.pk, part_key(token, number), gen=item.gen, data=piece)
            for number, piece in enumerate(pieces[1:], start=1)
        ]
        return [*parts, item]

    @staticmethod
    def part_keys(item: LangGraphItem) -> list[Key]:
        """Keys of the part items of ``item``'s payload (none if it fits in the item)."""
        count = int(item.parts or 1)
        if count <= 1 or not item.part_key:
            return []
        return [(item.pk, part_key(item.part_key, n)) for n in range(1, count)]

    def payloads(self, items: Sequence[LangGraphItem]) -> list[bytes]:
        """The whole payload of each of ``items``, reading their parts in batches."""
        found = self.batch_get(key for item in items for key in self.part_keys(item))
        result = []
        for item in items:
            pieces = [item.data or b""]
            for key in self.part_keys(item):
                part = found.get(key)
                if part is None:
                    raise CorruptStateError(item.pk, f"item {item.sk!r} lacks its part {key[1]!r}")
                pieces.append(part.data or b"")
            result.append(b"".join(pieces))
        return result

    # --- the table -----------------------------------------------------------------------

    def _exists(self) -> bool:
        try:
            self.connection.describe_table()
        except TableDoesNotExist:
            return False
        return True

    def create_table(self, *, wait: bool) -> bool:
        """Create the table (on-demand) and its TTL setting unless they exist; True if created."""
        created = False
        if not self._exists():
            try:
                self.connection.create_table(
                    billing_mode=PAY_PER_REQUEST_BILLING_MODE, **create_table_arguments()
                )
                created = True
            except PynamoDBException as exc:
                if error_code(exc) != "ResourceInUseException":
                    raise
        while True:
            description = cast("dict[str, Any]", self.connection.describe_table())
            if description.get("TableStatus") == "ACTIVE":
                break
            if not wait:
                return created
            time.sleep(_POLL_SECONDS)
        found = self.client.describe_time_to_live(TableName=self.table_name)
        status = found.get("TimeToLiveDescription", {}).get("TimeToLiveStatus")
        if status not in ("ENABLED", "ENABLING"):
            self.connection.update_time_to_live(LangGraphItem.expires_at.attr_name)
        return created

    def delete_table(self, *, wait: bool) -> bool:
        """Delete the table and everything in it; False if it did not exist."""
        if not self._exists():
            return False
        try:
            self.connection.delete_table()
        except PynamoDBException as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return False
            raise
        while wait and self._exists():
            time.sleep(_POLL_SECONDS)
        return True

    def close(self) -> None:
        """Close the client's HTTP connections, if a client was ever made."""
        if not self._used:
            return
        try:
            client = cast("Any", self._connection.connection.client)
        except BotoCoreError:
            return
        client.close()

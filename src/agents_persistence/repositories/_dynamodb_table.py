"""The DynamoDB store's I/O: PynamoDB calls, retries of conditional writes, error translation.

`DynamoDBTable` is synchronous because PynamoDB is; the sync checkpointer calls it directly and
the async one from a bounded pool of worker threads. Each primitive runs within the settings'
``call_timeout`` (see `agents_persistence.repositories._dynamodb_budget`). It owns one
PynamoDB `TableConnection` (public API: the model classes' own cached connection is private
to PynamoDB and cannot be closed), builds its requests from the PynamoDB model's attributes
and index, and turns items back into models with ``from_raw_data``. Every driver error passes
through `agents_persistence.repositories._dynamodb_errors.driver_errors`.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections import OrderedDict
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]
from pynamodb.connection import TableConnection
from pynamodb.constants import PAY_PER_REQUEST_BILLING_MODE
from pynamodb.exceptions import PynamoDBException, TableDoesNotExist
from pynamodb.pagination import ResultIterator

from agents_persistence._codec import Codec
from agents_persistence._core import Record
from agents_persistence.errors import (
    CheckpointerError,
    ConfigurationError,
    ConflictError,
    SchemaNotReadyError,
    StateTooLargeError,
)
from agents_persistence.models.dynamodb import CheckpointItem, ConnectionSettings, ThreadHeadItem
from agents_persistence.repositories._call_budget import deadline
from agents_persistence.repositories._dynamodb_budget import BudgetHooks
from agents_persistence.repositories._dynamodb_errors import (
    ItemTooLargeError,
    driver_errors,
    error_code,
)
from agents_persistence.repositories._dynamodb_mapping import (
    ItemMeta,
    check_item_size,
    condition_expired,
    condition_live,
    item_key,
    listing_keys,
    meta_attributes,
    meta_of,
    plan_put,
    record_of,
    sort_key,
    unconditional,
    write_token,
)
from agents_persistence.repositories._dynamodb_pieces import PiecesTable
from agents_persistence.repositories._dynamodb_schema import TableSchema
from agents_persistence.telemetry import note_recovery, note_retry

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager
    from datetime import datetime

    from pynamodb.expressions.condition import Condition

    from agents_persistence._core import WriteRequest
    from agents_persistence.repositories._dynamodb_items import HeadMeta

__all__ = ["PIECES", "SINGLE_ITEM", "TABLE_FORMATS", "DynamoDBTable"]


_MAX_WRITE_ATTEMPTS = 64
"""Conditional write attempts per save before giving up (each lost race costs one attempt)."""
_GUESS_MAX_BYTES = 4096
"""Largest state saved as a create without a read when this process knows nothing of the thread.

A failed conditional put is charged like a write of the item, a read of a missing or small item
costs one read unit: for larger states, reading first is cheaper than guessing wrong.
"""
_HINTS = 1024
"""Threads per checkpointer whose last seen metadata is remembered (see `_Hints`)."""
_PURGE_PAGE_SIZE = 100
_ACTIVE_POLL_SECONDS = 1.0
_DELETED_POLL_SECONDS = 2.0
_CONDITION_FAILED = "ConditionalCheckFailedException"
PIECES = "pieces"
"""The table format of a head item plus piece items per thread (the default)."""
SINGLE_ITEM = "single-item"
"""The table format of one item per thread holding the whole state (earlier versions)."""
TABLE_FORMATS = (PIECES, SINGLE_ITEM)


def _applied(meta: ItemMeta, request: WriteRequest) -> Record:
    return Record(
        thread_id=request.thread_id,
        version=meta.version,
        created_at=meta.created_at,
        updated_at=meta.updated_at,
        expires_at=meta.expires_at,
        size=request.size,
        payload=request.payload,
    )


def _may_exist(request: WriteRequest) -> bool:
    """Whether the save depends on the stored item (not a create, not a blind restore)."""
    return request.expected_version != 0 and not unconditional(request)


_M = TypeVar("_M")


class _Hints(Generic[_M]):
    """The metadata this process last saw of recently used threads, least recent dropped.

    Only a guess for the next save's condition: a stale entry makes the conditional put fail,
    and the save then reads the item. It saves a round trip per save for threads that one
    process keeps saving, and for new threads (no entry: tried as a create). Thread-safe.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, _M] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, thread_id: str) -> _M | None:
        with self._lock:
            return self._entries.get(thread_id)

    def put(self, thread_id: str, meta: _M) -> None:
        with self._lock:
            self._entries[thread_id] = meta
            self._entries.move_to_end(thread_id)
            if len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def drop(self, thread_id: str) -> None:
        with self._lock:
            self._entries.pop(thread_id, None)


class DynamoDBTable:
    """One namespace of one table: the five store primitives plus table life cycle.

    Args:
        settings: Table name and connection settings of the connection this table owns.
        namespace: The checkpointer's (validated) namespace.
        index_shards: How many index partitions a namespace is spread over.
        codec: The checkpointer's codec (``None``: values in clear, as without keys). A codec
            that encrypts works only on a table of the pieces format.
        model: The PynamoDB model that names every attribute and the index.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        namespace: str,
        index_shards: int,
        *,
        codec: Codec | None = None,
        model: type[CheckpointItem] = CheckpointItem,
    ) -> None:
        self.settings = settings
        self.namespace = namespace
        self.codec = Codec(namespace, None) if codec is None else codec
        self.shards = index_shards
        self.model = model
        self.schema = TableSchema.of(model)
        self._meta_attributes = meta_attributes(model)
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
            meta_table=self.schema.meta_table(settings.table_name),
        )
        self._used = False
        self._hints: _Hints[ItemMeta] = _Hints(_HINTS)
        self.pieces_schema = TableSchema.of(ThreadHeadItem)
        self.piece_hints: _Hints[HeadMeta] = _Hints(_HINTS)
        self.single_item_max_bytes: int | None = None
        self._pieces = PiecesTable(self)
        self._format: str | None = None
        self._budget = BudgetHooks(
            settings.connect_timeout + settings.read_timeout, 1 + settings.max_retries
        )

    @property
    def connection(self) -> TableConnection:
        """PynamoDB's connection to the table (its ``connection.client`` is botocore's).

        The client it makes (on first use) keeps its requests within the call's budget.
        """
        self._used = True
        self._budget.install(self._connection.connection.client)
        return self._connection

    def _bounded(self) -> AbstractContextManager[None]:
        """The call's deadline, started once the client exists.

        The first call makes botocore's client (loading its service model, resolving
        credentials): a one-off cost kept out of the budget of the call that happens to pay it.
        """
        _ = self.connection
        return deadline(self.settings.call_timeout)

    def _errors(self, thread_id: str = "", oversize: ItemTooLargeError | None = None) -> Any:
        return driver_errors(self.settings.table_name, thread_id=thread_id, oversize=oversize)

    def _key(self, thread_id: str) -> str:
        return item_key(self.namespace, thread_id)

    @staticmethod
    def _conditional(operation: Callable[..., object], condition: Condition | None) -> bool:
        """Run a conditional put or delete; False when its condition did not hold."""
        try:
            operation(condition=condition)
        except PynamoDBException as exc:
            if error_code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    def _get(self, thread_id: str, attributes: list[str] | None = None) -> CheckpointItem | None:
        """The stored item by a strongly consistent read (of ``attributes`` only), or ``None``."""
        found = self.connection.get_item(
            self._key(thread_id), consistent_read=True, attributes_to_get=attributes
        )
        data = found.get("Item") if found else None
        return None if not data else self.model.from_raw_data(data)

    def _put(self, item: CheckpointItem, condition: Condition | None) -> bool:
        """Write ``item`` if ``condition`` holds; False when it did not."""
        attributes = item.serialize()
        key = attributes.pop(self.schema.hash_key)[self.schema.key_types[self.schema.hash_key]]
        return self._conditional(
            partial(self.connection.put_item, key, attributes=attributes), condition
        )

    def _delete(self, key: str, condition: Condition) -> bool:
        """Delete the item of ``key`` if ``condition`` holds; False when it did not."""
        return self._conditional(partial(self.connection.delete_item, key), condition)

    def _meta(self, thread_id: str) -> ItemMeta | None:
        """The stored item's metadata by a strongly consistent read, without the state."""
        item = self._get(thread_id, self._meta_attributes)
        if item is None:
            self._hints.drop(thread_id)
            return None
        meta = meta_of(item, thread_id)
        self._hints.put(thread_id, meta)
        return meta

    # --- the table's format, and the primitives of each ------------------------------------------

    def table_format(self) -> str:
        """The format of the table, from its key schema (one DescribeTable, remembered).

        Raises:
            SchemaNotReadyError: The table does not exist or has neither format's keys.
            ConfigurationError: The table is of the single-item format and the checkpointer
                encrypts (see `refuse_sealing`).
        """
        if self._format is None:
            description = cast("dict[str, Any]", self.connection.describe_table())
            self._format = self.refuse_sealing(self._format_of(description))
        return self._format

    def refuse_sealing(self, table_format: str) -> str:
        """``table_format``, unless it is the single-item format and the checkpointer encrypts.

        A table of the single-item format holds each thread as one whole JSON document, which
        has no sealed head nor pieces: encrypting it would change what every other reader of
        the table (an earlier version of the library) expects.

        Raises:
            ConfigurationError: ``keys`` on a table of the single-item format, naming the way
                out: a table of the pieces format, and ``agents-persistence copy --to``.
        """
        if table_format == SINGLE_ITEM and self.codec.encrypts:
            table = self.settings.table_name
            raise ConfigurationError(
                f"DynamoDB table {table!r} has the single-item format (one whole document per"
                " thread), which cannot be encrypted: create a table of the pieces format"
                " (create_table(table_format='pieces') on a new table name), copy the threads"
                f" to it with `agents-persistence copy --url dynamodb://{table} --to"
                " dynamodb://NEW_TABLE`, then give keys= to checkpointers on the new table"
            )
        return table_format

    def _format_of(self, description: dict[str, Any]) -> str:
        keys = {(k["AttributeName"], k["KeyType"]) for k in description.get("KeySchema", [])}
        if keys == self.pieces_schema.key_set():
            # Other tables share these keys (the LangGraph savers'): the index tells them apart.
            self.pieces_schema.check(self.settings.table_name, description)
            return PIECES
        if keys == self.schema.key_set():
            return SINGLE_ITEM
        pieces, single = sorted(self.pieces_schema.key_set()), sorted(self.schema.key_set())
        raise SchemaNotReadyError(
            f"DynamoDB table {self.settings.table_name!r} has the key schema {sorted(keys)},"
            f" of neither table format: the pieces format needs {pieces}, the single-item"
            f" format {single}"
        )

    def write(self, request: WriteRequest) -> Record:
        """Store one version atomically (in the table's format)."""
        with self._errors(request.thread_id), self._bounded():
            if self.table_format() == PIECES:
                return self._pieces.write(request)
            return self._write_single(request)

    def read(self, thread_id: str, now: datetime) -> Record | None:
        """The live record with its state (strongly consistent), or ``None``."""
        with self._errors(thread_id), self._bounded():
            if self.table_format() == PIECES:
                return self._pieces.read(thread_id, now)
            return self._read_single(thread_id, now)

    def remove(self, thread_id: str, now: datetime) -> bool:
        """Delete the thread if it is live at ``now``; False if absent or expired."""
        with self._errors(thread_id), self._bounded():
            if self.table_format() == PIECES:
                return self._pieces.remove(thread_id, now)
            return self._remove_single(thread_id, now)

    def page(self, count: int, after: tuple[datetime, str] | None, now: datetime) -> list[Record]:
        """Up to ``count`` live records, newest first, strictly after the ``after`` key."""
        with self._errors(), self._bounded():
            if self.table_format() == PIECES:
                return self._pieces.page(count, after, now)
            return self._page_single(count, after, now)

    def purge(self, now: datetime) -> int:
        """Delete the namespace's threads expired at ``now``; return how many."""
        with self._errors(), self._bounded():
            pieces = self.table_format() == PIECES
        if pieces:
            with self._errors():
                return self._pieces.purge(now)
        return self._purge_single(now)

    def _write_single(self, request: WriteRequest) -> Record:
        """Store one version atomically with a conditional put.

        The condition names the exact metadata the new version is based on (or that no live
        item exists), so a concurrent save makes this one fail and start over instead of
        overwriting it. It is first based on what this process last saw of the thread, which
        saves a read when nothing else wrote it since; a `ConflictError` is raised only after
        a strongly consistent read.
        """
        tid = request.thread_id
        limit = self.single_item_max_bytes
        if limit is not None and request.size > limit:
            raise StateTooLargeError(tid, request.size, limit)
        room = check_item_size(self.model, self.namespace, self.shards, request)
        token = write_token()
        with self._errors(tid, ItemTooLargeError(tid, request.size, room)), self._bounded():
            meta, fresh = self._hints.get(tid), False
            if meta is None and request.size > _GUESS_MAX_BYTES and _may_exist(request):
                meta, fresh = self._meta(tid), True
            for attempt in range(_MAX_WRITE_ATTEMPTS):
                live_version = None if meta is None else meta.live_version(request.now)
                try:
                    request.check(live_version)
                except ConflictError:
                    if fresh:
                        raise
                    meta, fresh = self._meta(tid), True
                    continue
                item, condition = plan_put(
                    self.model, self.namespace, self.shards, request, meta, token
                )
                if self._put(item, condition):
                    record = record_of(item, tid)
                    self._hints.put(tid, ItemMeta.of(record, token))
                    return record
                note_retry("dynamodb", "conditional put lost a race", attempt + 1, tid)
                if fresh:
                    # Lost a race to a concurrent save: retrying at once would collide again.
                    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                meta, fresh = self._meta(tid), True
                if meta is not None and meta.write_id == token:
                    # The client retried a put the service had applied (its reply was lost):
                    # the condition then failed against this very save.
                    note_recovery("dynamodb", "a retried put had been applied", tid)
                    return _applied(meta, request)
        raise CheckpointerError(
            f"thread {tid!r}: no write succeeded after {_MAX_WRITE_ATTEMPTS}"
            " attempts (too many concurrent saves of one thread)"
        )

    def _read_single(self, thread_id: str, now: datetime) -> Record | None:
        """The live item with its state (strongly consistent), or ``None``."""
        with self._errors(thread_id), self._bounded():
            item = self._get(thread_id)
            if item is None:
                self._hints.drop(thread_id)
                return None
            record = record_of(item, thread_id)
        self._hints.put(thread_id, ItemMeta.of(record))
        if record.expires_at is not None and record.expires_at <= now:
            return None
        return record

    def _remove_single(self, thread_id: str, now: datetime) -> bool:
        """Delete the item if it is live at ``now``; False if absent or expired."""
        condition = self.model.pk.exists() & condition_live(self.model, now)
        self._hints.drop(thread_id)
        with self._errors(thread_id), self._bounded():
            return self._delete(self._key(thread_id), condition)

    def _query(
        self,
        list_pk: str,
        *,
        after: str | None,
        where: Condition,
        page_size: int,
        limit: int | None,
    ) -> Iterator[CheckpointItem]:
        return ResultIterator(
            self.connection.query,
            (list_pk,),
            {
                "range_key_condition": None if after is None else self.model.list_sk < after,
                "filter_condition": where,
                "index_name": self.schema.index_name,
                "scan_index_forward": False,
                "limit": page_size,
            },
            map_fn=self.model.from_raw_data,
            limit=limit,
        )

    def _page_single(
        self, count: int, after: tuple[datetime, str] | None, now: datetime
    ) -> list[Record]:
        """Up to ``count`` live records, newest first, strictly after the ``after`` key.

        One Query per index shard, newest first, expired items filtered by the service; the
        shards' results are merged by sort key, which is the contract's order.
        """
        start = None if after is None else sort_key(*after)
        with self._errors(), self._bounded():
            streams = [
                self._query(
                    key,
                    after=start,
                    where=condition_live(self.model, now),
                    page_size=count,
                    limit=count,
                )
                for key in listing_keys(self.namespace, self.shards)
            ]
            merged = (
                streams[0]
                if len(streams) == 1
                else heapq.merge(*streams, key=lambda item: item.list_sk, reverse=True)
            )
            return [record_of(item) for item in islice(merged, count)]

    def _purge_single(self, now: datetime) -> int:
        """Delete the namespace's items expired at ``now``, a page at a time; return how many.

        Each delete is conditional on the item still being expired, so a thread saved again
        since the index was read survives. Each request has a ``call_timeout`` of its own:
        what was removed stays removed, so a long backlog is not cut short by one budget.
        """
        removed = 0
        expired = condition_expired(self.model, now)
        each = self.settings.call_timeout
        with self._errors():
            for key in listing_keys(self.namespace, self.shards):
                start: dict[str, Any] | None = None
                while True:
                    # One Query page per budget: a page the filter empties (live threads
                    # only) still ends the request, where an iterator would go on reading.
                    with deadline(each):
                        page = self.connection.query(
                            key,
                            filter_condition=expired,
                            index_name=self.schema.index_name,
                            scan_index_forward=False,
                            limit=_PURGE_PAGE_SIZE,
                            exclusive_start_key=start,
                        )
                    for raw in page.get("Items", ()):
                        listed = self.model.from_raw_data(raw)
                        with deadline(each):
                            removed += self._delete(listed.pk, expired)
                    start = page.get("LastEvaluatedKey")
                    if not start:
                        break
        return removed

    def _exists(self) -> bool:
        try:
            self.connection.describe_table()
        except TableDoesNotExist:
            return False
        return True

    def create_table(self, *, wait: bool, table_format: str | None = None) -> bool:
        """Create the table, its index and its TTL setting unless they exist; True if created.

        A new table gets ``table_format`` (`PIECES` by default). An existing table is checked
        against ``table_format``, or, when it is ``None``, against either format, so
        deployments of the single-item format keep calling this unchanged.

        With ``wait`` this returns once the table is active and its TTL enabled. Without it,
        TTL is enabled only if the table is already active (DynamoDB refuses it before): call
        again later.
        """
        if table_format is not None and table_format not in TABLE_FORMATS:
            raise ConfigurationError(
                f"table_format must be one of {', '.join(TABLE_FORMATS)}, got {table_format!r:.40}"
            )
        if table_format is not None:
            self.refuse_sealing(table_format)  # before creating a table it could not use
        created = False
        with self._errors():
            if not self._exists():
                schema = self.schema if table_format == SINGLE_ITEM else self.pieces_schema
                try:
                    self.connection.create_table(
                        billing_mode=PAY_PER_REQUEST_BILLING_MODE,
                        **schema.create_table_arguments(),
                    )
                    created = True
                except PynamoDBException as exc:
                    if error_code(exc) != "ResourceInUseException":
                        raise
            description = self._describe(wait=wait)
            found = table_format
            if found is None:
                found = self._format_of(description)
            self.refuse_sealing(found)
            schema = self.schema if found == SINGLE_ITEM else self.pieces_schema
            schema.check(self.settings.table_name, description)
            self._format = found
            if description.get("TableStatus") == "ACTIVE":
                self._ensure_ttl(schema)
        return created

    def _describe(self, *, wait: bool) -> dict[str, Any]:
        while True:
            description = cast("dict[str, Any]", self.connection.describe_table())
            indexes = description.get("GlobalSecondaryIndexes") or []
            active = description.get("TableStatus") == "ACTIVE" and all(
                index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes
            )
            if active or not wait:
                return description
            time.sleep(_ACTIVE_POLL_SECONDS)

    def _ensure_ttl(self, schema: TableSchema) -> None:
        # PynamoDB can enable TTL but not read the setting: botocore's client, which the
        # connection exposes, does that.
        client = cast("Any", self.connection.connection.client)
        found = client.describe_time_to_live(TableName=self.settings.table_name)
        description = found.get("TimeToLiveDescription", {})
        if description.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
            schema.check_ttl(self.settings.table_name, description.get("AttributeName"))
            return
        self.connection.update_time_to_live(schema.ttl_attribute)

    def delete_table(self, *, wait: bool) -> bool:
        """Delete the table and everything in it; False if it did not exist."""
        with self._errors():
            if not self._exists():
                return False
            try:
                self.connection.delete_table()
            except PynamoDBException as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return False
                raise
            while wait and self._exists():
                time.sleep(_DELETED_POLL_SECONDS)
        self._format = None
        return True

    def close(self) -> None:
        """Close the HTTP connections of this table's client, if it was ever used.

        A client is made on first use (resolving credentials on the way): one that was never
        used is not made just to be closed.
        """
        if not self._used:
            return
        try:
            client = cast("Any", self._connection.connection.client)
        except BotoCoreError:  # it could not be made (no region, no credentials): none is open
            return
        client.close()

"""The DynamoDB store's I/O on tables of the pieces format: a head item plus piece items.

A save writes the pieces that changed under fresh sort keys that no reader looks at
(``BatchWriteItem``), then switches the head to them with one ``PutItem`` conditioned on the
stored head's write id (the single atomic step), then deletes the chunks the new head no longer
names. A crash between leaves the previous version whole: its head still names its own pieces;
the chunks left over are removed by the thread's next save, delete or purge (and by the
table's TTL when the thread has one). A load is one
strongly consistent Query of the thread's partition, read again (a few times at most) when a
concurrent save removed a piece between its pages. Listing and purge query the sparse index of
heads. Requests go through PynamoDB's connection's botocore client (PynamoDB's table
connection describes one key schema, this format's items are (de)serialized by its models).
"""

from __future__ import annotations

import heapq
import random
import time
from itertools import islice
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from agents_persistence._core import to_epoch_micros
from agents_persistence.errors import CheckpointerError, ConflictError, CorruptStateError
from agents_persistence.models.dynamodb import HEAD_SORT_KEY, ThreadHeadItem
from agents_persistence.repositories._call_budget import deadline
from agents_persistence.repositories._dynamodb_items import (
    HeadMeta,
    Partition,
    PartitionIncompleteError,
    WritePlan,
    group_of,
    parse_partition,
    plan_write,
)
from agents_persistence.repositories._dynamodb_mapping import (
    item_key,
    listing_keys,
    record_of,
    sort_key,
    unconditional,
    write_token,
)
from agents_persistence.telemetry import note_recovery, note_retry

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime

    from agents_persistence._core import Record, WriteRequest
    from agents_persistence.repositories._dynamodb_table import DynamoDBTable

__all__ = ["PiecesTable"]

_GUESS_MAX_BYTES = 4096
"""Largest state saved as a create without reading first when nothing is known of the thread.

A wrong guess costs the pieces written for nothing (and their deletion) besides the read."""
_BATCH_ITEMS = 25
_MAX_WRITE_ATTEMPTS = 64
_READ_ATTEMPTS = 8
_PURGE_PAGE_SIZE = 100
_CONDITION_FAILED = "ConditionalCheckFailedException"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class PiecesTable:
    """The five store primitives on a table of the pieces format.

    Args:
        owner: The `DynamoDBTable` whose connection, settings, budget and hints it uses.
    """

    def __init__(self, owner: DynamoDBTable) -> None:
        self.owner = owner
        self.model = ThreadHeadItem
        self._pk = ThreadHeadItem.pk.attr_name
        self._sk = ThreadHeadItem.sk.attr_name
        self._write_id = ThreadHeadItem.write_id.attr_name
        self._version = ThreadHeadItem.version.attr_name
        self._expiry = ThreadHeadItem.expires_at_us.attr_name
        self._meta_projection = [
            attribute.attr_name
            for attribute in (
                ThreadHeadItem.pk,
                ThreadHeadItem.sk,
                ThreadHeadItem.version,
                ThreadHeadItem.created_at,
                ThreadHeadItem.updated_at,
                ThreadHeadItem.expires_at_us,
                ThreadHeadItem.write_id,
                ThreadHeadItem.token,
                ThreadHeadItem.pieces_expire,
            )
        ]

    # --- requests ------------------------------------------------------------------------------

    @property
    def _client(self) -> Any:
        return self.owner.connection.connection.client

    @property
    def _table(self) -> str:
        return self.owner.settings.table_name

    def _key(self, pk: str, sk: str) -> dict[str, Any]:
        return {self._pk: {"S": pk}, self._sk: {"S": sk}}

    def _query_pages(self, arguments: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The items of a ``Query``, page after page (each page one request)."""
        while True:
            page = self._client.query(**arguments)
            yield from page.get("Items", ())
            start = page.get("LastEvaluatedKey")
            if not start:
                return
            arguments = {**arguments, "ExclusiveStartKey": start}

    def _partition(
        self, thread_id: str, *, projection: list[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of the thread's partition, by sort key, strongly consistent, paged."""
        names = {"#pk": self._pk}
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "#pk = :pk",
            "ExpressionAttributeValues": {":pk": {"S": item_key(self.owner.namespace, thread_id)}},
            "ConsistentRead": True,
        }
        if projection is not None:
            names.update({f"#a{n}": name for n, name in enumerate(projection)})
            arguments["ProjectionExpression"] = ",".join(f"#a{n}" for n in range(len(projection)))
        arguments["ExpressionAttributeNames"] = names
        return self._query_pages(arguments)

    def _survey(self, thread_id: str) -> HeadMeta:
        """The stored head's metadata and every chunk's sort key (a projection of the partition).

        Remembered in the hints: the next save is based on it.
        """
        groups: dict[str, list[str]] = {}
        head: ThreadHeadItem | None = None
        for raw in self._partition(thread_id, projection=self._meta_projection):
            sk = raw[self._sk]["S"]
            if sk == HEAD_SORT_KEY:
                head = ThreadHeadItem.from_raw_data(raw)
            groups.setdefault(group_of(sk) if sk != HEAD_SORT_KEY else sk, []).append(sk)
        found = {group: tuple(keys) for group, keys in groups.items()}
        meta = HeadMeta.absent(found) if head is None else HeadMeta.of(thread_id, head, found)
        self.owner.piece_hints.put(thread_id, meta)
        return meta

    def _batch(self, requests: list[dict[str, Any]]) -> None:
        """Run put/delete requests with ``BatchWriteItem``, 25 at a time, until all are done."""
        for start in range(0, len(requests), _BATCH_ITEMS):
            pending: dict[str, Any] = {self._table: requests[start : start + _BATCH_ITEMS]}
            attempt = 0
            while pending:
                answer = self._client.batch_write_item(RequestItems=pending)
                pending = answer.get("UnprocessedItems") or {}
                if pending:
                    attempt += 1
                    time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))

    def _tidy(self, thread_id: str, pk: str, sort_keys: list[str]) -> None:
        """Delete chunks no head names any more; a failure leaves them for a later save."""
        if not sort_keys:
            return
        try:
            self._batch([{"DeleteRequest": {"Key": self._key(pk, sk)}} for sk in sort_keys])
        except (BotoCoreError, ClientError, CheckpointerError):
            note_recovery("dynamodb", "unreferenced pieces left for a later save", thread_id)

    # --- save ----------------------------------------------------------------------------------

    def _head_put(self, plan: WritePlan, stored: HeadMeta | None) -> dict[str, Any]:
        put: dict[str, Any] = {"TableName": self._table, "Item": plan.head.serialize()}
        if stored is None:
            put["ConditionExpression"] = "attribute_not_exists(#pk)"
            put["ExpressionAttributeNames"] = {"#pk": self._pk}
        elif not stored.write_id:  # a head written by other means than a save
            put["ConditionExpression"] = "attribute_not_exists(#w) AND #v = :v"
            put["ExpressionAttributeNames"] = {"#w": self._write_id, "#v": self._version}
            put["ExpressionAttributeValues"] = {":v": {"N": str(stored.version)}}
        else:
            put["ConditionExpression"] = "#w = :w"
            put["ExpressionAttributeNames"] = {"#w": self._write_id}
            put["ExpressionAttributeValues"] = {":w": {"S": stored.write_id}}
        return put

    def _apply(self, plan: WritePlan, stored: HeadMeta | None) -> bool:
        """Write the new chunks, then switch the head to them; False if the head moved.

        The chunks' sort keys are new (unique to this save): until the head names them no
        reader looks at them, so the head put, conditioned on the stored head, is the one
        atomic step that makes the new version visible.
        """
        if plan.puts:
            self._batch([{"PutRequest": {"Item": item.serialize()}} for item in plan.puts])
        if not self._put_head(self._head_put(plan, stored)):
            return False
        self._tidy(plan.head.pk, plan.head.pk, plan.deletes)
        return True

    def _put_head(self, head: dict[str, Any]) -> bool:
        """The conditional head put; False when its condition did not hold."""
        try:
            self._client.put_item(**head)
        except ClientError as exc:
            if _code(exc) != _CONDITION_FAILED:
                raise
            return False
        return True

    def write(self, request: WriteRequest) -> Record:
        """Store one version: the changed pieces and a head switched to them atomically.

        The head is written on condition that the stored head is the one this save is based
        on (its write id), or that none exists. A failed condition reads the partition again
        and starts over; `ConflictError` is raised only after such a fresh read.
        """
        try:
            return self._write(request)
        except ConflictError:
            raise  # decided on a fresh read, this save's chunks already removed
        except BaseException:
            # Chunks of this save may be left over: the next save reads the partition's keys.
            self.owner.piece_hints.drop(request.thread_id)
            raise

    def _write(self, request: WriteRequest) -> Record:
        tid = request.thread_id
        hints = self.owner.piece_hints
        write_id = write_token()
        sealer = self.owner.codec.sealer()  # one data key for the save and its retries
        known = hints.get(tid)
        fresh = False
        if known is None and (request.size <= _GUESS_MAX_BYTES or not _may_exist(request)):
            known = HeadMeta.absent({})  # a guess: a failed condition costs little here
        elif known is None:
            known, fresh = self._survey(tid), True
        for attempt in range(_MAX_WRITE_ATTEMPTS):
            stored = known if known.present else None
            try:
                request.check(known.live_version(request.now))
            except ConflictError:
                if fresh:
                    raise
                known, fresh = self._survey(tid), True
                continue
            plan = plan_write(
                self.owner.namespace, self.owner.shards, request, known, write_id, sealer
            )
            if self._apply(plan, stored):
                hints.put(tid, plan.meta)
                return _record(plan, request)
            note_retry("dynamodb", "conditional head write lost a race", attempt + 1, tid)
            if fresh:
                time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
            known, fresh = self._survey(tid), True
            if known.write_id == write_id:
                # The client retried a head put the service had applied (its reply was lost).
                note_recovery("dynamodb", "a retried put had been applied", tid)
                self._tidy(tid, plan.head.pk, plan.deletes)
                hints.put(tid, plan.meta)
                return _record(plan, request)
            # This save's chunks are named by no head: remove them before trying again.
            self._tidy(tid, plan.head.pk, [item.sk for item in plan.puts])
        raise CheckpointerError(
            f"thread {tid!r}: no write succeeded after {_MAX_WRITE_ATTEMPTS}"
            " attempts (too many concurrent saves of one thread)"
        )

    # --- load ----------------------------------------------------------------------------------

    def read(self, thread_id: str, now: datetime) -> Record | None:
        """The live head with its assembled state (one strongly consistent Query), or ``None``."""
        hints = self.owner.piece_hints
        for attempt in range(_READ_ATTEMPTS):
            partition = Partition()
            for raw in self._partition(thread_id):
                partition.add(raw, self._sk)
            if partition.head is None:
                hints.put(thread_id, HeadMeta.absent(partition.groups()))
                return None
            meta = HeadMeta.of(thread_id, partition.head, partition.groups())
            if meta.live_version(now) is None:
                hints.put(thread_id, meta)
                return None
            try:
                record = parse_partition(thread_id, partition, self.owner.codec)
            except PartitionIncompleteError:
                # A concurrent save switched heads and removed pieces between pages.
                note_retry("dynamodb", "a piece moved during a load", attempt + 1, thread_id)
                continue
            hints.put(thread_id, meta)
            return record
        raise CorruptStateError(thread_id, "a stored piece named by the head is missing")

    # --- delete, list, purge -------------------------------------------------------------------

    def _delete_head(self, pk: str, condition: str, values: dict[str, Any]) -> bool:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=self._key(pk, HEAD_SORT_KEY),
                ConditionExpression=condition,
                ExpressionAttributeNames={"#pk": self._pk, "#e": self._expiry},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _code(exc) == _CONDITION_FAILED:
                return False
            raise
        return True

    def _drop_partition(self, thread_id: str, pk: str) -> None:
        """Delete the chunks of a thread whose head is gone.

        Best effort: the thread is already gone for every read, so a failure (the call's
        budget spent) leaves the chunks to the table's TTL or to a later save of the thread.
        """
        try:
            sort_keys = [
                raw[self._sk]["S"]
                for raw in self._partition(thread_id, projection=[self._pk, self._sk])
                if raw[self._sk]["S"] != HEAD_SORT_KEY
            ]
        except (BotoCoreError, ClientError, CheckpointerError):
            note_recovery("dynamodb", "pieces of a deleted head left for later", thread_id)
            return
        self._tidy(thread_id, pk, sort_keys)

    def remove(self, thread_id: str, now: datetime) -> bool:
        """Delete the head if it is live at ``now``, then its pieces; False if absent or expired."""
        self.owner.piece_hints.drop(thread_id)
        pk = item_key(self.owner.namespace, thread_id)
        deleted = self._delete_head(
            pk,
            "attribute_exists(#pk) AND (attribute_not_exists(#e) OR #e > :now)",
            {":now": {"N": str(to_epoch_micros(now))}},
        )
        if deleted:
            self._drop_partition(thread_id, pk)
        return deleted

    def _index_query(
        self, list_pk: str, *, after: str | None, filter_expression: str, now: datetime, limit: int
    ) -> Iterator[dict[str, Any]]:
        schema = self.owner.pieces_schema
        names = {"#lp": schema.index_hash_key, "#e": self._expiry}
        values: dict[str, Any] = {
            ":lp": {"S": list_pk},
            ":now": {"N": str(to_epoch_micros(now))},
        }
        condition = "#lp = :lp"
        if after is not None:
            names["#ls"] = schema.index_range_key
            values[":after"] = {"S": after}
            condition += " AND #ls < :after"
        arguments: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": schema.index_name,
            "KeyConditionExpression": condition,
            "FilterExpression": filter_expression,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": limit,
        }
        return self._query_pages(arguments)

    def page(self, count: int, after: tuple[datetime, str] | None, now: datetime) -> list[Record]:
        """Up to ``count`` live heads, newest first, strictly after the ``after`` key."""
        start = None if after is None else sort_key(*after)
        sort_name = self.owner.pieces_schema.index_range_key
        streams = [
            self._index_query(
                key,
                after=start,
                filter_expression="attribute_not_exists(#e) OR #e > :now",
                now=now,
                limit=count,
            )
            for key in listing_keys(self.owner.namespace, self.owner.shards)
        ]
        merged = (
            streams[0]
            if len(streams) == 1
            else heapq.merge(*streams, key=lambda raw: raw[sort_name]["S"], reverse=True)
        )
        return [record_of(ThreadHeadItem.from_raw_data(raw)) for raw in islice(merged, count)]

    def purge(self, now: datetime) -> int:
        """Delete the heads expired at ``now`` and their pieces; return how many threads.

        Each request has a ``call_timeout`` of its own, as in the single-item format.
        """
        removed = 0
        each = self.owner.settings.call_timeout
        expired = "#e <= :now"
        values = {":now": {"N": str(to_epoch_micros(now))}}
        for key in listing_keys(self.owner.namespace, self.owner.shards):
            pages = self._index_query(
                key, after=None, filter_expression=expired, now=now, limit=_PURGE_PAGE_SIZE
            )
            while True:
                with deadline(each):
                    raw = next(pages, None)
                if raw is None:
                    break
                head = ThreadHeadItem.from_raw_data(raw)
                thread_id = record_of(head).thread_id
                with deadline(each):
                    if self._delete_head(head.pk, f"attribute_exists(#pk) AND {expired}", values):
                        removed += 1
                        self.owner.piece_hints.drop(thread_id)
                        self._drop_partition(thread_id, head.pk)
        return removed


def _may_exist(request: WriteRequest) -> bool:
    """Whether the save depends on the stored head (not a create, not a blind restore)."""
    return request.expected_version != 0 and not unconditional(request)


def _record(plan: WritePlan, request: WriteRequest) -> Record:
    from agents_persistence._core import Record

    return Record(
        thread_id=request.thread_id,
        version=plan.meta.version,
        created_at=plan.meta.created_at,
        updated_at=plan.meta.updated_at,
        expires_at=plan.meta.expires_at,
        size=request.size,
        manifest=plan.layout.manifest,
        written=plan.layout.written,
    )

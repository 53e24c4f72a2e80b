"""What each DynamoDB saver operation does, on a `LangGraphTable`: the savers' logic.

Both twins run these methods (the async one in worker threads). Layout and generations are
described in `agents_persistence.langgraph._dynamodb_model`. Writes go children first: a
value's parts, then the value, the checkpoint last, so a checkpoint is never visible before
what it refers to.
"""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)

from agents_persistence._core import to_epoch_micros, validate_thread_id
from agents_persistence.errors import (
    CheckpointerError,
    CorruptStateError,
    InvalidArgumentError,
    ThreadForkError,
)
from agents_persistence.langgraph._dynamodb_maintenance import Maintenance, checkpoint_items
from agents_persistence.langgraph._dynamodb_model import (
    HEADER,
    SORT_KEY_BYTES,
    LangGraphItem,
    blob_key,
    checkpoint_key,
    checkpoint_prefix,
    head_key,
    write_key,
    write_prefix,
)
from agents_persistence.repositories._dynamodb_mapping import ttl_moment

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence
    from datetime import datetime, timedelta

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
    from langgraph.checkpoint.serde.base import SerializerProtocol
    from pynamodb.expressions.condition import Condition

    from agents_persistence._core import Clock
    from agents_persistence.langgraph._dynamodb_io import LangGraphTable

__all__ = ["Operations", "target"]

_EMPTY = "empty"  # type of a channel that has a version but no value
_JSON = "json"
_START_ATTEMPTS = 32
_LIST_CHUNK = 25  # checkpoints a listing loads per round of requests


def target(config: RunnableConfig) -> tuple[str, str, str | None]:
    """``(thread_id, checkpoint_ns, checkpoint_id)`` of ``config``, validated."""
    configurable = config.get("configurable") or {}
    thread_id = validate_thread_id(configurable.get("thread_id"))
    namespace = configurable.get("checkpoint_ns") or ""
    if not isinstance(namespace, str):
        raise InvalidArgumentError(f"checkpoint_ns must be a str, not {namespace!r:.40}")
    checkpoint_id = configurable.get("checkpoint_id") or None
    return thread_id, namespace, checkpoint_id


def _fits(key: str) -> str:
    """``key`` if DynamoDB takes it as a sort key; `InvalidArgumentError` if it is too long."""
    if len(key.encode()) > SORT_KEY_BYTES:
        raise InvalidArgumentError(
            f"namespace, channel, version and task id together are too long for a DynamoDB"
            f" sort key ({len(key.encode())} bytes of UTF-8, at most {SORT_KEY_BYTES}):"
            f" {key[:60]!r}..."
        )
    return key


def _jsonable(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"the {what} must be JSON: {exc}") from exc


def _config(thread_id: str, namespace: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": namespace,
            "checkpoint_id": checkpoint_id,
        }
    }


class Operations(Maintenance):
    """The saver API on one table, with one serializer, TTL and retention."""

    def __init__(
        self,
        table: LangGraphTable,
        serde: SerializerProtocol,
        *,
        ttl: timedelta | None,
        keep_last: int | None,
        clock: Clock,
        exclusive: bool = False,
    ) -> None:
        self.table = table
        self.serde = serde
        self.ttl = ttl
        self.keep_last = keep_last
        self.clock = clock
        self.exclusive = exclusive

    # --- threads -------------------------------------------------------------------------

    def _header_item(self, thread_id: str, gen: str, now: datetime) -> LangGraphItem:
        expires = None if self.ttl is None else now + self.ttl
        return LangGraphItem(
            thread_id,
            HEADER,
            gen=gen,
            expires_at=None if expires is None else ttl_moment(expires),
            expires_at_us=None if expires is None else to_epoch_micros(expires),
        )

    def start(self, thread_id: str, now: datetime, *, restart: bool = True) -> str | None:
        """The generation to write under, the thread's expiry refreshed (with a TTL).

        A missing or expired thread starts afresh under a new generation (the old items are
        then swept); with ``restart=False`` an expired thread gives ``None`` instead.
        """
        for _ in range(_START_ATTEMPTS):
            header = self.table.get((thread_id, HEADER))
            if header is not None and header.gen and self.live(header, now):
                if self.ttl is None:
                    return header.gen
                if self.table.put(
                    self._header_item(thread_id, header.gen, now),
                    LangGraphItem.gen == header.gen,
                ):
                    return header.gen
                continue
            if header is not None and not restart:
                return None
            gen = uuid.uuid4().hex
            condition: Condition
            if header is None:
                condition = LangGraphItem.pk.does_not_exist()
            elif header.gen:
                condition = LangGraphItem.gen == header.gen
            else:
                condition = LangGraphItem.gen.does_not_exist()
            if self.table.put(self._header_item(thread_id, gen, now), condition):
                self.sweep(thread_id, gen)
                return gen
        raise CheckpointerError(
            f"thread {thread_id!r}: its header changed {_START_ATTEMPTS} times in a row"
            " (too many concurrent writers)"
        )

    # --- writing -------------------------------------------------------------------------

    def _dump(self, value: Any, what: str) -> tuple[str, bytes]:
        try:
            return self.serde.dumps_typed(value)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"cannot serialize {what}: {exc}") from exc

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store the values of ``new_versions``, then the checkpoint; apply retention."""
        thread_id, namespace, parent_id = target(config)
        now = self.clock()
        body = _jsonable(
            {k: v for k, v in checkpoint.items() if k != "channel_values"},
            "checkpoint (without its channel values)",
        )
        stored_metadata = _jsonable(
            get_serializable_checkpoint_metadata(config, metadata), "checkpoint metadata"
        )
        run_id = stored_metadata.get("run_id")
        values = checkpoint["channel_values"]
        blobs: list[tuple[LangGraphItem, bytes]] = []
        for channel, version in new_versions.items():
            type_, data = (
                self._dump(values[channel], f"channel {channel!r}")
                if channel in values
                else (_EMPTY, b"")
            )
            key = _fits(blob_key(namespace, channel, str(version)))
            item = LangGraphItem(
                thread_id, key, ns=namespace, channel=channel, version=str(version), type=type_
            )
            blobs.append((item, data))
        payload = json.dumps(
            {"checkpoint": body, "metadata": stored_metadata}, separators=(",", ":")
        ).encode()
        head = LangGraphItem(
            thread_id,
            _fits(checkpoint_key(namespace, checkpoint["id"])),
            ns=namespace,
            checkpoint_id=checkpoint["id"],
            parent_id=parent_id,
            run_id=run_id if isinstance(run_id, str) else None,
            type=_JSON,
        )
        gen = self.start(thread_id, now)
        owned = None
        if self.exclusive:
            owned = self._owner(thread_id, namespace, str(gen), parent_id, checkpoint["id"])
        children: list[LangGraphItem] = []
        for item, data in blobs:
            item.gen = gen
            children += self.table.with_payload(item, data)
        head.gen = gen
        *parts, head = self.table.with_payload(head, payload)
        self.table.batch_write([*children, *parts])
        if owned is None:
            self.table.batch_write([head])
        elif not self.table.put_both(owned[0], owned[1], head):
            latest = next(
                checkpoint_items(self.table, thread_id, namespace, str(gen), page_size=1), None
            )
            # The client may have sent the transaction again after a reply it did not get:
            # then the head it fails on is this put's own, and the checkpoint is stored.
            mine = (
                latest is not None
                and latest.checkpoint_id == checkpoint["id"]
                and latest.parent_id == parent_id
            )
            if not mine:
                # Another owner stored first: what this put wrote is nobody's (fresh versions).
                self.table.batch_write(deletes=self._keys([*children, *parts]))
                raise ThreadForkError(
                    thread_id,
                    namespace,
                    parent_id,
                    None if latest is None else latest.checkpoint_id,
                )
        if self.keep_last is not None:
            self.retain(thread_id, namespace, str(gen), self.keep_last)
        return _config(thread_id, namespace, checkpoint["id"])

    def _owner(
        self, thread_id: str, namespace: str, gen: str, parent_id: str | None, checkpoint_id: str
    ) -> tuple[LangGraphItem, tuple[str, dict[str, Any]]]:
        """Write ownership: the namespace's new head item and the condition to write it under.

        `ThreadForkError` at once unless ``parent_id`` is the namespace's latest checkpoint (or
        the latest is ``checkpoint_id`` itself with that parent: a retry). The head read here
        is the condition: the checkpoint goes in one transaction with the new head, only if
        no other owned ``put`` changed the head in between.
        """
        stored = self.table.get((thread_id, head_key(namespace)))
        latest = next(checkpoint_items(self.table, thread_id, namespace, gen, page_size=1), None)
        latest_id = None if latest is None else latest.checkpoint_id
        retry = latest is not None and latest_id == checkpoint_id and latest.parent_id == parent_id
        if latest_id != parent_id and not retry:
            raise ThreadForkError(thread_id, namespace, parent_id, latest_id)
        condition: tuple[str, dict[str, Any]]
        if stored is None:
            condition = ("attribute_not_exists(#pk)", {})
        elif stored.checkpoint_id is None or stored.gen is None:
            raise CorruptStateError(
                thread_id, f"head item of namespace {namespace!r} is incomplete"
            )
        else:
            condition = (
                "#checkpoint_id = :checkpoint_id AND #gen = :gen",
                {":checkpoint_id": stored.checkpoint_id, ":gen": stored.gen},
            )
        new_head = LangGraphItem(
            thread_id, head_key(namespace), gen=gen, ns=namespace, checkpoint_id=checkpoint_id
        )
        return new_head, condition

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> None:
        """Store a task's writes; special channels (errors, interrupts) overwrite, others stay.

        Writes to an expired thread are dropped (their checkpoint is gone).
        """
        thread_id, namespace, checkpoint_id = target(config)
        if checkpoint_id is None:
            raise InvalidArgumentError("put_writes needs a config with a checkpoint_id")
        if not writes:
            return
        rows = []
        for index, (channel, value) in enumerate(writes):
            type_, data = self._dump(value, f"the write to {channel!r}")
            idx = WRITES_IDX_MAP.get(channel, index)
            item = LangGraphItem(
                thread_id,
                _fits(write_key(namespace, checkpoint_id, task_id, idx)),
                ns=namespace,
                checkpoint_id=checkpoint_id,
                task_id=task_id,
                task_path=task_path,
                idx=idx,
                channel=channel,
                type=type_,
            )
            rows.append((item, data))
        gen = self.start(thread_id, self.clock(), restart=False)
        if gen is None:
            return
        special = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        existing: set[str] = set()
        if not special:
            prefix = write_prefix(namespace, checkpoint_id, task_id)
            existing = {
                item.sk
                for item in self.table.query(
                    thread_id, LangGraphItem.sk.startswith(prefix), attributes=self.KEYS
                )
                if item.gen == gen
            }
        items: list[LangGraphItem] = []
        for item, data in rows:
            if item.sk in existing:
                continue
            item.gen = gen
            items += self.table.with_payload(item, data)
        self.table.batch_write(items)

    # --- reading -------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names, or the thread's latest in its namespace."""
        thread_id, namespace, checkpoint_id = target(config)
        gen = self.live_gen(thread_id, self.clock())
        if gen is None:
            return None
        found: LangGraphItem | None = None
        if checkpoint_id is not None:
            found = self.table.get((thread_id, checkpoint_key(namespace, checkpoint_id)))
        else:
            found = next(checkpoint_items(self.table, thread_id, namespace, gen, page_size=4), None)
        if found is None or found.gen != gen:
            return None
        return self._assemble([found])[0]

    def listing(
        self,
        config: RunnableConfig | None,
        wanted: Mapping[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first (by id, then thread, then namespace), loaded in chunks."""
        if limit is not None and limit <= 0:
            return
        configurable = (config or {}).get("configurable") or {}
        before_id = ((before or {}).get("configurable") or {}).get("checkpoint_id")
        only_id = configurable.get("checkpoint_id")
        candidates = self._candidates(configurable)
        left = limit
        chunk: list[LangGraphItem] = []
        for item in candidates:
            if (only_id and item.checkpoint_id != only_id) or (
                before_id and str(item.checkpoint_id) >= before_id
            ):
                continue
            chunk.append(item)
            if len(chunk) >= _LIST_CHUNK:
                for found in self._assemble(chunk, wanted):
                    yield found
                    if left is not None:
                        left -= 1
                        if left <= 0:
                            return
                chunk = []
        for found in self._assemble(chunk, wanted):
            yield found
            if left is not None:
                left -= 1
                if left <= 0:
                    return

    def _candidates(self, configurable: Mapping[str, Any]) -> Iterator[LangGraphItem]:
        """Live checkpoint items a listing considers, in its order."""
        now = self.clock()
        thread_id = configurable.get("thread_id")
        namespace = configurable.get("checkpoint_ns")
        if thread_id is None:
            yield from self._all_checkpoints(now, namespace)
            return
        thread_id = validate_thread_id(thread_id)
        gen = self.live_gen(thread_id, now)
        if gen is None:
            return
        if namespace is not None:
            yield from checkpoint_items(self.table, thread_id, namespace, gen)
        else:
            # Every namespace: sorted here, so only keys are read first (see `_assemble`).
            items = checkpoint_items(self.table, thread_id, None, gen, attributes=self.KEYS)
            yield from sorted(items, key=lambda i: (i.checkpoint_id, i.ns), reverse=True)

    def _all_checkpoints(self, now: datetime, namespace: str | None) -> list[LangGraphItem]:
        """Every live checkpoint of the table (of one namespace): a Scan."""
        condition = LangGraphItem.sk.startswith(checkpoint_prefix(namespace))
        items = list(self.table.scan(condition, self.KEYS))
        headers = self.table.batch_get((item.pk, HEADER) for item in items)
        gens = {key[0]: header.gen for key, header in headers.items() if self.live(header, now)}
        live = [item for item in items if item.gen is not None and gens.get(item.pk) == item.gen]
        return sorted(live, key=lambda i: (i.checkpoint_id, i.pk, i.ns), reverse=True)

    def _assemble(
        self, items: Sequence[LangGraphItem], wanted: Mapping[str, Any] | None = None
    ) -> list[CheckpointTuple]:
        """Tuples of checkpoint ``items`` whose metadata matches ``wanted``, values and writes.

        Items read with `KEYS` only (no ``type``) are read again whole first.
        """
        partial = [(item.pk, item.sk) for item in items if item.type is None]
        if partial:
            whole = self.table.batch_get(partial)
            items = [whole.get((item.pk, item.sk), item) for item in items]
            items = [item for item in items if item.type is not None]
        bodies = []
        for item, payload in zip(items, self.table.payloads(items), strict=True):
            try:
                body = json.loads(payload)
            except ValueError as exc:
                raise CorruptStateError(item.pk, f"checkpoint {item.checkpoint_id}: {exc}") from exc
            metadata = body.get("metadata") or {}
            if all(metadata.get(key) == value for key, value in (wanted or {}).items()):
                bodies.append((item, body))
        blob_keys = [
            (item.pk, blob_key(str(item.ns), channel, str(version)))
            for item, body in bodies
            for channel, version in (body["checkpoint"].get("channel_versions") or {}).items()
        ]
        found = self.table.batch_get(blob_keys)
        gens = {item.pk: item.gen for item, _ in bodies}
        blobs = [
            blob for blob in found.values() if blob.type != _EMPTY and blob.gen == gens.get(blob.pk)
        ]
        values = {
            (blob.pk, blob.sk): self._load(blob, payload)
            for blob, payload in zip(blobs, self.table.payloads(blobs), strict=True)
        }
        return [self._tuple(item, body, values) for item, body in bodies]

    def _load(self, item: LangGraphItem, payload: bytes) -> Any:
        """The value of a value or write item; `CorruptStateError` if it cannot be decoded."""
        try:
            return self.serde.loads_typed((str(item.type), payload))
        except Exception as exc:
            raise CorruptStateError(
                item.pk, f"channel {item.channel!r} ({item.type}): {exc}"
            ) from exc

    def _writes(self, item: LangGraphItem) -> list[tuple[str, str, Any]]:
        prefix = write_prefix(str(item.ns), str(item.checkpoint_id))
        writes = [
            write
            for write in self.table.query(item.pk, LangGraphItem.sk.startswith(prefix))
            if write.gen == item.gen
        ]
        writes.sort(key=lambda w: (w.task_path or "", w.task_id or "", int(w.idx or 0)))
        return [
            (str(write.task_id), str(write.channel), self._load(write, payload))
            for write, payload in zip(writes, self.table.payloads(writes), strict=True)
        ]

    def _tuple(
        self, item: LangGraphItem, body: Mapping[str, Any], values: Mapping[tuple[str, str], Any]
    ) -> CheckpointTuple:
        thread_id, namespace = item.pk, str(item.ns)
        checkpoint = dict(body["checkpoint"])
        channel_values = {}
        for channel, version in (checkpoint.get("channel_versions") or {}).items():
            key = (thread_id, blob_key(namespace, channel, str(version)))
            if key in values:
                channel_values[channel] = values[key]
        checkpoint["channel_values"] = channel_values
        parent = None
        if item.parent_id is not None:
            parent = _config(thread_id, namespace, item.parent_id)
        return CheckpointTuple(
            config=_config(thread_id, namespace, str(item.checkpoint_id)),
            checkpoint=checkpoint,  # type: ignore[arg-type]
            metadata=dict(body.get("metadata") or {}),  # type: ignore[arg-type]
            parent_config=parent,
            pending_writes=self._writes(item),
        )

    # --- copying -------------------------------------------------------------------------

    def copy_thread(self, source: str, target: str) -> None:
        """Copy every checkpoint, value and write of ``source`` to ``target``.

        An expired or missing source copies nothing; the target's expiry starts afresh.

        Raises:
            InvalidArgumentError: ``target`` already has checkpoints (nothing is copied).
        """
        source, target = validate_thread_id(source), validate_thread_id(target)
        if source == target:
            raise InvalidArgumentError("copy_thread needs two different threads")
        now = self.clock()
        source_gen = self.live_gen(source, now)
        if source_gen is None:
            return
        target_gen = self.live_gen(target, now)
        if target_gen is not None and next(
            checkpoint_items(self.table, target, None, target_gen, page_size=1), None
        ):
            raise InvalidArgumentError(
                f"thread {target!r} already has checkpoints: delete it first or copy elsewhere"
            )
        gen = self.start(target, now)
        copies: list[LangGraphItem] = []
        heads: list[LangGraphItem] = []
        for item in self.table.query(source, None):
            if item.sk == HEADER or item.gen != source_gen:
                continue
            copy = LangGraphItem.from_raw_data(item.serialize())
            copy.pk = target
            copy.gen = gen
            (heads if item.sk.startswith(checkpoint_prefix(None)) else copies).append(copy)
        # Values, writes and parts first: a copied checkpoint never refers to a missing item.
        self.table.batch_write(copies)
        self.table.batch_write(heads)

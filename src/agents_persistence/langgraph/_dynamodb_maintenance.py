"""Expiry, deletion, retention and copies of the DynamoDB savers (mixed into `Operations`)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import TYPE_CHECKING

from agents_persistence._core import to_epoch_micros, validate_thread_id
from agents_persistence.errors import CorruptStateError
from agents_persistence.langgraph._dynamodb_model import (
    HEADER,
    LangGraphItem,
    blob_prefix,
    checkpoint_prefix,
    write_prefix,
)

if TYPE_CHECKING:
    import builtins
    from collections.abc import Iterable, Iterator, Sequence
    from datetime import datetime, timedelta

    from agents_persistence._core import Clock
    from agents_persistence.langgraph._dynamodb_io import Key, LangGraphTable

__all__ = ["Maintenance", "checkpoint_items", "version_order"]

_IN_VALUES = 100  # DynamoDB's most values of one IN


def version_order(version: str) -> tuple[float, str]:
    """A channel version's place in its channel's history (counters first, then text)."""
    try:
        return float(version.split(".")[0]), version
    except ValueError:
        return float("-inf"), version


def checkpoint_items(
    table: LangGraphTable,
    thread_id: str,
    namespace: str | None,
    gen: str,
    *,
    page_size: int | None = None,
    attributes: Sequence[str] | None = None,
) -> Iterator[LangGraphItem]:
    """A thread's checkpoints of generation ``gen`` (of one namespace), newest id first."""
    condition = LangGraphItem.sk.startswith(checkpoint_prefix(namespace))
    for item in table.query(
        thread_id, condition, descending=True, page_size=page_size, attributes=attributes
    ):
        if item.gen == gen:
            yield item


class Maintenance:
    """Thread expiry, deletes, retention, pruning and copies."""

    table: LangGraphTable
    ttl: timedelta | None
    clock: Clock

    KEYS = (
        LangGraphItem.pk.attr_name,
        LangGraphItem.sk.attr_name,
        LangGraphItem.gen.attr_name,
        LangGraphItem.ns.attr_name,
        LangGraphItem.checkpoint_id.attr_name,
        LangGraphItem.channel.attr_name,
        LangGraphItem.version.attr_name,
        LangGraphItem.parts.attr_name,
        LangGraphItem.part_key.attr_name,
        LangGraphItem.expires_at_us.attr_name,
    )
    """What deleting an item needs to know of it (its parts included): never its payload."""

    # --- expiry --------------------------------------------------------------------------

    @staticmethod
    def live(header: LangGraphItem, now: datetime) -> bool:
        """Whether the thread of ``header`` has not expired at ``now``."""
        micros = header.expires_at_us
        return micros is None or int(micros) > to_epoch_micros(now)

    def live_gen(self, thread_id: str, now: datetime) -> str | None:
        """The generation of a live thread, or ``None`` if it is missing or has expired."""
        header = self.table.get((thread_id, HEADER))
        if header is None or not header.gen or not self.live(header, now):
            return None
        return header.gen

    def _keys(self, items: Iterable[LangGraphItem]) -> list[Key]:
        keys: list[Key] = []
        for item in items:
            keys += self.table.part_keys(item)
            keys.append((item.pk, item.sk))
        return keys

    def sweep(self, thread_id: str, gen: str) -> None:
        """Delete the items a thread keeps from its earlier generations."""
        old = [
            item
            for item in self.table.query(thread_id, None, attributes=self.KEYS)
            if item.sk != HEADER and item.gen != gen
        ]
        self.table.batch_write(deletes=self._keys(old))

    def purge_expired(self, now: datetime) -> int:
        """Delete every item of expired threads (and old generations' items): a Scan.

        Returns the number of expired threads deleted. A thread whose header DynamoDB's TTL
        already removed counts too.
        """
        by_thread: dict[str, list[LangGraphItem]] = defaultdict(list)
        for item in self.table.scan(LangGraphItem.pk.exists(), self.KEYS):
            by_thread[item.pk].append(item)
        deleted = 0
        for thread_id, items in by_thread.items():
            header = next((item for item in items if item.sk == HEADER), None)
            if header is not None and header.gen and self.live(header, now):
                self.table.batch_write(
                    deletes=self._keys(i for i in items if i.sk != HEADER and i.gen != header.gen)
                )
                continue
            if header is not None and not self.table.delete(
                (thread_id, HEADER), LangGraphItem.expires_at_us <= to_epoch_micros(now)
            ):
                continue  # written again since the scan
            self.table.batch_write(deletes=self._keys(i for i in items if i.sk != HEADER))
            deleted += 1
        return deleted

    # --- deleting ------------------------------------------------------------------------

    def delete_threads(self, thread_ids: Iterable[str]) -> None:
        """Delete the threads: their header first (invisible at once), then every item."""
        for thread_id in sorted({validate_thread_id(t) for t in thread_ids}):
            self.table.delete((thread_id, HEADER))
            items = self.table.query(thread_id, None, attributes=self.KEYS)
            self.table.batch_write(deletes=self._keys(items))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints ``run_ids`` made, their writes, and values no longer used."""
        runs = sorted(set(run_ids))
        doomed: dict[tuple[str, str], builtins.list[LangGraphItem]] = defaultdict(list)
        for start in range(0, len(runs), _IN_VALUES):
            condition = LangGraphItem.sk.startswith(checkpoint_prefix(None)) & (
                LangGraphItem.run_id.is_in(*runs[start : start + _IN_VALUES])
            )
            for item in self.table.scan(condition, self.KEYS):
                doomed[(item.pk, str(item.ns))].append(item)
        for (thread_id, namespace), items in doomed.items():
            self._delete_checkpoints(thread_id, namespace, items, strict=True)

    def keep_latest(self, thread_ids: Sequence[str], keep: int) -> None:
        """Keep the newest ``keep`` checkpoints per thread and namespace, delete the others."""
        for thread_id in sorted({validate_thread_id(t) for t in thread_ids}):
            gen = self.live_gen(thread_id, self.clock())
            if gen is None:
                continue
            by_ns: dict[str, builtins.list[LangGraphItem]] = defaultdict(list)
            for item in checkpoint_items(self.table, thread_id, None, gen, attributes=self.KEYS):
                by_ns[str(item.ns)].append(item)
            for namespace, items in by_ns.items():
                items.sort(key=lambda i: str(i.checkpoint_id), reverse=True)
                if len(items) > keep:
                    self._delete_checkpoints(thread_id, namespace, items[keep:], strict=True)

    def retain(self, thread_id: str, namespace: str, gen: str, keep: int) -> None:
        """Retention after a put: delete what lies beyond the newest ``keep`` of a namespace."""
        items = checkpoint_items(self.table, thread_id, namespace, gen, attributes=self.KEYS)
        doomed = [item for number, item in enumerate(items) if number >= keep]
        if doomed:
            self._delete_checkpoints(thread_id, namespace, doomed, strict=False)

    def _delete_checkpoints(
        self,
        thread_id: str,
        namespace: str,
        items: Sequence[LangGraphItem],
        *,
        strict: bool,
    ) -> None:
        """Delete checkpoints (their writes first, then them), then values no longer used."""
        writes: builtins.list[LangGraphItem] = []
        for item in items:
            prefix = write_prefix(namespace, str(item.checkpoint_id))
            writes += self.table.query(
                thread_id, LangGraphItem.sk.startswith(prefix), attributes=self.KEYS
            )
        self.table.batch_write(deletes=self._keys([*writes, *items]))
        self._collect_values(thread_id, namespace, strict=strict)

    def _collect_values(self, thread_id: str, namespace: str, *, strict: bool) -> None:
        """Delete the values of a namespace no checkpoint refers to.

        Not ``strict`` (retention, while writers may be saving): only versions older than a
        version some checkpoint refers to, so that the values of a checkpoint being saved,
        written before it, are kept.
        """
        remaining = list(
            self.table.query(thread_id, LangGraphItem.sk.startswith(checkpoint_prefix(namespace)))
        )
        used: set[tuple[str, str]] = set()
        newest: dict[str, tuple[float, str]] = {}
        for item, payload in zip(remaining, self.table.payloads(remaining), strict=True):
            try:
                versions = json.loads(payload)["checkpoint"].get("channel_versions") or {}
            except (ValueError, KeyError) as exc:
                raise CorruptStateError(
                    thread_id, f"checkpoint {item.checkpoint_id}: {exc}"
                ) from exc
            for channel, version in versions.items():
                used.add((channel, str(version)))
                order = version_order(str(version))
                newest[channel] = max(newest.get(channel, order), order)
        unused = [
            blob
            for blob in self.table.query(
                thread_id, LangGraphItem.sk.startswith(blob_prefix(namespace)), attributes=self.KEYS
            )
            if (str(blob.channel), str(blob.version)) not in used
            and (
                strict
                or (
                    str(blob.channel) in newest
                    and version_order(str(blob.version)) < newest[str(blob.channel)]
                )
            )
        ]
        self.table.batch_write(deletes=self._keys(unused))

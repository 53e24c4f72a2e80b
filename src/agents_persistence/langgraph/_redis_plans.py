"""What each Redis saver operation does, as plans both twins run: the logic without I/O.

A plan is a generator that yields `Call` (a script on one thread's keys) or `Scan` (the keys
matching a pattern, on every node) and is sent back the reply; its return value is the
operation's. `RedisCheckpointSaver` drives plans with plain calls, `AsyncRedisCheckpointSaver`
with ``await``, so both twins share every decision made here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta  # noqa: TC003 - an attribute's annotation
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    CheckpointTuple,
    get_serializable_checkpoint_metadata,
)

from agents_persistence._core import validate_thread_id
from agents_persistence.errors import CorruptStateError, InvalidArgumentError, ThreadForkError
from agents_persistence.langgraph import _redis_lua as lua

if TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Mapping, Sequence

    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
    from langgraph.checkpoint.serde.base import SerializerProtocol

    from agents_persistence.repositories._redis_lua import Script

__all__ = ["PAGE_SIZE", "Call", "RedisPlans", "Scan", "ThreadKeys"]

PAGE_SIZE = 100
"""Checkpoints a listing reads per round trip."""

_NUL = "\x00"
_EMPTY = b"empty"  # blob type of a channel that has a version but no value
_GLOB = str.maketrans({c: "\\" + c for c in "*?[]\\"})
_SUFFIXES = ("cp", "ord", "run", "rec", "refs", "blobs", "widx", "writes")


@dataclass(frozen=True, slots=True)
class Call:
    """One round trip: ``script`` on ``keys`` (one thread's, so one hash slot) with ``args``."""

    script: Script
    keys: tuple[str, ...]
    args: tuple[str | bytes | int, ...] = ()


@dataclass(frozen=True, slots=True)
class Scan:
    """The names of every key matching ``pattern``, on every node (a SCAN per node)."""

    pattern: str


Plan = Any  # Generator[Call | Scan, Any, T]; loosely typed for the twins' drivers


def _tag(thread_id: str) -> str:
    # Braces would move the cluster hash tag; ``%`` escapes them injectively.
    return thread_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _untag(tag: str) -> str:
    return tag.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


class ThreadKeys:
    """The key names of the savers under one prefix: ``<prefix>:lg:{<thread>}:<part>``."""

    def __init__(self, key_prefix: str) -> None:
        self.head = f"{key_prefix}:lg:{{"

    def of(self, thread_id: str) -> tuple[str, ...]:
        """The eight keys of ``thread_id``, in the order the scripts take them."""
        base = f"{self.head}{_tag(thread_id)}}}:"
        return tuple(base + suffix for suffix in _SUFFIXES)

    def pattern(self, suffix: str) -> str:
        """A SCAN pattern for the ``suffix`` key of every thread."""
        return f"{self.head.translate(_GLOB)}*}}:{suffix}"

    def thread_of(self, key: bytes | str) -> str:
        """The thread id a key found by `pattern` belongs to."""
        text = key.decode() if isinstance(key, bytes) else key
        return _untag(text[len(self.head) : text.rindex("}")])


def _plain(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a str, not {value!r:.40}")
    if _NUL in value:
        raise InvalidArgumentError(f"{what} {value[:40]!r} contains a NUL character")
    return value


def _netstrings(items: Iterable[str]) -> bytes:
    out = bytearray()
    for item in items:
        data = item.encode()
        out += b"%d:%s" % (len(data), data)
    return bytes(out)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _config(thread_id: str, namespace: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": namespace,
            "checkpoint_id": checkpoint_id,
        }
    }


def _upper(bounds: Iterable[str]) -> str:
    """The lowest of exclusive ``BYLEX`` upper bounds (``+`` when there are none)."""
    chosen = min(bounds, default=None)
    return "+" if chosen is None else "(" + chosen


class RedisPlans:
    """The operations of the Redis savers under one key prefix, with one serializer."""

    def __init__(
        self,
        key_prefix: str,
        serde: SerializerProtocol,
        *,
        keep_last: int | None = None,
        ttl: timedelta | None = None,
        exclusive: bool = False,
    ) -> None:
        self.keys = ThreadKeys(key_prefix)
        self.serde = serde
        self.keep_last = keep_last
        self.ttl = ttl
        self.exclusive = exclusive

    @property
    def _ttl_ms(self) -> str:
        return "" if self.ttl is None else str(max(1, int(self.ttl.total_seconds() * 1000)))

    @staticmethod
    def target(config: RunnableConfig) -> tuple[str, str, str | None]:
        """``(thread_id, checkpoint_ns, checkpoint_id)`` of ``config``, validated."""
        configurable = config.get("configurable") or {}
        thread_id = validate_thread_id(configurable.get("thread_id"))
        namespace = _plain(configurable.get("checkpoint_ns") or "", "checkpoint_ns")
        checkpoint_id = configurable.get("checkpoint_id") or None
        if checkpoint_id is not None:
            _plain(checkpoint_id, "checkpoint_id")
        return thread_id, namespace, checkpoint_id

    def _dump(self, value: Any, what: str) -> bytes:
        try:
            type_, data = self.serde.dumps_typed(value)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"cannot serialize {what}: {exc}") from exc
        return type_.encode() + b"\n" + data

    def _load(self, thread_id: str, stored: bytes, what: str) -> Any:
        type_, _, data = stored.partition(b"\n")
        try:
            return self.serde.loads_typed((type_.decode(), data))
        except Exception as exc:
            raise CorruptStateError(thread_id, f"{what} ({type_!r}): {exc}") from exc

    # --- writing -------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Generator[Call, Any, RunnableConfig]:
        """Store the values of ``new_versions`` and the checkpoint, retention, TTL: one script.

        With write ownership the script first checks that the parent is the namespace's
        latest checkpoint (`ThreadForkError` otherwise, nothing written).
        """
        thread_id, namespace, parent_id = self.target(config)
        checkpoint_id = _plain(checkpoint["id"], "checkpoint id")
        body = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        stored_metadata = get_serializable_checkpoint_metadata(config, metadata)
        try:
            record = json.dumps(
                {"checkpoint": body, "metadata": stored_metadata, "parent": parent_id}
            )
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(
                f"the checkpoint and its metadata must be JSON: {exc}"
            ) from exc
        run_id = stored_metadata.get("run_id")
        run = _plain(run_id, "run_id") if isinstance(run_id, str) and run_id else ""
        values = checkpoint["channel_values"]
        blobs: list[str | bytes] = []
        for channel, version in new_versions.items():
            field = _NUL.join(
                (namespace, _plain(channel, "channel name"), _plain(str(version), "version"))
            )
            stored = (
                self._dump(values[channel], f"channel {channel!r}")
                if channel in values
                else _EMPTY + b"\n"
            )
            blobs += [field, stored]
        used = [
            _NUL.join((namespace, _plain(channel, "channel name"), str(version)))
            for channel, version in (checkpoint.get("channel_versions") or {}).items()
        ]
        member = namespace + _NUL + checkpoint_id
        reply = yield Call(
            lua.PUT,
            self.keys.of(thread_id),
            (
                self._ttl_ms,
                "" if self.keep_last is None else str(self.keep_last),
                member,
                checkpoint_id + _NUL + namespace,
                record,
                _netstrings([run, *used]),
                run + _NUL + member if run else "",
                namespace,
                "1" if self.exclusive else "",
                parent_id or "",
                checkpoint_id,
                *blobs,
            ),
        )
        if isinstance(reply, list):  # write ownership refused the put
            latest = _text(reply[1]) or None
            raise ThreadForkError(thread_id, namespace, parent_id, latest)
        return _config(thread_id, namespace, checkpoint_id)

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Generator[Call, Any, None]:
        """Store a task's writes; special channels (errors, interrupts) overwrite, others stay."""
        thread_id, namespace, checkpoint_id = self.target(config)
        if checkpoint_id is None:
            raise InvalidArgumentError("put_writes needs a config with a checkpoint_id")
        if not writes:
            return
        _plain(task_id, "task_id")
        pairs: list[str | bytes] = []
        for index, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, index)
            field = _NUL.join((namespace, checkpoint_id, task_id, str(idx)))
            header = json.dumps([task_id, idx, _plain(channel, "channel name"), task_path])
            pairs += [
                field,
                header.encode() + b"\n" + self._dump(value, f"the write to {channel!r}"),
            ]
        special = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        yield Call(
            lua.PUT_WRITES, self.keys.of(thread_id), (self._ttl_ms, "1" if special else "", *pairs)
        )

    # --- reading -------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> Generator[Call, Any, CheckpointTuple | None]:
        """The checkpoint ``config`` names, or the thread's latest in its namespace."""
        thread_id, namespace, checkpoint_id = self.target(config)
        tuples, _ = yield from self.page(thread_id, namespace, checkpoint_id, None, None, 1)
        return tuples[0] if tuples else None

    def page(
        self,
        thread_id: str,
        namespace: str | None,
        checkpoint_id: str | None,
        before_id: str | None,
        after: tuple[str, str] | None,
        count: int,
    ) -> Generator[Call, Any, tuple[list[CheckpointTuple], tuple[str, str] | None]]:
        """Up to ``count`` checkpoints of one thread newest first, and the key to go on from.

        ``namespace`` ``None`` reads every namespace (by id, then namespace, descending);
        ``after`` is the ``(checkpoint_id, namespace)`` a previous page ended with.
        """
        if namespace is not None:
            zset, low = "cp", "(" + namespace + _NUL
            uppers = [namespace + "\x01"]
            if checkpoint_id is not None:
                low = "[" + namespace + _NUL + checkpoint_id
                uppers.append(namespace + _NUL + checkpoint_id + _NUL)
            if before_id is not None:
                uppers.append(namespace + _NUL + before_id)
            if after is not None:
                uppers.append(namespace + _NUL + after[0])
        else:
            zset, low, uppers = "ord", "-", []
            if checkpoint_id is not None:
                low = "[" + checkpoint_id + _NUL
                uppers.append(checkpoint_id + "\x01")
            if before_id is not None:
                uppers.append(before_id)
            if after is not None:
                uppers.append(after[0] + _NUL + after[1])
        reply = yield Call(
            lua.PAGE, self.keys.of(thread_id), (zset, low, _upper(uppers), str(count))
        )
        found, entries = int(reply[0]), reply[1]
        tuples = [self._tuple(thread_id, entry) for entry in entries]
        next_key = None
        if found == count and tuples:
            last = tuples[-1].config["configurable"]
            next_key = (last["checkpoint_id"], last["checkpoint_ns"])
        elif found == count:
            raise CorruptStateError(thread_id, "checkpoint index entries without records")
        return tuples, next_key

    def _tuple(self, thread_id: str, entry: Sequence[Any]) -> CheckpointTuple:
        member, record, blobs, writes = entry
        namespace, _, checkpoint_id = _text(member).partition(_NUL)
        try:
            stored = json.loads(record)
            checkpoint = dict(stored["checkpoint"])
            metadata = stored["metadata"]
            parent_id = stored["parent"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptStateError(thread_id, f"checkpoint {checkpoint_id}: {exc}") from exc
        values = {}
        for at in range(0, len(blobs), 2):
            _, channel, _ = _text(blobs[at]).split(_NUL)
            stored_blob = blobs[at + 1]
            if not stored_blob.startswith(_EMPTY + b"\n"):
                values[channel] = self._load(thread_id, stored_blob, f"channel {channel!r}")
        checkpoint["channel_values"] = values
        pending = []
        for value in writes:
            header, _, stored_write = value.partition(b"\n")
            task_id, idx, channel, task_path = json.loads(header)
            loaded = self._load(thread_id, stored_write, f"the write to {channel!r}")
            pending.append((task_path, task_id, idx, channel, loaded))
        pending.sort(key=lambda w: (w[0], w[1], w[2]))
        return CheckpointTuple(
            config=_config(thread_id, namespace, checkpoint_id),
            checkpoint=checkpoint,  # type: ignore[arg-type]
            metadata=metadata,
            parent_config=None if parent_id is None else _config(thread_id, namespace, parent_id),
            pending_writes=[(task_id, channel, v) for _, task_id, _, channel, v in pending],
        )

    def threads(self, suffix: str = "rec") -> Generator[Scan, Any, list[str]]:
        """Every thread that has a ``suffix`` key (``rec``: threads with checkpoints)."""
        found = yield Scan(self.keys.pattern(suffix))
        return sorted({self.keys.thread_of(key) for key in found})

    # --- deleting and copying ------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> Generator[Call, Any, None]:
        """Delete every key of ``thread_id``."""
        yield Call(lua.DELETE, self.keys.of(validate_thread_id(thread_id)))

    def keep_latest(self, thread_ids: Sequence[str], keep: int) -> Generator[Call, Any, None]:
        """Keep each namespace's newest ``keep`` checkpoints of ``thread_ids``: a script each."""
        for thread_id in sorted({validate_thread_id(t) for t in thread_ids}):
            yield Call(lua.PRUNE, self.keys.of(thread_id), (str(keep),))

    def delete_for_runs(self, run_ids: Sequence[str]) -> Generator[Call | Scan, Any, None]:
        """Delete the checkpoints of ``run_ids``, thread by thread (a scan finds the threads)."""
        runs = sorted({_plain(run_id, "run_id") for run_id in run_ids})
        if not runs:
            return
        for thread_id in (yield from self.threads("run")):
            yield Call(lua.DELETE_RUNS, self.keys.of(thread_id), tuple(runs))

    def copy_thread(self, source: str, target: str) -> Generator[Call, Any, None]:
        """Copy every checkpoint, value and write of ``source`` to ``target``.

        Raises:
            InvalidArgumentError: ``target`` already has checkpoints (nothing is copied).
        """
        source, target = validate_thread_id(source), validate_thread_id(target)
        if source == target:
            raise InvalidArgumentError("copy_thread needs two different threads")
        content = yield Call(lua.COPY_OUT, self.keys.of(source))
        if not content[3]:
            return
        counts = [str(len(part)) for part in content]
        items = [item for part in content for item in part]
        copied = yield Call(lua.COPY_IN, self.keys.of(target), (self._ttl_ms, *counts, *items))
        if not int(copied):
            raise InvalidArgumentError(
                f"thread {target!r} already has checkpoints: delete it first or copy elsewhere"
            )


def matches(metadata: Mapping[str, Any], wanted: Mapping[str, Any] | None) -> bool:
    """Whether every entry of ``wanted`` equals the metadata's (a missing key reads as ``None``)."""
    return not wanted or all(metadata.get(key) == value for key, value in wanted.items())

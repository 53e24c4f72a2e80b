"""The pure half of the Redis store, shared by the sync and async twins: no I/O here.

Each store primitive is a *plan*: a generator that yields the round trips it needs (`Call`)
and receives their raw replies, then returns its result. The twins only drive plans (one with
plain calls, one with ``await``), so every decision (argument encoding, reply decoding, the
record <-> hash mapping of the fields the redis-om model declares, paging and purging loops)
exists once.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from agents_persistence._core import Record, from_epoch_micros, to_epoch_micros
from agents_persistence.errors import (
    ConflictError,
    CorruptStateError,
    InvalidArgumentError,
)
from agents_persistence.models.redis import FIELDS
from agents_persistence.repositories._redis_errors import translate_errors

if TYPE_CHECKING:
    from datetime import datetime

    from agents_persistence._core import WriteRequest
    from agents_persistence.models.redis import KeyLayout

__all__ = ["Call", "Plan", "RedisOps", "translate_errors"]

T = TypeVar("T")

PAGE_DANGLING_BUDGET = 200
"""Most dangling index entries one listing round trip removes (bounds the script's run time)."""

PURGE_BATCH = 200
"""Threads one purge round trip removes; ``purge_expired`` repeats until a batch comes short."""

_MAX_SCORE_MICROS = 2**53
"""Sorted-set scores are doubles: integers of microseconds are exact below 2**53 (year 2255)."""

if FIELDS != ("version", "created_at", "updated_at", "expires_at", "size", "state", "write_id"):
    raise RuntimeError(f"the Redis mapping does not match the record model's fields {FIELDS}")


class _Irregular(Exception):
    """A field value not in the form the store writes: left to the model to judge."""


def _int(value: object) -> int:
    """A decimal integer as the store writes it (``-?[0-9]+`` in ASCII), else `_Irregular`."""
    if isinstance(value, bytes):
        if (value[1:] if value[:1] == b"-" else value).isdigit():  # bytes: ASCII digits only
            return int(value)
    elif (
        isinstance(value, str)
        and value.isascii()
        and (value[1:] if value[:1] == "-" else value).isdigit()
    ):
        return int(value)
    raise _Irregular


def _str(value: object) -> str:
    """Text as the store writes it (``str``, or UTF-8 ``bytes``), else `_Irregular`."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise _Irregular from None
    raise _Irregular


@dataclass(frozen=True, slots=True)
class Call:
    """One round trip: a Lua script from `SCRIPTS` by name, or an HGETALL when ``script`` is None.

    Attributes:
        script: Name of the script, or ``None`` for ``HGETALL keys[0]``.
        keys: The keys the call touches (all in one hash slot).
        args: Script arguments.
    """

    script: str | None
    keys: tuple[str, ...]
    args: tuple[str | int, ...] = ()


Plan = Generator[Call, Any, T]
"""A store primitive as a sequence of round trips; see the module docstring."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _score_micros(moment: datetime) -> int:
    micros = to_epoch_micros(moment)
    if not -_MAX_SCORE_MICROS < micros < _MAX_SCORE_MICROS:
        raise InvalidArgumentError(
            f"timestamp {moment.isoformat()} is outside what the Redis store orders exactly"
            " (the years 1685 to 2255)"
        )
    return micros


class RedisOps:
    """Plans for one namespace's primitives, over the namespace's redis-om model and keys.

    Args:
        model: The `HashModel` from `agents_persistence.models.redis.record_model`.
        layout: The namespace's keys.
    """

    __slots__ = ("layout", "model")

    def __init__(self, model: type[Any], layout: KeyLayout) -> None:
        self.model = model
        self.layout = layout

    # -- mapping: Record <-> hash --------------------------------------------------------

    def hash_pairs(self, request: WriteRequest, write_id: str) -> list[str]:
        """The hash fields of a write except version and created_at, which the script decides.

        The names are the model's (`FIELDS`); values are written as redis-om writes a hash:
        integers in decimal, ``None`` as the empty string.
        """
        return [
            "updated_at",
            str(_score_micros(request.now)),
            "expires_at",
            "" if request.expires_at is None else str(_score_micros(request.expires_at)),
            "size",
            str(request.size),
            "state",
            request.payload,
            "write_id",
            write_id,
        ]

    def decode(self, thread_id: str, fields: Mapping[Any, Any], *, with_payload: bool) -> Record:
        """A stored hash as a `Record`; raises `CorruptStateError` if it does not fit the model.

        ``fields`` maps field names (``str`` or ``bytes``) to values; ``None`` values count as
        absent (HMGET's reply for a missing field).
        """
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if value is not None:
                values[name.decode() if isinstance(name, bytes) else name] = value
        return self.decode_values(
            thread_id,
            values.get("version"),
            values.get("created_at"),
            values.get("updated_at"),
            values.get("expires_at"),
            values.get("size"),
            values.get("state"),
            values.get("write_id"),
            with_payload=with_payload,
        )

    def decode_values(
        self,
        thread_id: str,
        version: Any,
        created_at: Any,
        updated_at: Any,
        expires_at: Any,
        size: Any,
        state: Any = None,
        write_id: Any = None,
        *,
        with_payload: bool,
    ) -> Record:
        """A stored record's field values (``None`` = absent) as a `Record`.

        Values in the form the store writes (decimal integers, UTF-8 text) are parsed
        directly; anything else is left to the redis-om model, which either accepts it as
        redis-om would read it or names the field that does not fit (`CorruptStateError`).
        """
        try:
            parsed = (
                _int(version),
                _int(created_at),
                _int(updated_at),
                None if expires_at is None or expires_at in ("", b"") else _int(expires_at),
                _int(size),
                "" if state is None else _str(state),
            )
            if write_id is not None:
                _str(write_id)
        except _Irregular:
            parsed = self._validate(
                thread_id, version, created_at, updated_at, expires_at, size, state, write_id
            )
        try:
            return Record(
                thread_id=thread_id,
                version=parsed[0],
                created_at=from_epoch_micros(parsed[1]),
                updated_at=from_epoch_micros(parsed[2]),
                expires_at=None if parsed[3] is None else from_epoch_micros(parsed[3]),
                size=parsed[4],
                payload=parsed[5] if with_payload else None,
            )
        except OverflowError as exc:
            raise CorruptStateError(thread_id, "a timestamp is out of range") from exc

    def _validate(self, thread_id: str, *values: Any) -> tuple[int, int, int, int | None, int, str]:
        """Validate field values with the redis-om model (the slow path of `decode_values`)."""
        data: dict[str, Any] = {"thread_id": thread_id}
        for name, value in zip(FIELDS, values, strict=True):
            if value is not None:
                data[name] = value
        if data.get("expires_at") in ("", b""):
            data["expires_at"] = None  # redis-om's spelling of None in a hash
        try:
            row = self.model.model_validate(data)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            detail = f"field {where}: {problem['msg']}"
            raise CorruptStateError(thread_id, detail) from exc
        return row.version, row.created_at, row.updated_at, row.expires_at, row.size, row.state

    # -- plans ---------------------------------------------------------------------------

    def write(self, request: WriteRequest, write_id: str, now: datetime) -> Plan[Record]:
        """Store one version atomically; see the ``WRITE`` script.

        Args:
            request: The validated write.
            write_id: Unique per call, so a retried script that already ran is not applied twice.
            now: The current time, for the key's TTL (``request.now`` is a restored
                ``updated_at`` when restoring).
        """
        ttl_ms = ""
        if request.expires_at is not None:
            remaining = to_epoch_micros(request.expires_at) - to_epoch_micros(now)
            ttl_ms = str(-(-remaining // 1000))  # rounded up: never before the logical expiry
        layout = self.layout
        reply = yield Call(
            "write",
            (layout.thread_key(request.thread_id), layout.updated_index, layout.expiry_index),
            (
                request.thread_id,
                write_id,
                "" if request.expected_version is None else str(request.expected_version),
                "" if request.version is None else str(request.version),
                "" if request.created_at is None else str(to_epoch_micros(request.created_at)),
                str(_score_micros(request.now)),
                "" if request.expires_at is None else str(_score_micros(request.expires_at)),
                ttl_ms,
                *self.hash_pairs(request, write_id),
            ),
        )
        status = _text(reply[0])
        if status == "conflict":
            actual = int(reply[1])
            raise ConflictError(
                request.thread_id, request.expected_version or 0, None if actual < 0 else actual
            )
        if status == "corrupt":
            raise CorruptStateError(request.thread_id, _text(reply[1]))
        try:
            created_at = from_epoch_micros(int(_text(reply[2])))
        except (ValueError, OverflowError) as exc:
            raise CorruptStateError(request.thread_id, "field created_at: not a timestamp") from exc
        return Record(
            thread_id=request.thread_id,
            version=int(reply[1]),
            created_at=created_at,
            updated_at=request.now,
            expires_at=request.expires_at,
            size=request.size,
            payload=request.payload,
        )

    def read(self, thread_id: str, now: datetime) -> Plan[Record | None]:
        """The live record with its payload, or ``None``."""
        fields = yield Call(None, (self.layout.thread_key(thread_id),))
        if not fields:
            return None
        record = self.decode(thread_id, fields, with_payload=True)
        return None if _expired(record, now) else record

    def remove(self, thread_id: str, now: datetime) -> Plan[bool]:
        """Delete a thread with its index entries; ``True`` if it was live."""
        layout = self.layout
        deleted = yield Call(
            "remove",
            (layout.thread_key(thread_id), layout.updated_index, layout.expiry_index),
            (thread_id, str(to_epoch_micros(now))),
        )
        return bool(int(deleted))

    def page(
        self, count: int, after: tuple[datetime, str] | None, now: datetime
    ) -> Plan[list[Record]]:
        """Up to ``count`` live records, (updated_at, thread_id) descending, after ``after``."""
        layout = self.layout
        position = None if after is None else (str(_score_micros(after[0])), after[1])
        records: list[Record] = []
        while len(records) < count:
            start = ("", "", "") if position is None else ("1", *position)
            reply = yield Call(
                "page",
                (layout.updated_index, layout.expiry_index),
                (layout.thread_prefix, count - len(records), PAGE_DANGLING_BUDGET, *start),
            )
            exhausted, last_score, last_member, rows = reply[0], reply[1], reply[2], reply[3:]
            decode = self.decode_values
            for at in range(0, len(rows), 6):
                record = decode(_text(rows[at]), *rows[at + 1 : at + 6], with_payload=False)
                if not _expired(record, now):
                    records.append(record)
            if int(exhausted) or last_member is None:
                break
            # Scores come back as doubles; they hold integer microseconds exactly.
            position = (str(int(float(_text(last_score)))), _text(last_member))
        return records

    def purge(self, now: datetime) -> Plan[int]:
        """Remove every thread expired at ``now`` (hash and index entries), a batch at a time."""
        layout = self.layout
        total = 0
        while True:
            removed = int(
                (
                    yield Call(
                        "purge",
                        (layout.updated_index, layout.expiry_index),
                        (layout.thread_prefix, str(to_epoch_micros(now)), PURGE_BATCH),
                    )
                )
            )
            total += removed
            if removed < PURGE_BATCH:
                return total


def _expired(record: Record, now: datetime) -> bool:
    return record.expires_at is not None and record.expires_at <= now

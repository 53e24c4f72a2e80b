"""The pure half of the Redis store, shared by the sync and async twins: no I/O here.

Each store primitive is a *plan*: a generator that yields the round trips it needs (`Call`)
and receives their raw replies, then returns its result. The twins only drive plans (one with
plain calls, one with ``await``), so every decision (argument encoding, reply decoding, the
paging and purging loops) exists once. The record <-> hash mapping and the scripts come from
the redis-om model, through `agents_persistence.repositories._redis_mapping`.

What a save stores and what a load reads back go through the checkpointer's `Codec`: packed
pieces and the head's JSON text without keys; with keys, sealed pieces, the sealed head (bytes)
in the ``state`` field and the redacted manifest in ``manifest``. The ``write`` script's delta
check reads the token from the manifest kept in clear, so it works the same on both.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from agents_persistence._codec import is_sealed
from agents_persistence._core import Record, from_epoch_micros, to_epoch_micros
from agents_persistence.errors import (
    ConflictError,
    CorruptStateError,
    InvalidArgumentError,
)
from agents_persistence.repositories._redis_errors import translate_errors

if TYPE_CHECKING:
    from datetime import datetime

    from agents_persistence._codec import Codec, Sealer
    from agents_persistence._core import WriteRequest
    from agents_persistence._layout import Layout
    from agents_persistence.models.redis import KeyLayout
    from agents_persistence.repositories._redis_lua import Script
    from agents_persistence.repositories._redis_mapping import RecordMapping

__all__ = ["Call", "Plan", "RedisOps", "translate_errors"]

T = TypeVar("T")

PAGE_DANGLING_BUDGET = 200
"""Most dangling index entries one listing round trip removes (bounds the script's run time)."""

PURGE_BATCH = 200
"""Threads one purge round trip removes; ``purge_expired`` repeats until a batch comes short."""

_MAX_SCORE_MICROS = 2**53
"""Sorted-set scores are doubles: integers of microseconds are exact below 2**53 (year 2255)."""


@dataclass(frozen=True, slots=True)
class Call:
    """One round trip: a Lua script. Its reply comes back undecoded (bytes), whatever the client.

    Attributes:
        script: The script to run.
        keys: The keys the call touches (all in one hash slot).
        args: Script arguments.
    """

    script: Script
    keys: tuple[str, ...]
    args: tuple[str | bytes | int, ...] = ()


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
    """Plans for one namespace's primitives, over the record mapping and the namespace's keys.

    Args:
        mapping: The record hash and its scripts, read from the redis-om record model.
        layout: The namespace's keys.
        codec: The checkpointer's codec: what the values of a save are stored as, and how
            those read are opened.
    """

    __slots__ = ("codec", "layout", "mapping")

    def __init__(self, mapping: RecordMapping, layout: KeyLayout, codec: Codec) -> None:
        self.mapping = mapping
        self.layout = layout
        self.codec = codec

    def hash_pairs(
        self, request: WriteRequest, layout: Layout, write_id: str, sealer: Sealer
    ) -> list[str | bytes]:
        """Every field of the record a write stores, as hash name/value pairs.

        The values of ``version`` and ``created_at`` are placeholders here: the ``write``
        script decides them from what is stored. ``state`` is the head's JSON (UTF-8 bytes),
        or the sealed head; ``manifest`` the manifest kept in clear.
        """
        head, manifest = sealer.head(request.thread_id, layout)
        values = {
            "version": 0,
            "created_at": 0,
            "updated_at": _score_micros(request.now),
            "expires_at": None if request.expires_at is None else _score_micros(request.expires_at),
            "size": request.size,
            "state": head,
            "write_id": write_id,
            "manifest": manifest,
        }
        return self.mapping.encode(values)

    def write_args(
        self, request: WriteRequest, layout: Layout, write_id: str, ttl_ms: str, sealer: Sealer
    ) -> tuple[str | bytes, ...]:
        """The ``write`` script's arguments for ``layout`` (see the script for their order).

        ``sealer`` is the save's: a retry of the same save as a full write reuses it.
        """
        pairs = self.hash_pairs(request, layout, write_id, sealer)
        tid = request.thread_id
        seal = sealer.piece
        pieces = [
            part for key, body in layout.pieces.items() for part in (key, seal(tid, key, body))
        ]
        return (
            request.thread_id,
            write_id,
            "" if request.expected_version is None else str(request.expected_version),
            "" if request.version is None else str(request.version),
            "" if request.created_at is None else str(to_epoch_micros(request.created_at)),
            str(_score_micros(request.now)),
            "" if request.expires_at is None else str(_score_micros(request.expires_at)),
            ttl_ms,
            "" if layout.base is None else layout.base.token,
            str(len(pairs)),
            str(len(layout.drop)),
            *pairs,
            *layout.drop,
            *pieces,
        )

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
        thread_id = request.thread_id
        keys = self.layout.thread_keys(thread_id)
        layout = request.layout
        sealer = self.codec.sealer()  # one data key for the save, its full retry included
        while True:
            args = self.write_args(request, layout, write_id, ttl_ms, sealer)
            reply = yield Call(self.mapping.scripts.write, keys, args)
            status = _text(reply[0])
            if status != "full" or layout.base is None:
                break
            # The stored version is not the delta's base: send the whole state instead.
            layout = layout.full()
        if status == "conflict":
            actual = int(reply[1])
            expected = request.expected_version or 0
            raise ConflictError(thread_id, expected, None if actual < 0 else actual)
        if status == "corrupt":
            raise CorruptStateError(thread_id, _text(reply[1]))
        if status not in ("ok", "done"):
            raise CorruptStateError(thread_id, f"unexpected reply {status!r} to a save")
        try:
            created_at = from_epoch_micros(int(_text(reply[2])))
        except (ValueError, OverflowError) as exc:
            raise CorruptStateError(thread_id, "field created_at: not a timestamp") from exc
        return Record(
            thread_id=thread_id,
            version=int(reply[1]),
            created_at=created_at,
            updated_at=request.now,
            expires_at=request.expires_at,
            size=request.size,
            manifest=layout.manifest,
            written=layout.written,
        )

    def read(self, thread_id: str, now: datetime) -> Plan[Record | None]:
        """The live record with its payload (the whole state's JSON), or ``None``.

        A sealed head, a head with pieces, or any head read with keys is opened by the codec;
        otherwise a plaintext head without pieces (a small state, or one stored whole) is the
        whole state as read.
        """
        reply = yield Call(
            self.mapping.scripts.read,
            (self.layout.thread_key(thread_id), self.layout.pieces_key(thread_id)),
            (str(to_epoch_micros(now)),),
        )
        if not reply:
            return None
        flat, stored = reply
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        record = self.mapping.decode(thread_id, fields, with_payload=True)
        if _expired(record, now):
            return None
        manifest, head = record.manifest, record.payload
        one_head = manifest is None or not (manifest.transcript or manifest.maps)
        if one_head and not self.codec.encrypts and not is_sealed(head):
            return record  # one head (a small state, or stored before the layout): all of it
        bodies = dict(zip(map(_text, stored[::2]), stored[1::2], strict=True))
        head = cast("str | bytes", head)  # the state field: text, or the sealed head's bytes
        return self.codec.open(thread_id, head, manifest, bodies).apply(record)

    def remove(self, thread_id: str, now: datetime) -> Plan[bool]:
        """Delete a thread with its index entries; ``True`` if it was live."""
        deleted = yield Call(
            self.mapping.scripts.remove,
            self.layout.thread_keys(thread_id),
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
                self.mapping.scripts.page,
                (layout.updated_index, layout.expiry_index),
                (layout.thread_prefix, count - len(records), PAGE_DANGLING_BUDGET, *start),
            )
            exhausted, last_score, last_member, rows = reply[0], reply[1], reply[2], reply[3:]
            decode, width = self.mapping.decode_listed, 1 + len(self.mapping.listed)
            for at in range(0, len(rows), width):
                record = decode(_text(rows[at]), rows[at + 1 : at + width])
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
                        self.mapping.scripts.purge,
                        (layout.updated_index, layout.expiry_index),
                        (
                            layout.thread_prefix,
                            str(to_epoch_micros(now)),
                            PURGE_BATCH,
                            layout.pieces_prefix,
                        ),
                    )
                )
            )
            total += removed
            if removed < PURGE_BATCH:
                return total


def _expired(record: Record, now: datetime) -> bool:
    return record.expires_at is not None and record.expires_at <= now

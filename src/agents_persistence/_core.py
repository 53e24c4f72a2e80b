"""The pure layer every store shares: validation, encoding, clocks, cursors. No I/O here.

Stores implement a handful of primitives (`write`, `read`, `remove`, `page`, `purge`) over the
value types below; the base classes in `agents_persistence.base` turn them into the public
contract for both the sync and the async twin, so neither twin carries logic of its own.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, Generic, cast, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticSerializationError

from agents_persistence._codec import Codec
from agents_persistence._layout import Layout, Manifest, assemble, splitter
from agents_persistence.contract import Checkpoint, CheckpointInfo, StateT, ThreadInfo, ThreadPage
from agents_persistence.errors import (
    ConfigurationError,
    ConflictError,
    CorruptStateError,
    InvalidArgumentError,
    InvalidCursorError,
    InvalidStateError,
    InvalidThreadIdError,
    StateTooLargeError,
)
from agents_persistence.snapshot import AgentStateSnapshot
from agents_persistence.upcasting import Upcasters

if TYPE_CHECKING:
    from agents_persistence._keys import KeyProvider

__all__ = [
    "DEFAULT_NAMESPACE",
    "MAX_LIST_LIMIT",
    "MAX_THREAD_ID_LENGTH",
    "MAX_VERSION",
    "Clock",
    "Core",
    "Record",
    "WriteRequest",
    "decode_cursor",
    "encode_cursor",
    "from_epoch_micros",
    "to_epoch_micros",
    "utc_now",
    "validate_identifier",
    "validate_namespace",
    "validate_thread_id",
]

DEFAULT_NAMESPACE = "default"
MAX_THREAD_ID_LENGTH = 256
MAX_LIST_LIMIT = 1000
MAX_VERSION = 2**31 - 1
"""The largest version every store can hold (the SQL ``version`` column is a 32-bit integer)."""
_NAMESPACE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_IDENTIFIER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_REPLACEMENT = "\ufffd".encode()

MAX_REMEMBERED = 4096
"""Threads whose last read or written manifest a checkpointer keeps (the least recent go)."""

Clock = Callable[[], datetime]
"""Returns the current time, timezone-aware."""


def _replaced(data: bytes) -> bool:
    """Whether ``data`` holds U+FFFD (its first byte looked for first: a far quicker search)."""
    return _REPLACEMENT[:1] in data and _REPLACEMENT in data


def utc_now() -> datetime:
    """The default clock: the current UTC time."""
    return datetime.now(UTC)


def to_epoch_micros(moment: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact, no float rounding)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_micros(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the Unix epoch."""
    return _EPOCH + timedelta(microseconds=micros)


def as_utc(moment: datetime) -> datetime:
    """Return ``moment`` as an aware UTC datetime; naive values are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def validate_thread_id(thread_id: object) -> str:
    """Return ``thread_id`` if it is a valid thread id, else raise `InvalidThreadIdError`."""
    if not isinstance(thread_id, str):
        raise InvalidThreadIdError(thread_id, f"must be a str, not {type(thread_id).__name__}")
    if not thread_id:
        raise InvalidThreadIdError(thread_id, "must not be empty")
    if len(thread_id) > MAX_THREAD_ID_LENGTH:
        raise InvalidThreadIdError(
            thread_id, f"{len(thread_id)} characters, above {MAX_THREAD_ID_LENGTH}"
        )
    if not thread_id.isprintable():
        for char in thread_id:
            if unicodedata.category(char) in ("Cc", "Cs"):
                raise InvalidThreadIdError(thread_id, f"contains control character {char!r}")
    return thread_id


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` if it matches ``[A-Za-z0-9_.:-]{1,64}``, else raise."""
    if not isinstance(namespace, str) or not _NAMESPACE_RE.fullmatch(namespace):
        raise ConfigurationError(
            f"invalid namespace {namespace!r:.80}: use 1 to 64 of A-Z a-z 0-9 _ . : -"
        )
    return namespace


def validate_identifier(name: object, what: str) -> str:
    """Validate a SQL table or schema name: a letter or _, then letters, digits, _ (max 63)."""
    if not isinstance(name, str) or not _IDENTIFIER_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid {what} {name!r:.80}: use a letter or _ then up to 62 letters, digits or _"
        )
    return name


def _validate_ttl(ttl: float | timedelta | None) -> timedelta | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float | timedelta):
        raise ConfigurationError(f"ttl must be seconds or a timedelta, not {type(ttl).__name__}")
    value = ttl if isinstance(ttl, timedelta) else timedelta(seconds=ttl)
    if value < timedelta(seconds=1):
        raise ConfigurationError(f"ttl must be at least 1 second, got {value.total_seconds()}s")
    return value


def encode_cursor(updated_at: datetime, thread_id: str) -> str:
    """An opaque cursor that resumes a listing after (``updated_at``, ``thread_id``)."""
    raw = json.dumps([to_epoch_micros(updated_at), thread_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: object) -> tuple[datetime, str]:
    """The (``updated_at``, ``thread_id``) key a cursor from `encode_cursor` stands for."""
    if not isinstance(cursor, str) or not cursor:
        raise InvalidCursorError(f"invalid cursor {cursor!r:.80}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        micros, thread_id = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidCursorError(f"invalid cursor {cursor!r:.80}") from exc
    if not isinstance(micros, int) or not isinstance(thread_id, str):
        raise InvalidCursorError(f"invalid cursor {cursor!r:.80}")
    return from_epoch_micros(micros), thread_id


@cache
def field_names(model: type[BaseModel]) -> frozenset[str]:
    """Every field name of ``model`` and of the models its fields hold, at any depth.

    Error locations quote these and list indexes; anything else in a location (a dict key:
    state content) is masked.
    """
    names: set[str] = set()
    seen: set[type] = set()
    stack: list[object] = [model]
    while stack:
        item = stack.pop()
        if isinstance(item, type) and issubclass(item, BaseModel):
            if item in seen:
                continue
            seen.add(item)
            for name, info in item.model_fields.items():
                names.add(name)
                names.update(a for a in (info.alias, info.serialization_alias) if a)
                stack.append(info.annotation)
        else:
            stack.extend(get_args(item))
    return frozenset(names)


def _has_surrogate(value: object) -> bool:
    """Whether a dumped state holds a lone surrogate in a dict key (the slow path of `encode`).

    Only walked when the JSON text holds U+FFFD, the character pydantic substitutes.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and any("\ud800" <= c <= "\udfff" for c in key):
                    return True
                stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Everything a store needs to perform one save, already validated and encoded.

    Attributes:
        thread_id: Validated thread id.
        layout: The state split for storage (`agents_persistence._layout`): a delta on the
            version the checkpointer last read or wrote, or a full write.
        size: Bytes of the whole state's JSON.
        expected_version: As given to ``save_state``.
        now: The save's timestamp; becomes ``updated_at`` (and ``created_at`` for a new thread).
        expires_at: ``now + ttl`` or ``None``.
        version: The exact version to store (restoring an exported thread); ``None`` stores
            the live version + 1 (or 1 for a new thread).
        created_at: The ``created_at`` to store (restoring); ``None`` keeps the stored one, or
            uses ``now`` for a new thread.
    """

    thread_id: str
    layout: Layout
    size: int
    expected_version: int | None
    now: datetime
    expires_at: datetime | None
    version: int | None = None
    created_at: datetime | None = None

    @property
    def payload(self) -> str:
        """The whole state as JSON text, for stores that keep one document per thread."""
        full = self.layout.full()
        return assemble(self.thread_id, full.head, full.manifest, full.pieces).decode()

    def next_version(self, live_version: int | None) -> int:
        """The version this write stores, given the live version (``None`` when absent)."""
        if self.version is not None:
            return self.version
        return (live_version or 0) + 1

    def check(self, live_version: int | None) -> None:
        """Raise `ConflictError` unless ``expected_version`` matches the live version."""
        if self.expected_version is not None and self.expected_version != (live_version or 0):
            raise ConflictError(self.thread_id, self.expected_version, live_version)

    def is_expired(self, expires_at: datetime | None) -> bool:
        """Whether a stored record with ``expires_at`` counts as absent at this save."""
        return expires_at is not None and expires_at <= self.now


@dataclass(frozen=True, slots=True)
class Record:
    """A stored thread as a store returns it, before decoding.

    ``payload`` is ``None`` in listings, JSON text (``str``/``bytes``) or an already decoded JSON
    object (drivers that decode JSON columns themselves). ``manifest`` is the stored layout's
    manifest (``None`` for a record stored whole, as before the layout existed), which the
    checkpointer keeps to make its next save of the thread a delta. ``written`` is what a
    save sent (bytes before compression), for telemetry. ``key_ids`` and ``plaintext`` say, for
    a record read, which keys sealed its values and whether any was stored in clear (what
    `Core.is_current` checks before a rotation rewrites it).
    """

    thread_id: str
    version: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    size: int
    payload: str | bytes | Mapping[str, Any] | None = None
    manifest: Manifest | None = None
    written: int = 0
    key_ids: frozenset[str] = frozenset()
    plaintext: bool = True

    def info(self) -> CheckpointInfo:
        """The public metadata of this record."""
        return CheckpointInfo(
            self.thread_id,
            self.version,
            self.created_at,
            self.updated_at,
            self.expires_at,
            self.size,
        )

    def thread_info(self) -> ThreadInfo:
        """The listing entry of this record."""
        return ThreadInfo(
            self.thread_id,
            self.version,
            self.created_at,
            self.updated_at,
            self.expires_at,
            self.size,
        )


class Core(Generic[StateT]):
    """Settings and pure behaviour shared by a store's sync and async twins.

    Args:
        namespace: Isolates this checkpointer's threads from every other namespace.
        ttl: Time to live in seconds (or a timedelta), at least 1 second; ``None`` keeps forever.
        state_type: The pydantic model stored; `AgentStateSnapshot` by default.
        max_state_bytes: Largest encoded state accepted.
        clock: Returns the current aware time; for tests that move time without sleeping.
        keys: A key provider (`agents_persistence.encryption`): saves are sealed under its
            active key, and records sealed under any key it holds are read. ``None`` writes
            in clear.
        upcasters: The upgrade functions of ``state_type`` (`agents_persistence.upcasting`),
            applied on load to records written at an older schema version.
    """

    __slots__ = (
        "_bases",
        "_bases_lock",
        "_field_names",
        "_splitter",
        "clock",
        "codec",
        "max_state_bytes",
        "namespace",
        "state_type",
        "ttl",
        "upcasters",
    )

    def __init__(
        self,
        *,
        namespace: str,
        ttl: float | timedelta | None,
        state_type: type[StateT] | None,
        max_state_bytes: int,
        clock: Clock | None,
        keys: KeyProvider | None = None,
        upcasters: Upcasters | None = None,
    ) -> None:
        self.namespace = validate_namespace(namespace)
        self.ttl = _validate_ttl(ttl)
        resolved = AgentStateSnapshot if state_type is None else state_type
        if not (isinstance(resolved, type) and issubclass(resolved, BaseModel)):
            raise ConfigurationError(f"state_type must be a pydantic model, not {resolved!r}")
        self.state_type = cast("type[StateT]", resolved)
        if (
            isinstance(max_state_bytes, bool)
            or not isinstance(max_state_bytes, int)
            or max_state_bytes < 1
        ):
            raise ConfigurationError(
                f"max_state_bytes must be a positive int, got {max_state_bytes!r}"
            )
        self.max_state_bytes = max_state_bytes
        self.clock: Clock = clock or utc_now
        self._splitter = splitter(self.state_type)
        self._field_names = field_names(self.state_type)
        self._bases: dict[str, tuple[int, Manifest]] = {}
        self._bases_lock = threading.Lock()
        self.codec = Codec(self.namespace, keys)
        if upcasters is None:
            upcasters = Upcasters(self.state_type)
        elif not isinstance(upcasters, Upcasters) or upcasters.state_type is not self.state_type:
            raise ConfigurationError(
                f"upcasters must be Upcasters({self.state_type.__name__}), not {upcasters!r:.80}"
            )
        self.upcasters = upcasters

    # --- the manifests a save is based on ------------------------------------------------------

    def remember(self, record: Record | None) -> None:
        """Keep the manifest of a record just read or written: the next save's base."""
        if record is None or record.manifest is None:
            return
        with self._bases_lock:
            bases = self._bases
            bases.pop(record.thread_id, None)
            bases[record.thread_id] = (record.version, record.manifest)
            if len(bases) > MAX_REMEMBERED:
                del bases[next(iter(bases))]

    def forget(self, thread_id: str) -> None:
        """Drop a thread's base (after a failed save or a delete): its next save is whole."""
        with self._bases_lock:
            self._bases.pop(thread_id, None)

    def _base(self, thread_id: str, expected_version: int | None) -> Manifest | None:
        with self._bases_lock:
            found = self._bases.get(thread_id)
        if found is None:
            return None
        version, manifest = found
        if expected_version is not None and expected_version != version:
            return None
        return manifest

    def now(self) -> datetime:
        """The current time from the clock, as aware UTC with microsecond precision."""
        moment = self.clock()
        if moment.tzinfo is None:
            raise ConfigurationError("the clock must return timezone-aware datetimes")
        return moment.astimezone(UTC)

    def encode(self, thread_id: str, state: object, base: Manifest | None = None) -> Layout:
        """Split ``state`` for storage, enforcing the type and size limit.

        Fails closed: every fragment written is parsed back with the parser every load uses
        (but the pieces of a map of strings to strings, such as ``files``, while every key and
        value is a `str`: JSON strings always read back), so a state that could not be loaded
        (nesting deeper than the parser accepts, NaN or infinities written as constants) raises
        `InvalidStateError` here, before anything is written. Lone surrogates, which pydantic
        replaces with U+FFFD in dict keys, are refused like the same surrogates in values.
        """
        if not isinstance(state, self.state_type):
            raise InvalidStateError(
                f"state must be a {self.state_type.__name__}, not {type(state).__name__}"
            )
        try:
            layout = self._splitter.split(thread_id, state, base)
        except PydanticSerializationError as exc:
            raise InvalidStateError(
                f"state of thread {thread_id!r} cannot be encoded: {exc}"
            ) from exc
        replaced = _replaced(layout.head) or any(_replaced(body) for body in layout.pieces.values())
        if replaced and _has_surrogate(state.model_dump()):
            raise InvalidStateError(
                f"state of thread {thread_id!r} cannot be encoded: a dict key holds a lone"
                " surrogate, which JSON text cannot carry; nothing was written"
            )
        if layout.size > self.max_state_bytes:
            raise StateTooLargeError(thread_id, layout.size, self.max_state_bytes)
        return layout

    def prepare_write(
        self, thread_id: object, state: object, expected_version: object
    ) -> WriteRequest:
        """Validate and encode one save; raises before any I/O on bad input."""
        tid = validate_thread_id(thread_id)
        if expected_version is not None and (
            isinstance(expected_version, bool)
            or not isinstance(expected_version, int)
            or not 0 <= expected_version < MAX_VERSION
        ):
            # Below MAX_VERSION: a save at ``expected_version`` stores the version after it.
            raise InvalidArgumentError(
                f"expected_version must be None or an int from 0 to {MAX_VERSION - 1},"
                f" got {expected_version!r:.40}"
            )
        layout = self.encode(tid, state, self._base(tid, expected_version))
        now = self.now()
        expires_at = None if self.ttl is None else now + self.ttl
        return WriteRequest(tid, layout, layout.size, expected_version, now, expires_at)

    def prepare_restore(
        self, thread_id: object, state: object, info: CheckpointInfo, expected_version: object
    ) -> WriteRequest:
        """Validate and encode a restore: the state with the version and timestamps of ``info``."""
        tid = validate_thread_id(thread_id)
        self.forget(tid)
        request = self.prepare_write(tid, state, expected_version)
        if not isinstance(info, CheckpointInfo) or not 1 <= info.version <= MAX_VERSION:
            raise InvalidArgumentError(
                f"info must be a CheckpointInfo with a version from 1 to {MAX_VERSION}"
            )
        return replace(
            request,
            now=as_utc(info.updated_at),
            expires_at=None if info.expires_at is None else as_utc(info.expires_at),
            version=info.version,
            created_at=as_utc(info.created_at),
        )

    def decode(self, record: Record) -> StateT:
        """Decode a stored record into the state type; never a silent default.

        A record that does not validate raises `CorruptStateError` naming the error's type
        and location only: pydantic's messages quote input values and validator texts, which
        are state content, so neither the message nor a chained cause carries them.
        """
        payload = record.payload
        stored = 1 if record.manifest is None else record.manifest.schema
        try:
            if stored != self.upcasters.current:
                return self.state_type.model_validate(self._upcast(record, stored))
            if isinstance(payload, str | bytes):
                return self.state_type.model_validate_json(payload)
            if isinstance(payload, Mapping):
                return self.state_type.model_validate(payload)
        except ValidationError as exc:
            detail = self._describe(exc)
        else:
            detail = f"unexpected payload {type(payload).__name__}"
        raise CorruptStateError(record.thread_id, detail)  # outside `except`: no context

    def _upcast(self, record: Record, stored: int) -> dict[str, Any]:
        """The stored JSON object of an older (or newer) schema version, upcast to the model's."""
        payload = record.payload
        data: object = payload
        if isinstance(payload, str | bytes):
            try:
                data = json.loads(payload)
            except ValueError:
                data = None
        elif isinstance(payload, Mapping):
            data = dict(payload)
        if not isinstance(data, dict):
            raise CorruptStateError(record.thread_id, "the stored state is not a JSON object")
        return self.upcasters.upcast(data, stored, thread_id=record.thread_id)

    def is_current(self, record: Record) -> bool:
        """Whether a record read is stored as this checkpointer writes: nothing to rewrite.

        That is: at the state model's schema version and, with keys, every value sealed under
        the active key (none in clear); without keys, none sealed.
        """
        stored = 1 if record.manifest is None else record.manifest.schema
        if stored != self.upcasters.current:
            return False
        active = self.codec.active_key_id
        if active is None:
            return not record.key_ids
        if record.plaintext:
            return False
        return record.key_ids == {active}

    def _describe(self, exc: ValidationError) -> str:
        first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        where = ".".join(
            str(part) if isinstance(part, int) or part in self._field_names else "<key>"
            for part in first["loc"]
        )
        detail = f"{exc.error_count()} validation error(s), the first {first['type']}"
        return detail + (f" at {where}" if where else "")

    def checkpoint(self, record: Record | None) -> Checkpoint[StateT] | None:
        """Turn a read record into a `Checkpoint` (or pass ``None`` through)."""
        if record is None:
            return None
        checkpoint = Checkpoint(self.decode(record), record.info())
        self.remember(record)
        return checkpoint

    @staticmethod
    def page_args(limit: object, cursor: object) -> tuple[int, tuple[datetime, str] | None]:
        """Validate ``list_threads`` arguments into a limit and a decoded keyset position."""
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            raise InvalidArgumentError(f"limit must be an int from 1 to {MAX_LIST_LIMIT}")
        return limit, None if cursor is None else decode_cursor(cursor)

    @staticmethod
    def page(records: list[Record], limit: int) -> ThreadPage:
        """Build a page from up to ``limit + 1`` records (the extra one says a next page exists)."""
        threads = [record.thread_info() for record in records[:limit]]
        next_cursor = None
        if len(records) > limit:
            last = threads[-1]
            next_cursor = encode_cursor(last.updated_at, last.thread_id)
        return ThreadPage(threads, next_cursor)

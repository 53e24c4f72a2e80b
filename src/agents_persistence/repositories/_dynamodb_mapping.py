"""Pure mapping of the DynamoDB store: keys, items, conditions, records, URLs. No I/O here.

Both twins run the same `agents_persistence.repositories._dynamodb_table.DynamoDBTable`, which
calls these functions, so every rule about what is stored and what counts as live sits here once.
Attributes are named through the model given (its attribute objects, whose ``attr_name`` is the
stored name): no attribute name is spelled here.
"""

from __future__ import annotations

import hashlib
import math
import re
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from pynamodb.constants import NUMBER

from agents_persistence._core import Record, WriteRequest, from_epoch_micros, to_epoch_micros
from agents_persistence.errors import ConfigurationError, CorruptStateError, StateTooLargeError

if TYPE_CHECKING:
    from pynamodb.expressions.condition import Condition

    from agents_persistence.models.dynamodb import CheckpointItem

__all__ = [
    "ITEM_SIZE_LIMIT",
    "MAX_INDEX_SHARDS",
    "ItemMeta",
    "ParsedURL",
    "check_item_size",
    "condition_absent_or_expired",
    "condition_expired",
    "condition_live",
    "condition_unchanged",
    "item_key",
    "listing_key",
    "listing_keys",
    "meta_attributes",
    "meta_of",
    "parse_url",
    "plan_put",
    "record_of",
    "sort_key",
    "thread_of",
    "unconditional",
    "version_attributes",
    "timestamp_text",
    "ttl_moment",
    "validate_index_shards",
    "validate_table_name",
    "write_token",
]

ITEM_SIZE_LIMIT = 400 * 1024
"""DynamoDB's item size limit in bytes (attribute names plus values)."""

MAX_INDEX_SHARDS = 64
"""Most index shards per namespace (a listing runs one Query per shard)."""
_NUMBER_BYTES = 21
"""Upper bound of a stored number's size, used to estimate item sizes conservatively."""
_TABLE_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_SEPARATOR = "#"
_WRITE_ID_LENGTH = 32
"""Characters of a save's token (a UUID in hex)."""
_KEY_BYTES = 1024
"""DynamoDB's limit on a range key attribute, index keys included."""


def timestamp_text(moment: datetime) -> str:
    """A UTC time as fixed-width text with microseconds, as PynamoDB stores datetimes.

    The width is fixed (years below 1000 are zero-padded), so text order is time order.
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000").zfill(31)


def validate_table_name(name: object) -> str:
    """Return ``name`` if DynamoDB accepts it as a table name (3-255 of A-Z a-z 0-9 _ . -)."""
    if not isinstance(name, str) or not _TABLE_NAME_RE.fullmatch(name):
        raise ConfigurationError(
            f"invalid DynamoDB table name {name!r:.80}: use 3 to 255 of A-Z a-z 0-9 _ . -"
        )
    return name


def validate_index_shards(shards: object) -> int:
    """Return ``shards`` if it is an int from 1 to `MAX_INDEX_SHARDS`."""
    if (
        isinstance(shards, bool)
        or not isinstance(shards, int)
        or not 1 <= shards <= MAX_INDEX_SHARDS
    ):
        raise ConfigurationError(
            f"index_shards must be an int from 1 to {MAX_INDEX_SHARDS}, got {shards!r}"
        )
    return shards


def item_key(namespace: str, thread_id: str) -> str:
    """The table hash key of a thread."""
    return f"{namespace}{_SEPARATOR}{thread_id}"


def thread_of(key: str) -> str:
    """The thread id inside a table hash key (namespaces never contain the separator)."""
    return key.partition(_SEPARATOR)[2]


def listing_key(namespace: str, thread_id: str, shards: int) -> str:
    """The index hash key a thread is listed under.

    Shard 0 is the bare namespace, so raising ``index_shards`` later keeps every existing item
    visible: an item stays in a shard below the old count until its next save moves it.
    """
    if shards == 1:
        return namespace
    shard = zlib.crc32(thread_id.encode()) % shards
    return namespace if shard == 0 else f"{namespace}{_SEPARATOR}{shard}"


def listing_keys(namespace: str, shards: int) -> list[str]:
    """Every index hash key of a namespace."""
    return [namespace] + [f"{namespace}{_SEPARATOR}{shard}" for shard in range(1, shards)]


def sort_key(updated_at: datetime, thread_id: str) -> str:
    """The index range key: fixed-width UTC time then thread id.

    Text order equals (updated_at, thread_id) order: the timestamp has a fixed width, and
    DynamoDB compares strings by UTF-8 bytes, which orders like Python compares code points.
    A key attribute holds at most 1024 bytes: a thread id too long for that (over 992 bytes of
    UTF-8, only possible with many non-ASCII characters) is cut and followed by a digest of the
    whole id, which keeps keys unique; only such ids, at equal timestamps, may then list in
    another order than by thread id.
    """
    key = f"{timestamp_text(updated_at)}{_SEPARATOR}{thread_id}"
    if len(key.encode()) <= _KEY_BYTES:
        return key
    digest = hashlib.blake2b(thread_id.encode(), digest_size=8).hexdigest()
    room = _KEY_BYTES - len(timestamp_text(updated_at)) - 2 - len(digest)
    head = thread_id.encode()[:room].decode(errors="ignore")
    return f"{timestamp_text(updated_at)}{_SEPARATOR}{head}{_SEPARATOR}{digest}"


def ttl_moment(expires_at: datetime) -> datetime:
    """``expires_at`` rounded up to a whole second, for the table's TTL attribute."""
    whole = expires_at.replace(microsecond=0)
    return whole if whole == expires_at else whole + timedelta(seconds=1)


def condition_live(model: type[CheckpointItem], now: datetime) -> Condition:
    """True for an item that never expires or expires after ``now`` (and for a missing item)."""
    expires_at_us = model.expires_at_us
    return cast(
        "Condition", expires_at_us.does_not_exist() | (expires_at_us > to_epoch_micros(now))
    )


def condition_expired(model: type[CheckpointItem], now: datetime) -> Condition:
    """True for a stored item whose expiry is ``now`` or earlier."""
    return cast("Condition", model.expires_at_us <= to_epoch_micros(now))


def condition_absent_or_expired(model: type[CheckpointItem], now: datetime) -> Condition:
    """True when no live item exists, so a save may start the thread again at version 1."""
    return cast("Condition", model.pk.does_not_exist() | condition_expired(model, now))


def condition_unchanged(model: type[CheckpointItem], meta: ItemMeta) -> Condition:
    """True while the stored item still has exactly the metadata in ``meta``.

    A save writes the version after ``meta.version`` and keeps ``meta.created_at``: when all of
    the metadata still matches, that is exactly what it would write after a fresh read.
    """
    item = model
    expiry = (
        item.expires_at_us.does_not_exist()
        if meta.expires_at is None
        else item.expires_at_us == to_epoch_micros(meta.expires_at)
    )
    return cast(
        "Condition",
        (item.version == meta.version)
        & (item.created_at == meta.created_at)
        & (item.updated_at == meta.updated_at)
        & expiry,
    )


@dataclass(frozen=True, slots=True)
class ItemMeta:
    """What a save needs to know about the stored item: read before a conditional write."""

    version: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    write_id: str | None = None

    @classmethod
    def of(cls, record: Record, write_id: str | None = None) -> ItemMeta:
        """The metadata of a stored record (written with ``write_id``)."""
        return cls(
            record.version, record.created_at, record.updated_at, record.expires_at, write_id
        )

    def live(self, now: datetime) -> bool:
        """Whether the item counts as present at ``now``."""
        return self.expires_at is None or self.expires_at > now

    def live_version(self, now: datetime) -> int | None:
        """The version a save compares ``expected_version`` with: ``None`` when expired."""
        return self.version if self.live(now) else None


def meta_attributes(model: type[CheckpointItem]) -> list[str]:
    """Attributes `ItemMeta` is read from (a projection: the state is not transferred)."""
    read = (model.pk, model.version, model.created_at, model.updated_at, model.expires_at_us)
    return [attribute.attr_name for attribute in (*read, model.write_id)]


def meta_of(item: CheckpointItem, thread_id: str) -> ItemMeta:
    """The `ItemMeta` of an item read with `meta_attributes`."""
    version, created_at, updated_at = item.version, item.created_at, item.updated_at
    if not isinstance(version, int) or created_at is None or updated_at is None:
        raise CorruptStateError(thread_id, "stored item lacks version or timestamps")
    write_id = item.write_id if isinstance(item.write_id, str) else None
    return ItemMeta(version, created_at, updated_at, _expiry(item, thread_id), write_id)


def plan_put(
    model: type[CheckpointItem],
    namespace: str,
    shards: int,
    request: WriteRequest,
    meta: ItemMeta | None,
    write_id: str,
) -> tuple[CheckpointItem, Condition | None]:
    """The item one save writes and the condition that makes the write safe.

    Args:
        model: The bound model class.
        namespace: The checkpointer's namespace.
        shards: The ``index_shards`` setting.
        request: The validated save (its ``expected_version`` already checked against
            ``meta``).
        meta: The stored item's metadata as last seen (``None``: absent). It may be stale:
            the condition then fails and nothing is written.
        write_id: The save's token, stored with the item.

    Returns:
        The item and the condition (``None`` for an unconditional write).
    """
    now = request.now
    live = meta if meta is not None and meta.live(now) else None
    if unconditional(request):
        condition = None
    elif live is None:
        condition = condition_absent_or_expired(model, now)
    else:
        condition = condition_unchanged(model, live)
    item = model(
        item_key(namespace, request.thread_id),
        state=request.payload,
        **version_attributes(
            namespace, shards, request, None if live is None else live.created_at, write_id
        ),
    )
    if live is not None:
        item.version = request.next_version(live.version)
    return item, condition


def version_attributes(
    namespace: str,
    shards: int,
    request: WriteRequest,
    stored_created_at: datetime | None,
    write_id: str,
) -> dict[str, Any]:
    """The attributes a save writes beside the state: index keys, version, times, expiry.

    ``version`` is the first one (1, or the restored one) when ``stored_created_at`` is
    ``None`` (no live item); the caller sets the next one otherwise.
    """
    now = request.now
    expires_at = request.expires_at
    return {
        "list_pk": listing_key(namespace, request.thread_id, shards),
        "list_sk": sort_key(now, request.thread_id),
        "version": request.next_version(None),
        "created_at": request.created_at or stored_created_at or now,
        "updated_at": now,
        "size": request.size,
        "expires_at": None if expires_at is None else ttl_moment(expires_at),
        "expires_at_us": None if expires_at is None else to_epoch_micros(expires_at),
        "write_id": write_id,
    }


def unconditional(request: WriteRequest) -> bool:
    """Whether a save overwrites whatever is stored: a restore without ``expected_version``."""
    return (
        request.expected_version is None
        and request.version is not None
        and request.created_at is not None
    )


def write_token() -> str:
    """A new random token identifying one save."""
    return uuid.uuid4().hex


def check_item_size(
    model: type[CheckpointItem], namespace: str, shards: int, request: WriteRequest
) -> int:
    """Return the room left for the state in this item; raise if the state exceeds it.

    The estimate counts attribute names and values as DynamoDB does, from the item this save
    would write, with every number of the model at its largest possible size whether the item
    has it or not, so it errs on the side of refusing before any request is sent.

    Raises:
        StateTooLargeError: The item would exceed `ITEM_SIZE_LIMIT`.
    """
    item, _ = plan_put(model, namespace, shards, request, None, "0" * _WRITE_ID_LENGTH)
    stored = item.serialize()
    state = model.state.attr_name
    overhead = len(state)
    for attribute in model.get_attributes().values():
        name = attribute.attr_name
        if attribute.attr_type == NUMBER:
            overhead += len(name) + _NUMBER_BYTES
        elif name != state and name in stored:
            (value,) = stored[name].values()
            overhead += len(name) + len(str(value).encode())
    room = ITEM_SIZE_LIMIT - overhead
    if request.size > room:
        raise StateTooLargeError(request.thread_id, request.size, room)
    return room


def record_of(item: CheckpointItem, thread_id: str | None = None) -> Record:
    """The `Record` of a stored item (a full item, or an index entry without the state)."""
    tid = thread_of(item.pk) if thread_id is None else thread_id
    version, size = item.version, item.size
    created_at, updated_at = item.created_at, item.updated_at
    if (
        not isinstance(version, int)
        or not isinstance(size, int)
        or created_at is None
        or updated_at is None
    ):
        raise CorruptStateError(tid, "stored item lacks version, size or timestamps")
    return Record(
        thread_id=tid,
        version=version,
        created_at=created_at,
        updated_at=updated_at,
        expires_at=_expiry(item, tid),
        size=size,
        payload=item.state,
    )


def _expiry(item: CheckpointItem, thread_id: str) -> datetime | None:
    micros = item.expires_at_us
    if micros is None:
        return None
    if not isinstance(micros, int):
        name = type(item).expires_at_us.attr_name
        raise CorruptStateError(thread_id, f"{name} is not an integer: {micros!r:.40}")
    return from_epoch_micros(micros)


@dataclass(frozen=True, slots=True)
class ParsedURL:
    """A ``dynamodb://`` URL split into the table name and constructor keywords."""

    table_name: str
    options: dict[str, Any]


_URL_OPTIONS: dict[str, tuple[str, type[int] | type[float] | type[str]]] = {
    "region": ("region", str),
    "endpoint": ("endpoint_url", str),
    "endpoint_url": ("endpoint_url", str),
    "call_timeout": ("call_timeout", float),
    "connect_timeout": ("connect_timeout", float),
    "read_timeout": ("read_timeout", float),
    "retries": ("max_retries", int),
    "max_retries": ("max_retries", int),
    "index_shards": ("index_shards", int),
    "namespace": ("namespace", str),
    "ttl": ("ttl", float),
}


def parse_url(url: str) -> ParsedURL:
    """Parse ``dynamodb://TABLE?region=...&endpoint=...`` into a table name and keywords.

    Query keys: ``region``, ``endpoint`` (``http://host:port`` of moto or LocalStack),
    ``call_timeout``, ``connect_timeout`` and ``read_timeout`` (seconds), ``retries``,
    ``index_shards``, ``namespace``, ``ttl`` (seconds). Credentials never go in URLs: they come
    from the standard AWS chain or from explicit keyword arguments.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() != "dynamodb":
        raise ConfigurationError(f"not a dynamodb:// URL: {url!r:.120}")
    table = validate_table_name(unquote(parts.netloc + parts.path.rstrip("/")))
    options: dict[str, Any] = {}
    for key, raw in parse_qsl(parts.query, keep_blank_values=True):
        known = _URL_OPTIONS.get(key)
        if known is None:
            names = ", ".join(sorted(_URL_OPTIONS))
            raise ConfigurationError(f"unknown dynamodb:// URL option {key!r}; known: {names}")
        name, kind = known
        try:
            options[name] = kind(raw)
        except ValueError as exc:
            raise ConfigurationError(f"dynamodb:// URL option {key}={raw!r} is invalid") from exc
        if kind is float and not math.isfinite(options[name]):
            raise ConfigurationError(f"dynamodb:// URL option {key}={raw!r} is invalid")
    return ParsedURL(table, options)

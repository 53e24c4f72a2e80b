"""Pure mapping of the DynamoDB pieces format: sort keys, chunks, head items, plans. No I/O.

A thread is one partition (``pk``): its head item (sort key `HEAD_SORT_KEY`) and the chunks of
its pieces (``p#<piece key>#<n>``) and of an overflowing head (``o#<write id>#<n>``). A piece key
is unique to the save that wrote it (`agents_persistence._layout`), so a save may write its
pieces before the head that names them: a reader follows the head, never the partition's other
items. `plan_write` turns one save into the items to put and the sort keys to delete;
`parse_partition` turns the items of one Query back into the head, its manifest and the bodies.
Both go through the checkpointer's `Codec`: with keys, pieces are sealed and the head is a
sealed blob (kept in the head item's binary ``sealed`` attribute, or in its overflow chunks when
large), without keys they are stored exactly as before encryption existed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from agents_persistence._core import Record, from_epoch_micros
from agents_persistence._layout import Manifest, chunks, pack, unpack
from agents_persistence.errors import CorruptStateError
from agents_persistence.models.dynamodb import HEAD_SORT_KEY, PieceItem, ThreadHeadItem
from agents_persistence.repositories._dynamodb_mapping import (
    item_key,
    ttl_moment,
    version_attributes,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agents_persistence._codec import Codec, Sealer
    from agents_persistence._core import WriteRequest
    from agents_persistence._layout import Layout

__all__ = [
    "CHUNK_BYTES",
    "HEAD_INLINE_BYTES",
    "HeadMeta",
    "Partition",
    "PartitionIncompleteError",
    "WritePlan",
    "group_of",
    "parse_partition",
    "piece_sort_key",
    "plan_write",
]

CHUNK_BYTES = 350_000
"""Largest chunk of a piece in one item: below the 400 KB item limit with room for the keys."""
HEAD_INLINE_BYTES = 300_000
"""Largest head JSON plus manifest kept inside the head item (beside keys and index keys)."""
_PIECE = "p"
_OVERFLOW = "o"
_SEP = "#"


def piece_sort_key(group: str, part: int) -> str:
    """The sort key of chunk ``part`` of ``group`` (``p#<piece key>`` or ``o#<write id>``)."""
    return f"{group}{_SEP}{part:05d}"


def group_of(sort_key_text: str) -> str:
    """The group (piece or overflow) a chunk's sort key belongs to."""
    return sort_key_text.rpartition(_SEP)[0]


def _piece_group(key: str) -> str:
    return f"{_PIECE}{_SEP}{key}"


def _overflow_group(write_id: str) -> str:
    return f"{_OVERFLOW}{_SEP}{write_id}"


@dataclass(frozen=True, slots=True)
class HeadMeta:
    """What a save needs to know of a stored head (and of its partition's other items).

    Attributes:
        version: The stored version.
        created_at: Kept by the next save.
        updated_at: The stored head's save time.
        expires_at: Exact expiry, or ``None``.
        write_id: Unique to the save that wrote the head: the next save's condition.
        token: The manifest's token (``None``: a head without manifest).
        pieces_expire: Earliest time to live of the pieces (epoch seconds), or ``None``.
        groups: Sort keys of every chunk seen in the partition, by group.
        present: Whether a head is stored at all (`absent` makes one that is not).
    """

    version: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    write_id: str
    token: str | None
    pieces_expire: int | None
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    present: bool = True

    def live_version(self, now: datetime) -> int | None:
        """The version a save compares ``expected_version`` with (``None``: absent, expired)."""
        if not self.present:
            return None
        return self.version if self.expires_at is None or self.expires_at > now else None

    @classmethod
    def absent(cls, groups: Mapping[str, tuple[str, ...]]) -> HeadMeta:
        """A partition without head, holding the chunks in ``groups``."""
        epoch = datetime.fromtimestamp(0, UTC)
        return cls(0, epoch, epoch, None, "", None, None, dict(groups), present=False)

    @classmethod
    def of(
        cls, thread_id: str, head: ThreadHeadItem, groups: Mapping[str, tuple[str, ...]]
    ) -> HeadMeta:
        """The metadata of a stored head item."""
        tid = thread_id
        version, created_at, updated_at = head.version, head.created_at, head.updated_at
        if not isinstance(version, int) or created_at is None or updated_at is None:
            raise CorruptStateError(tid, "stored head lacks version or timestamps")
        micros = head.expires_at_us
        if micros is not None and not isinstance(micros, int):
            raise CorruptStateError(tid, "stored head's expiry is not an integer")
        floor = head.pieces_expire
        return cls(
            version=version,
            created_at=created_at,
            updated_at=updated_at,
            expires_at=None if micros is None else from_epoch_micros(micros),
            write_id=head.write_id or "",
            token=head.token,
            pieces_expire=floor if isinstance(floor, int) else None,
            groups=dict(groups),
        )


@dataclass(frozen=True, slots=True)
class WritePlan:
    """One save as items: the head, the chunks to put, the sort keys to delete afterwards.

    Attributes:
        head: The head item (written last, on condition).
        puts: New chunk items (fresh sort keys: invisible until the head names them).
        deletes: Sort keys of chunks no longer named (dropped pieces, an old overflow, orphans).
        layout: The layout written (the delta, or the full write it fell back to).
        meta: The head's metadata once written (the next save's base).
        put_bytes: Bytes of the chunk bodies put.
    """

    head: ThreadHeadItem
    puts: list[PieceItem]
    deletes: list[str]
    layout: Layout
    meta: HeadMeta
    put_bytes: int


def _piece_ttl(request: WriteRequest) -> datetime | None:
    """The TTL moment of a new piece: the head's expiry plus the thread's time to live.

    A piece outlives its head by one time to live, so deltas may keep it until a save would
    let the head outlive it; that save rewrites every piece (a full write).
    """
    if request.expires_at is None:
        return None
    return ttl_moment(request.expires_at + max(request.expires_at - request.now, timedelta(0)))


def _deltas_allowed(request: WriteRequest, live: HeadMeta | None) -> bool:
    """Whether a delta's kept pieces live at least as long as the head this save writes."""
    if live is None or live.pieces_expire is None:
        return True
    if request.expires_at is None:
        return False
    return int(ttl_moment(request.expires_at).timestamp()) <= live.pieces_expire


def _chunk_items(pk: str, group: str, stored: bytes, expires: datetime | None) -> list[PieceItem]:
    parts = chunks(stored, CHUNK_BYTES)
    return [
        PieceItem(pk, piece_sort_key(group, n), body=part, parts=len(parts), expires_at=expires)
        for n, part in enumerate(parts)
    ]


def plan_write(
    namespace: str,
    shards: int,
    request: WriteRequest,
    stored: HeadMeta | None,
    write_id: str,
    sealer: Sealer,
) -> WritePlan:
    """The items one save writes over the stored head ``stored`` (``None``: absent).

    ``sealer`` (one per save, reused by its retries) gives the stored form of the head and of
    each piece: sealed with keys, packed text otherwise.

    The delta in ``request.layout`` applies only if ``stored`` is live and still carries its
    base's token, and if the pieces it keeps live as long as the new head; otherwise the save
    is a full write. Either way every chunk of the partition the new head does not name is
    deleted (orphans included), once the head names the new pieces.
    """
    now = request.now
    live = stored if stored is not None and stored.live_version(now) is not None else None
    stored = stored if stored is not None and stored.present else None
    layout = request.layout.against(None if live is None else live.token)
    if layout.base is not None and not _deltas_allowed(request, live):
        layout = layout.full()
    pk = item_key(namespace, request.thread_id)
    piece_ttl = _piece_ttl(request)
    puts: list[PieceItem] = []
    tid = request.thread_id
    for key, body in layout.pieces.items():
        puts.extend(_chunk_items(pk, _piece_group(key), sealer.piece(tid, key, body), piece_ttl))
    known = dict(stored.groups) if stored is not None else {}
    # Every chunk the new head does not name goes: dropped pieces, the old head's overflow,
    # and orphans of saves that never switched the head.
    pieces = layout.manifest.keys()
    named = {_piece_group(key) for key in pieces} | {HEAD_SORT_KEY}
    drop_groups = [group for group in known if group not in named]
    if layout.base is None:
        floor = None if piece_ttl is None else int(piece_ttl.timestamp())
    else:
        floor = live.pieces_expire if live is not None else None
        if floor is None and piece_ttl is not None and layout.pieces:
            floor = int(piece_ttl.timestamp())
    stored_head, manifest_json = sealer.head(tid, layout)
    inline = len(stored_head) + len(manifest_json.encode()) <= HEAD_INLINE_BYTES
    overflow: list[PieceItem] = []
    if not inline:
        joined = stored_head + manifest_json.encode()
        overflow = _chunk_items(pk, _overflow_group(write_id), pack(joined), piece_ttl)
    sealed = sealer.seals
    version = request.next_version(None if live is None else live.version)
    attributes = version_attributes(
        namespace, shards, request, None if live is None else live.created_at, write_id
    )
    created_at = attributes["created_at"]
    head = ThreadHeadItem(
        pk,
        HEAD_SORT_KEY,
        state=stored_head.decode() if inline and not sealed else None,
        sealed=stored_head if inline and sealed else None,
        manifest=manifest_json if inline else None,
        overflow=None if inline else len(overflow),
        head_bytes=None if inline else len(stored_head),
        token=layout.manifest.token,
        pieces_expire=floor,
        **{**attributes, "version": version},
    )
    puts.extend(overflow)
    deletes = [sk for group in drop_groups for sk in known.get(group, ())]
    groups = {group: keys for group, keys in known.items() if group not in set(drop_groups)}
    for item in puts:
        groups[group_of(item.sk)] = (*groups.get(group_of(item.sk), ()), item.sk)
    meta = HeadMeta(
        version,
        created_at,
        now,
        request.expires_at,
        write_id,
        layout.manifest.token,
        floor,
        groups,
    )
    put_bytes = sum(len(item.body or b"") for item in puts)
    return WritePlan(head, puts, deletes, layout, meta, put_bytes)


@dataclass(slots=True)
class Partition:
    """The items of one thread's partition as one Query returned them."""

    head: ThreadHeadItem | None = None
    chunks: dict[str, dict[int, tuple[int, bytes]]] = field(default_factory=dict)

    def add(self, raw: Mapping[str, Any], head_sort_key_name: str) -> None:
        """Take one item of the Query's answer (wire format)."""
        sk = raw[head_sort_key_name]["S"]
        if sk == HEAD_SORT_KEY:
            self.head = ThreadHeadItem.from_raw_data(dict(raw))
            return
        piece = PieceItem.from_raw_data(dict(raw))
        number = int(sk.rpartition(_SEP)[2])
        parts = piece.parts
        if not isinstance(parts, int) or parts < 1:
            raise CorruptStateError(raw.get("pk", {}).get("S", ""), f"piece {sk} lacks its parts")
        self.chunks.setdefault(group_of(sk), {})[number] = (parts, piece.body or b"")

    def groups(self) -> dict[str, tuple[str, ...]]:
        """Sort keys seen, by group (the head's own group included)."""
        found = {
            group: tuple(piece_sort_key(group, n) for n in parts)
            for group, parts in self.chunks.items()
        }
        if self.head is not None:
            found[HEAD_SORT_KEY] = (HEAD_SORT_KEY,)
        return found

    def joined(self, group: str) -> bytes | None:
        """A group's bytes as stored (packed or sealed); ``None`` if a chunk is missing."""
        parts = self.chunks.get(group)
        if not parts:
            return None
        count = next(iter(parts.values()))[0]
        if len(parts) != count or any(n not in parts for n in range(count)):
            return None
        return b"".join(parts[n][1] for n in range(count))


class PartitionIncompleteError(Exception):
    """A chunk the head names is missing: a concurrent save moved on; read again."""


def parse_partition(thread_id: str, partition: Partition, codec: Codec) -> Record | None:
    """The record of a partition's head with the assembled state (``None``: no head).

    The stored head (text, or sealed bytes), the manifest stored in clear and the named
    pieces' stored bodies go to ``codec``, which opens what is sealed and assembles the state.

    Raises:
        PartitionIncompleteError: A piece or overflow chunk the head names is missing.
        CorruptStateError: The head or a piece is damaged, or a sealed value does not open
            (`DecryptionError`, also for a sealed head read without keys).
    """
    head = partition.head
    if head is None:
        return None
    meta = HeadMeta.of(thread_id, head, {})
    if head.overflow is not None:
        joined = partition.joined(_overflow_group(meta.write_id))
        if joined is None or not isinstance(head.head_bytes, int):
            raise PartitionIncompleteError(thread_id)
        unpacked = unpack(thread_id, joined)
        stored_head: bytes | str = unpacked[: head.head_bytes]
        manifest_text: bytes | str | None = unpacked[head.head_bytes :]
    else:
        stored_head = head.sealed if head.sealed is not None else head.state or ""
        manifest_text = head.manifest
    record = Record(
        thread_id=thread_id,
        version=meta.version,
        created_at=meta.created_at,
        updated_at=meta.updated_at,
        expires_at=meta.expires_at,
        size=head.size if isinstance(head.size, int) else 0,
    )
    if manifest_text is None:
        return codec.open(thread_id, stored_head, None, {}).apply(record)
    manifest = Manifest.from_json(thread_id, manifest_text)  # in clear, sealed head or not
    bodies: dict[str, bytes] = {}
    named = manifest.keys()
    for key in named:
        body = partition.joined(_piece_group(key))
        if body is None:
            raise PartitionIncompleteError(thread_id)
        bodies[key] = body
    return codec.open(thread_id, stored_head, manifest, bodies).apply(record)

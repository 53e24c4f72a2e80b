"""How a state is stored: a small head plus immutable pieces, so a save writes what changed. No I/O.

A state is split into:

* the **head**: a JSON object of every field except the transcript and the large maps (todos,
  pending interrupts, unknown fields, ...), rewritten by every save;
* the **transcript** (the ``messages`` list): segments of messages, each a piece holding the
  messages' JSON joined by ``,``. A save appends one segment with the messages added since the
  version it is based on; it rewrites the transcript as one segment when earlier messages changed
  (edited, truncated, summarised: the digest of the stored text no longer matches the new
  state's prefix). Appended segments merge in tiers: when `FANOUT` segments of one level end
  the transcript, they become one segment of the next level, so a thread holds a few dozen
  segments at most and each message is rewritten about log8(saves) times over its life;
* the **maps** (``files`` and ``scratchpad``): entries whose JSON is at least `ENTRY_PIECE_BYTES`
  are pieces of their own, the smaller ones share one group piece. A piece is written only when
  its digest changed.

A piece is immutable: its key (``<token>.<n>``, the token unique to the save that wrote it) is never
reused for other content, so a store may write the new pieces first and switch the head to them
last. The head carries the `Manifest`: which pieces make up the version, in which order, with
their digests, and the save's token. A save is based on the manifest the checkpointer last read
or wrote for the thread (`Core` keeps them); the store applies it as a delta only while the
stored head still carries that manifest's token, in the same atomic step as the version check,
and otherwise writes the whole state (`Layout.full`).

Only fields that keep their name in JSON are split (no alias): ``messages`` as a list, ``files``
and ``scratchpad`` as dicts. Any other state model, and any state whose JSON is shorter than
`SMALL_STATE_BYTES`, is stored as one head (no pieces), as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass, field, replace
from functools import cache
from typing import TYPE_CHECKING, Any, cast, get_args, get_origin

from pydantic_core import from_json

from agents_persistence.errors import CorruptStateError, InvalidStateError
from agents_persistence.upcasting import schema_version

if TYPE_CHECKING:
    from collections.abc import Mapping

    from pydantic import BaseModel

__all__ = [
    "COMPRESS_BYTES",
    "ENTRY_PIECE_BYTES",
    "FORMAT",
    "FANOUT",
    "SMALL_STATE_BYTES",
    "Layout",
    "Manifest",
    "Segment",
    "Splitter",
    "assemble",
    "chunks",
    "pack",
    "splitter",
    "unpack",
]

FORMAT = 1
"""The manifest format this module writes and reads (``"f"`` in its JSON)."""

FANOUT = 8
"""Appended segments of one level merged into one segment of the next level (tiered merging)."""

REWRITTEN = 15
"""The level of a transcript rewritten whole: never merged again, until the next rewrite."""

Segment = tuple[str, int, int, int]
"""A transcript segment: piece key, message count, byte length, level."""

_TOKENS = random.Random()  # unique, not secret: see `new_token`
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_TOKENS.seed)


def new_token() -> str:
    """A save's token: 48 random bits in hexadecimal.

    Unique, not secret: a delta applies only on the head that carries its base's token, so two
    saves must not share one. Drawn from a generator of this module, seeded from the operating
    system's randomness at import and again in a forked child (an application seeding the
    ``random`` module, or forked workers, never repeat another process's tokens); a tenth of
    the cost of ``secrets.token_hex`` on a save's path.
    """
    return f"{_TOKENS.getrandbits(48):012x}"


SMALL_STATE_BYTES = 16 * 1024
"""States whose JSON is shorter are stored as one head, without pieces."""

ENTRY_PIECE_BYTES = 1024
"""Map entries whose ``"key":value`` JSON is at least this long are pieces of their own."""

COMPRESS_BYTES = 4096
"""Pieces at least this long are stored zstd-compressed (when that makes them smaller)."""

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
"""A zstd frame's first bytes; a JSON fragment never starts with them (0x28 is ``(``)."""

TRANSCRIPT = "messages"
MAPS = ("files", "scratchpad")
_GROUP = ""
"""The entry name of a map's group piece (its entries below `ENTRY_PIECE_BYTES`)."""


def _digest(data: bytes | memoryview) -> str:
    return str(_hasher(data).hexdigest())


def _hasher(data: bytes | memoryview) -> Any:
    """SHA-1 of ``data``: a content check (not a security boundary), the fastest here."""
    return hashlib.sha1(data, usedforsecurity=False)


@dataclass(frozen=True, slots=True)
class Manifest:
    """The pieces one stored version is made of (kept in its head).

    Attributes:
        token: Unique to the save that wrote this version; a delta applies only on it.
        count: Messages in the transcript.
        length: Bytes of the transcript text (the messages' JSON joined by ``,``).
        digest: Digest of that text.
        segments: `Segment` per transcript segment (key, messages, bytes, level), in order.
        transcript: Whether the state's JSON has the ``messages`` field at all.
        maps: Per map field in the JSON: ``{entry name: (piece key, digest, length)}``; an
            entry's name is ``"."`` and its key in the map, ``""`` names the group piece of
            the small entries.
        schema: The state model's schema version the version was written with
            (`agents_persistence.upcasting`); stored only when it is not 1.
    """

    token: str
    count: int = 0
    length: int = 0
    digest: str = ""
    segments: tuple[Segment, ...] = ()
    transcript: bool = False
    maps: Mapping[str, Mapping[str, tuple[str, str, int]]] = field(default_factory=dict)
    schema: int = 1

    @property
    def pieced(self) -> bool:
        """Whether this version has pieces (`keys` is not empty), without building the set."""
        return bool(self.segments) or any(self.maps.values())

    def keys(self) -> set[str]:
        """Every piece key of this version."""
        keys = {segment[0] for segment in self.segments}
        for entries in self.maps.values():
            keys.update(key for key, _, _ in entries.values())
        return keys

    def redacted(self) -> Manifest:
        """What may be stored in clear beside a sealed head: the token, piece keys and schema.

        Entry names (file paths, scratchpad keys), digests, message counts and lengths are
        left out; the whole manifest travels inside the sealed head.
        """
        return Manifest(
            token=self.token,
            segments=tuple((key, 0, 0, level) for key, _, _, level in self.segments),
            maps={
                name: {
                    str(index): (key, "", 0) for index, (key, _, _) in enumerate(entries.values())
                }
                for name, entries in self.maps.items()
            },
            schema=self.schema,
        )

    def to_json(self) -> str:
        """Compact JSON, as stored in the head."""
        if self.schema == 1 and not (
            self.segments or self.maps or self.count or self.length or self.digest
        ):
            # A state stored as one head (most saves of small states): the same text, built
            # without the encoder.
            token = self.token
            if not (token.isascii() and token.isalnum()):
                token = json.dumps(token, ensure_ascii=False)[1:-1]
            transcript = "true" if self.transcript else "false"
            return (
                f'{{"f":{FORMAT},"t":"{token}","n":0,"l":0,"d":"","s":[],'
                f'"m":{transcript},"p":{{}}}}'
            )
        raw: dict[str, Any] = {
            "f": FORMAT,
            "t": self.token,
            "n": self.count,
            "l": self.length,
            "d": self.digest,
            "s": [list(segment) for segment in self.segments],
            "m": self.transcript,
            "p": {
                name: {entry: list(value) for entry, value in entries.items()}
                for name, entries in self.maps.items()
            },
        }
        if self.schema != 1:
            raw["v"] = self.schema
        return json.dumps(raw, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, thread_id: str, text: str | bytes | Mapping[str, Any]) -> Manifest:
        """Parse a stored manifest; a malformed one raises `CorruptStateError`."""
        try:
            raw = from_json(text) if isinstance(text, str | bytes) else text
            if raw["f"] != FORMAT:
                raise CorruptStateError(
                    thread_id, f"stored layout format {raw['f']!r} is newer than this library"
                )
            return cls(
                token=str(raw["t"]),
                count=int(raw["n"]),
                length=int(raw["l"]),
                digest=str(raw["d"]),
                segments=tuple(
                    (str(key), int(count), int(length), int(level))
                    for key, count, length, level in raw["s"]
                ),
                transcript=bool(raw["m"]),
                maps={
                    str(name): {
                        str(entry): (str(key), str(digest), int(length))
                        for entry, (key, digest, length) in entries.items()
                    }
                    for name, entries in raw["p"].items()
                },
                schema=int(raw.get("v", 1)),
            )
        except CorruptStateError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise CorruptStateError(thread_id, f"malformed layout manifest ({exc})") from exc


@dataclass(frozen=True, slots=True)
class Layout:
    """One save, split for storage.

    Attributes:
        head: The head's JSON object (UTF-8), always written.
        manifest: The manifest of the version this save writes.
        pieces: The pieces to write, key to body (UTF-8 JSON fragments).
        drop: Piece keys of ``base`` this save removes.
        base: The manifest this save is a delta on, or ``None``: a full write, whose
            ``pieces`` are every piece of the version (the store removes all others).
        size: Bytes of the whole state's JSON (what a load assembles).
    """

    head: bytes
    manifest: Manifest
    pieces: Mapping[str, bytes]
    drop: tuple[str, ...]
    base: Manifest | None
    size: int
    _whole: _Whole | None = field(default=None, repr=False, compare=False)

    @property
    def written(self) -> int:
        """Bytes this save sends before compression: the head, the manifest and new pieces."""
        return (
            len(self.head)
            + len(self.manifest.to_json())
            + sum(len(body) for body in self.pieces.values())
        )

    def against(self, stored: Manifest | str | None) -> Layout:
        """What to write over the stored head: this delta if it still carries ``base``, else whole.

        ``stored`` is the stored head's manifest or its token (``None``: no head, or a head
        stored whole).
        """
        token = stored.token if isinstance(stored, Manifest) else stored
        if self.base is not None and token == self.base.token:
            return self
        return self.full()

    def full(self) -> Layout:
        """The same state as a full write (for a store whose stored head moved past ``base``)."""
        if self.base is None:
            return self
        if self._whole is None:  # one head, no pieces: the same write without a base
            return replace(self, base=None)
        return self._whole.layout(self.head, self.size)


@dataclass(frozen=True, slots=True)
class _Whole:
    """What a delta keeps to become a full write: the transcript text and every map entry."""

    token: str
    transcript: bytes
    count: int
    digest: str
    has_transcript: bool
    maps: Mapping[str, Mapping[str, bytes]]
    schema: int

    def layout(self, head: bytes, size: int) -> Layout:
        pieces: dict[str, bytes] = {}
        segments: tuple[Segment, ...] = ()
        if self.count:
            key = f"{self.token}.t"
            pieces[key] = self.transcript
            segments = ((key, self.count, len(self.transcript), REWRITTEN),)
        maps: dict[str, dict[str, tuple[str, str, int]]] = {}
        for name, entries in self.maps.items():
            stored = maps[name] = {}
            for index, (entry, body) in enumerate(entries.items()):
                key = f"{self.token}.{name[0]}{index}"
                pieces[key] = body
                stored[entry] = (key, _digest(body), len(body))
        manifest = Manifest(
            token=self.token,
            count=self.count,
            length=len(self.transcript),
            digest=self.digest,
            segments=segments,
            transcript=self.has_transcript,
            maps=maps,
            schema=self.schema,
        )
        return Layout(head, manifest, pieces, (), None, size)


def _inner(dumped: bytes, name: str) -> bytes:
    """The inside of ``{"<name>":[...]}`` / ``{"<name>":{...}}`` (``b""`` when empty)."""
    start = len(name) + 5  # {"name":[
    return dumped[start:-2]


def _check(thread_id: str, fragment: bytes, opening: bytes, closing: bytes) -> None:
    """Parse ``fragment`` back as every load will; refuse what could not be loaded.

    ``opening`` and ``closing`` put the fragment at the depth it has in the whole state, so
    the parser's nesting limit is checked where it applies.
    """
    try:
        from_json(opening + fragment + closing, allow_inf_nan=False, cache_strings=False)
    except ValueError as exc:
        raise InvalidStateError(
            f"state of thread {thread_id!r} could not be loaded back ({exc}): NaN and"
            " infinities have no JSON form, and nesting is limited to what the JSON"
            " parser accepts (about 200 levels); nothing was written"
        ) from exc


def _serialized_as_declared(state_type: type[BaseModel], name: str, args: tuple[type, ...]) -> bool:
    """Whether field ``name`` is a plain ``dict[args]`` that the serializer writes as it is.

    No annotated metadata (a serializer or validator), no field serializer of its own, no
    model serializer, no ``json_encoders``: its JSON is its keys and values as declared.
    """
    info = state_type.model_fields.get(name)
    if info is None or info.metadata or get_args(info.annotation) != args:
        return False
    decorators = state_type.__pydantic_decorators__
    if decorators.model_serializers or state_type.model_config.get("json_encoders"):
        return False
    return not any(
        name in serializer.info.fields or "*" in serializer.info.fields
        for serializer in decorators.field_serializers.values()
    )


class Splitter:
    """Splits states of one model into a `Layout` (built once per state type)."""

    __slots__ = ("maps", "schema", "serializer", "string_maps", "transcript")

    def __init__(self, state_type: type[BaseModel]) -> None:
        fields = state_type.model_fields
        self.schema = schema_version(state_type)
        self.serializer = state_type.__pydantic_serializer__

        def plain(name: str, origin: type) -> bool:
            info = fields.get(name)
            return (
                info is not None
                and info.alias is None
                and info.serialization_alias is None
                and get_origin(info.annotation) is origin
            )

        self.transcript = plain(TRANSCRIPT, list)
        self.maps = tuple(name for name in MAPS if plain(name, dict))
        self.string_maps = frozenset(
            name for name in self.maps if _serialized_as_declared(state_type, name, (str, str))
        )

    def _unchecked(self, state: BaseModel) -> set[str]:
        """The `string_maps` of ``state`` that hold only strings now.

        Their entries are JSON strings only, which the parser always reads back (the serializer
        refuses lone surrogates; a replaced one in a key is refused by `Core.encode`): a save
        does not parse them back. A value mutated in after validation that is not a `str`
        makes the map's entries parsed back like any other fragment.
        """
        return {
            name
            for name in self.string_maps
            if all(type(k) is str and type(v) is str for k, v in getattr(state, name).items())
        }

    @property
    def split_fields(self) -> set[str]:
        """The fields stored outside the head."""
        return ({TRANSCRIPT} if self.transcript else set()) | set(self.maps)

    def split(self, thread_id: str, state: BaseModel, base: Manifest | None) -> Layout:
        """Encode ``state`` as a delta on ``base`` (or a full write when ``base`` is ``None``).

        Every fragment written is parsed back first (fail closed; a piece of a map of strings
        holding only strings is not: `_unchecked`); fragments of ``base`` that
        are kept were checked when they were written.
        """
        token = new_token()
        to_json = self.serializer.to_json
        if not self.split_fields or base is None or not base.pieced:
            # A small state is one head: a delta would not write less than the whole of it.
            entire = to_json(state)
            if not self.split_fields or len(entire) < SMALL_STATE_BYTES:
                _check(thread_id, entire, b"", b"")
                # On a base without pieces this is a delta with nothing to remove: a store
                # need not look for pieces when the stored head still carries that base.
                return Layout(
                    entire, Manifest(token, schema=self.schema), {}, (), base, len(entire)
                )
        head = to_json(state, exclude=self.split_fields)
        _check(thread_id, head, b"", b"")
        pieces: dict[str, bytes] = {}
        drop: list[str] = []
        size = len(head)
        parts = 0

        # The transcript.
        text, count, digest, has_transcript = b"", 0, "", False
        segments: tuple[Segment, ...] = ()
        if self.transcript:
            messages = getattr(state, TRANSCRIPT)
            dumped = to_json(state, include={TRANSCRIPT})
            has_transcript = dumped != b"{}"
            text = _inner(dumped, TRANSCRIPT) if has_transcript else b""
            count = len(messages) if has_transcript else 0
            if has_transcript:
                size += len(TRANSCRIPT) + 5 + len(text)  # "messages":[...]
                parts += 1
            segments, digest = self._transcript(
                thread_id, state, base, token, text, count, pieces, drop
            )

        # The maps.
        maps: dict[str, dict[str, tuple[str, str, int]]] = {}
        whole_maps: dict[str, dict[str, bytes]] = {}
        unchecked = self._unchecked(state)
        for name in self.maps:
            dumped = to_json(state, include={name})
            if dumped == b"{}":
                continue
            inner = _inner(dumped, name)
            size += len(name) + 5 + len(inner)
            parts += 1
            entries = whole_maps[name] = self._entries(state, name, inner)
            stored = maps[name] = {}
            previous = {} if base is None else base.maps.get(name, {})
            for index, (entry, body) in enumerate(entries.items()):
                body_digest = _digest(body)
                known = previous.get(entry)
                if known is not None and known[1] == body_digest:
                    stored[entry] = known
                    continue
                if name not in unchecked:  # strings only are always read back
                    _check(thread_id, body, b'{"m":{', b"}}")
                key = f"{token}.{name[0]}{index}"
                pieces[key] = body
                stored[entry] = (key, body_digest, len(body))
            drop.extend(
                key for entry, (key, _, _) in previous.items() if stored.get(entry, ("",))[0] != key
            )
        if base is not None:
            drop.extend(
                key
                for name, entries in base.maps.items()
                if name not in maps
                for key, _, _ in entries.values()
            )
        if parts and len(head) > 2:
            size += parts  # the commas between the head's fields and the split ones
        elif parts:
            size += parts - 1
        manifest = Manifest(
            token=token,
            count=count,
            length=len(text),
            digest=digest,
            segments=segments,
            transcript=has_transcript,
            maps=maps,
            schema=self.schema,
        )
        whole = _Whole(token, text, count, digest, has_transcript, whole_maps, self.schema)
        if base is None:
            return whole.layout(head, size)
        return Layout(head, manifest, pieces, tuple(drop), base, size, whole)

    def _transcript(
        self,
        thread_id: str,
        state: BaseModel,
        base: Manifest | None,
        token: str,
        text: bytes,
        count: int,
        pieces: dict[str, bytes],
        drop: list[str],
    ) -> tuple[tuple[Segment, ...], str]:
        """Segments and digest of the new transcript; fills ``pieces``/``drop`` for a delta."""
        if base is not None and 0 < base.count <= count and base.length < len(text):
            # Appended? The stored text must be this text's prefix, up to a separating comma.
            prefix = memoryview(text)[: base.length]
            hasher = _hasher(prefix)
            if text[base.length] == 0x2C and hasher.hexdigest() == base.digest:  # ","
                tail = text[base.length + 1 :]
                _check(thread_id, tail, b'{"m":[', b"]}")
                hasher.update(text[base.length :])
                segments = list(base.segments)
                segments.append((f"{token}.t", count - base.count, len(tail), 0))
                _merge(segments, token, drop)
                _fill(segments, text, token, pieces)
                return tuple(segments), hasher.hexdigest()
        elif base is not None and base.count == count and base.length == len(text):
            digest = _digest(text)
            if digest == base.digest:
                return base.segments, digest
        # Rewritten (or first written): one segment of the whole text.
        if base is not None:
            drop.extend(segment[0] for segment in base.segments)
        if not count:
            return (), ""
        _check(thread_id, text, b'{"m":[', b"]}")
        key = f"{token}.t"
        pieces[key] = text
        return ((key, count, len(text), REWRITTEN),), _digest(text)

    def _entries(self, state: BaseModel, name: str, inner: bytes) -> dict[str, bytes]:
        """A map's pieces, by entry name: large entries alone, the others in one group."""
        if len(inner) < ENTRY_PIECE_BYTES:
            return {_GROUP: inner} if inner else {}
        include_one = self.serializer.to_json
        large: dict[str, bytes] = {}
        small: list[bytes] = []
        for entry in getattr(state, name):
            body = _inner(include_one(state, include={name: {entry}}), name)
            if len(body) >= ENTRY_PIECE_BYTES:
                large["." + entry] = body
            else:
                small.append(body)
        if small:
            large[_GROUP] = b",".join(small)
        return large


@cache
def splitter(state_type: type[BaseModel]) -> Splitter:
    """The `Splitter` of ``state_type`` (built once)."""
    return Splitter(state_type)


def assemble(
    thread_id: str,
    head: str | bytes,
    manifest: Manifest,
    bodies: Mapping[str, bytes | str],
) -> bytes:
    """The whole state's JSON from a stored head, its manifest and the bodies of its pieces.

    Pieces not named by the manifest are ignored (left by a save that did not complete, or not
    yet removed). A missing piece, or one whose digest does not match, raises
    `CorruptStateError`: never a partial or silently wrong state.
    """
    raw_head = head.encode() if isinstance(head, str) else head
    if not manifest.transcript and not manifest.maps:
        return raw_head
    inner = raw_head.strip()[1:-1].strip()
    parts: list[bytes] = [b"{", inner] if inner else [b"{"]
    if manifest.transcript:
        segments = [_body(thread_id, bodies, segment[0]) for segment in manifest.segments]
        hasher = _hasher(b"")
        length = -1
        for index, body in enumerate(segments):
            if index:
                hasher.update(b",")
            hasher.update(body)
            length += len(body) + 1
        if segments and (length != manifest.length or hasher.hexdigest() != manifest.digest):
            raise CorruptStateError(thread_id, "stored transcript does not match its digest")
        if not segments and manifest.length:
            raise CorruptStateError(thread_id, "stored transcript is missing its segments")
        parts += (b"," if len(parts) > 1 else b"", b'"', TRANSCRIPT.encode(), b'":[')
        for index, body in enumerate(segments):
            if index:
                parts.append(b",")
            parts.append(body)
        parts.append(b"]")
    for name, entries in manifest.maps.items():
        parts += (b"," if len(parts) > 1 else b"", b'"', name.encode(), b'":{')
        for index, (key, digest, _) in enumerate(entries.values()):
            body = _body(thread_id, bodies, key)
            if _digest(body) != digest:
                raise CorruptStateError(thread_id, f"stored piece {key} does not match its digest")
            if index:
                parts.append(b",")
            parts.append(body)
        parts.append(b"}")
    parts.append(b"}")
    return b"".join(parts)


def _merge(segments: list[Segment], token: str, drop: list[str]) -> None:
    """Merge trailing runs of `FANOUT` segments of one level into one of the next level.

    New segments get keys ``<token>.s<level>``; the merged segments a store holds are dropped.
    """
    level = 0
    while len(segments) >= FANOUT and all(s[3] == level for s in segments[-FANOUT:]):
        run = segments[-FANOUT:]
        drop.extend(key for key, _, _, _ in run if not key.startswith(token))
        merged: Segment = (
            f"{token}.s{level + 1}",
            sum(s[1] for s in run),
            sum(s[2] for s in run) + FANOUT - 1,
            level + 1,
        )
        segments[-FANOUT:] = [merged]
        level += 1


def _fill(segments: list[Segment], text: bytes, token: str, pieces: dict[str, bytes]) -> None:
    """Cut the bodies of this save's new segments (at the end) out of the transcript text."""
    end = len(text)
    for key, _, length, _ in reversed(segments):
        if key.startswith(token):
            pieces[key] = text[end - length : end]
        else:
            break
        end -= length + 1


def pack(body: bytes) -> bytes:
    """A piece body as stored: zstd-compressed from `COMPRESS_BYTES` on, if that is smaller."""
    if len(body) < COMPRESS_BYTES:
        return body
    packed = _zstd().ZstdCompressor(level=3).compress(body)
    return packed if len(packed) < len(body) else body


def unpack(thread_id: str, stored: bytes) -> bytes:
    """The body of a stored piece (`pack` undone); a damaged frame raises `CorruptStateError`."""
    if not stored.startswith(_ZSTD_MAGIC):
        return stored
    zstd = _zstd()
    try:
        return cast("bytes", zstd.ZstdDecompressor().decompress(stored))
    except zstd.ZstdError as exc:
        raise CorruptStateError(thread_id, f"a stored piece does not decompress ({exc})") from exc


def chunks(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into parts of at most ``size`` bytes (one empty part for empty data)."""
    return [data[start : start + size] for start in range(0, len(data), size)] or [b""]


@cache
def _zstd() -> Any:
    import zstandard  # only the stores that compress need it

    return zstandard


def _body(thread_id: str, bodies: Mapping[str, bytes | str], key: str) -> bytes:
    body = bodies.get(key)
    if body is None:
        raise CorruptStateError(thread_id, f"stored piece {key} is missing")
    return body.encode() if isinstance(body, str) else body

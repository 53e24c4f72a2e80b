"""Pure mapping of the Redis store: a record hash <-> `Record`, derived from the model. No I/O.

Everything here is read from a redis-om record model (`CheckpointHash` or a namespace
subclass of it) through pydantic's public ``model_fields``: the stored field names and their
order, how each value is written and read back (from its annotation: ``int``, ``str``, or
either of them ``| None``), which fields a listing reads, and the Lua scripts rendered for those
fields. `RecordMapping.of` builds one per model class and caches it.

The hot paths never build a model instance (pydantic's ``model_construct`` alone costs more
than parsing a record): values travel in a `Row`, a named tuple of the model's fields made
from the model, and only values not in the store's own form are validated by the model.
"""

from __future__ import annotations

import types
import typing
from collections import namedtuple
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from agents_persistence._core import Record, from_epoch_micros
from agents_persistence._layout import Manifest
from agents_persistence.errors import ConfigurationError, CorruptStateError
from agents_persistence.models.redis import CheckpointHash, hash_fields
from agents_persistence.repositories._redis_lua import Scripts, render_scripts

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from pydantic.fields import FieldInfo

__all__ = ["FieldCodec", "RecordMapping"]

_EMPTY = ("", b"")
"""How redis-om writes ``None`` in a hash, as text or bytes."""


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


def _text_or_bytes(value: object) -> str | bytes:
    """Text as `_str` reads it, or bytes that are not UTF-8 (a sealed head) kept as bytes."""
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            return value  # a sealed value fails on its first byte (0xF5): no scan of the rest
    return _str(value)


def _as_is(value: object) -> str | bytes:
    return value if isinstance(value, bytes) else str(value)


_BASE_CODECS: dict[object, tuple[Callable[[Any], str | bytes], Callable[[object], Any]]] = {
    int: (str, _int),
    str: (str, _str),
    str | bytes: (_as_is, _text_or_bytes),
}
"""Encoder and fast decoder per supported annotation: the form redis-om writes in a hash.

A ``str | bytes`` field is written as given (bytes unchanged, anything else as text) and read
back as text when it is UTF-8, as bytes otherwise.
"""


@dataclass(frozen=True, slots=True)
class FieldCodec:
    """How one hash field is written and read back.

    Attributes:
        name: The field's name in the hash.
        optional: ``None`` is allowed, written as the empty string (as redis-om writes it).
        required: The model has no default for it: a hash without it is corrupt.
        default: The value of an absent field that is not required.
    """

    name: str
    optional: bool
    required: bool
    default: Any
    _encode: Callable[[Any], str | bytes]
    _decode: Callable[[object], Any]

    @classmethod
    def of(cls, name: str, info: FieldInfo) -> FieldCodec:
        """The codec of a model field, from its annotation; `ConfigurationError` if unsupported."""
        annotation: object = info.annotation
        arguments = typing.get_args(annotation)
        optional = type(None) in arguments and typing.get_origin(annotation) in (
            typing.Union,
            types.UnionType,
        )
        if optional:
            rest = [argument for argument in arguments if argument is not type(None)]
            annotation = rest[0] if len(rest) == 1 else annotation
        if annotation not in _BASE_CODECS:
            raise ConfigurationError(
                f"record field {name!r} has type {info.annotation!r}; the Redis store stores"
                " int, str, str | bytes and their optional forms"
            )
        encode, decode = _BASE_CODECS[annotation]
        required = info.is_required()
        return cls(name, optional, required, None if required else info.default, encode, decode)

    def encode(self, value: object) -> str | bytes:
        """The hash value of ``value``."""
        return "" if value is None else self._encode(value)

    def decode(self, value: object) -> Any:
        """The value of a hash field in the form the store writes, else `_Irregular`."""
        if self.optional and value in _EMPTY:
            return None
        return self._decode(value)


@dataclass(frozen=True, slots=True)
class RecordMapping:
    """The record hash of one model, and the scripts that read and write it.

    Attributes:
        model: The record model the mapping was read from.
        codecs: One per stored field, in the model's order.
        listed: The codecs of the fields a listing reads, in the order ``page`` rows hold them.
        scripts: The Lua scripts rendered for these fields.
    """

    model: type[CheckpointHash]
    codecs: tuple[FieldCodec, ...]
    listed: tuple[FieldCodec, ...]
    scripts: Scripts
    row: type[Any]
    """A named tuple of the model's fields (defaults as the model's; ``None`` if required)."""
    pairs: tuple[str | bytes, ...]
    """Every field name followed by an empty value: the shape of `encode`'s result."""

    @classmethod
    def of(cls, model: type[CheckpointHash]) -> RecordMapping:
        """The mapping of ``model``, built once per model class.

        The namespace models of `checkpoint_model` add no field: the store maps their records
        with the mapping of `CheckpointHash` itself.
        """
        return _mapping(model)

    @property
    def fields(self) -> tuple[str, ...]:
        """The stored field names, in the model's order."""
        return tuple(codec.name for codec in self.codecs)

    def encode(self, values: Mapping[str, Any]) -> list[str | bytes]:
        """Field values by name as hash name/value pairs of every field, in the model's order.

        A field missing from ``values`` takes the model's default.
        """
        pairs = [*self.pairs]
        pairs[1::2] = [codec.encode(values.get(codec.name, codec.default)) for codec in self.codecs]
        return pairs

    def decode(self, thread_id: str, fields: Mapping[Any, Any], *, with_payload: bool) -> Record:
        """A stored hash as a `Record`; raises `CorruptStateError` if it does not fit the model.

        ``fields`` maps field names (``str`` or ``bytes``) to values; ``None`` values count as
        absent (HMGET's reply for a missing field).
        """
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if value is not None:
                values[name.decode() if isinstance(name, bytes) else name] = value
        return self._record(thread_id, values, self.codecs, with_payload=with_payload)

    def decode_listed(self, thread_id: str, values: Sequence[Any]) -> Record:
        """A listing row's values (those of `listed`, ``None`` = absent) as a `Record`."""
        present = {
            codec.name: value
            for codec, value in zip(self.listed, values, strict=True)
            if value is not None
        }
        return self._record(thread_id, present, self.listed, with_payload=False)

    def _record(
        self,
        thread_id: str,
        values: dict[str, Any],
        codecs: tuple[FieldCodec, ...],
        *,
        with_payload: bool,
    ) -> Record:
        """The `Record` of field values, parsed by the codecs given.

        Values in the form the store writes are parsed directly; anything else is left to the
        model, which either accepts it as redis-om would read it or names the field that does
        not fit (`CorruptStateError`).
        """
        parsed: dict[str, Any] = {}
        try:
            for codec in codecs:
                value = values.get(codec.name)
                if value is not None:
                    parsed[codec.name] = codec.decode(value)
                elif codec.required:
                    raise _Irregular
            row = self.row(**parsed)
        except _Irregular:
            row = self._validate(thread_id, values, codecs)
        # A record without a manifest was stored whole, before the layout: its state is all.
        manifest = None
        if with_payload and row.manifest:
            manifest = Manifest.from_json(thread_id, row.manifest)
        try:
            return Record(
                thread_id=thread_id,
                version=row.version,
                created_at=from_epoch_micros(row.created_at),
                updated_at=from_epoch_micros(row.updated_at),
                expires_at=None if row.expires_at is None else from_epoch_micros(row.expires_at),
                size=row.size,
                payload=row.state if with_payload else None,
                manifest=manifest,
            )
        except OverflowError as exc:
            raise CorruptStateError(thread_id, "a timestamp is out of range") from exc

    def _validate(
        self, thread_id: str, values: dict[str, Any], codecs: tuple[FieldCodec, ...]
    ) -> Any:
        """Validate field values with the redis-om model (the slow path of `_record`)."""
        data: dict[str, Any] = {}
        for codec in codecs:
            if codec.name in values:
                value = values[codec.name]
                data[codec.name] = None if codec.optional and value in _EMPTY else value
        try:
            row = self.model.model_validate({**data, _primary_key(self.model): thread_id})
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise CorruptStateError(thread_id, f"field {where}: {problem['msg']}") from exc
        return self.row(*(getattr(row, codec.name) for codec in self.codecs))


def _primary_key(model: type[Any]) -> str:
    return next(  # type: ignore[no-any-return]
        name
        for name, info in model.model_fields.items()
        if getattr(info, "primary_key", False) is True
    )


_MAPPINGS: dict[type[CheckpointHash], RecordMapping] = {}


def _mapping(model: type[CheckpointHash]) -> RecordMapping:
    found = _MAPPINGS.get(model)
    if found is None:
        found = _MAPPINGS[model] = _read(model)
    return found


def _read(model: type[CheckpointHash]) -> RecordMapping:
    fields = hash_fields(model)
    infos = model.model_fields
    codecs = tuple(FieldCodec.of(name, infos[name]) for name in fields)
    unlisted = set(model.unlisted_fields)
    if not unlisted <= set(fields):
        raise ConfigurationError(
            f"unlisted_fields {sorted(unlisted)} are not all fields of {model.__name__}"
        )
    listed = tuple(codec for codec in codecs if codec.name not in unlisted)
    scripts = render_scripts(fields, [codec.name for codec in listed])
    make_row: Any = namedtuple  # its fields are known at run time only
    row = make_row(f"{model.__name__}Row", fields, defaults=[codec.default for codec in codecs])
    pairs: tuple[str | bytes, ...] = tuple(part for name in fields for part in (name, ""))
    return RecordMapping(model, codecs, listed, scripts, row, pairs)

"""The export format (JSON Lines) and the rule that makes imports and copies safe to rerun.

Line 1 is a header, ``{"format": "agents-persistence-export", "version": 1, ...}``; every other
line is one thread: its metadata (``thread_id``, ``version``, ``created_at``, ``updated_at``,
``expires_at``, ``size``) and its ``state`` as the store's JSON. Pure code apart from `put`, which
writes through the public contract only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from agents_persistence._core import as_utc, validate_thread_id
from agents_persistence.contract import CheckpointInfo
from agents_persistence.errors import CheckpointerError

if TYPE_CHECKING:
    from agents_persistence.contract import Checkpointer

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Entry",
    "LineError",
    "Outcome",
    "encode_header",
    "encode_thread",
    "parse_header",
    "parse_thread",
    "put",
]

FORMAT = "agents-persistence-export"
FORMAT_VERSION = 1

Outcome = Literal["written", "skipped", "expired"]
"""What `put` did with one thread: wrote it, found it already as new, or found it expired."""


class LineError(CheckpointerError):
    """A line of an export file cannot be read; nothing of it was written."""

    def __init__(self, number: int, reason: str) -> None:
        self.number = number
        self.reason = reason
        super().__init__(f"line {number}: {reason}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One thread read from an export line, fully validated and ready to restore."""

    info: CheckpointInfo
    state: BaseModel


def encode_header(namespace: str, source: str, exported_at: datetime) -> str:
    """The header line (without its newline)."""
    return json.dumps(
        {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "namespace": namespace,
            "source": source,
            "exported_at": exported_at.isoformat(),
        },
        ensure_ascii=False,
    )


def encode_thread(info: CheckpointInfo, state: BaseModel) -> str:
    """One thread's line (without its newline)."""
    meta = json.dumps(
        {
            "thread_id": info.thread_id,
            "version": info.version,
            "created_at": info.created_at.isoformat(),
            "updated_at": info.updated_at.isoformat(),
            "expires_at": None if info.expires_at is None else info.expires_at.isoformat(),
            "size": info.size,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    # The state is spliced in as the model's own JSON, so it is not decoded and encoded again.
    return f'{meta[:-1]},"state":{state.model_dump_json()}}}'


def _object(raw: bytes, number: int) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(number, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(number, f"not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(data, dict):
        raise LineError(number, f"expected a JSON object, found {type(data).__name__}")
    return data


def parse_header(raw: bytes) -> dict[str, Any]:
    """Check the first line of an export file and return it.

    Raises:
        LineError: It is not this format, or a newer version of it.
    """
    header = _object(raw, 1)
    if header.get("format") != FORMAT:
        raise LineError(1, f'not an agents-persistence export (no "format": "{FORMAT}" header)')
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise LineError(
            1, f"export format version {version!r} is not supported (this version reads 1)"
        )
    return header


def _timestamp(data: dict[str, Any], key: str, number: int, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise LineError(number, f'"{key}" must be an ISO 8601 timestamp, found {value!r:.60}')
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise LineError(number, f'"{key}" is not an ISO 8601 timestamp: {value!r:.60}') from exc
    if moment.tzinfo is None:
        raise LineError(number, f'"{key}" has no time zone: {value!r:.60}')
    return as_utc(moment)


def parse_thread(raw: bytes, number: int, state_type: type[BaseModel]) -> Entry:
    """Read and fully validate one thread line.

    Raises:
        LineError: Anything about the line is wrong; the message says what.
    """
    data = _object(raw, number)
    missing = [
        key
        for key in ("thread_id", "version", "created_at", "updated_at", "state")
        if key not in data
    ]
    if missing:
        raise LineError(number, f"missing {', '.join(repr(key) for key in missing)}")
    try:
        thread_id = validate_thread_id(data["thread_id"])
    except CheckpointerError as exc:
        raise LineError(number, str(exc)) from exc
    version = data["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise LineError(number, f'"version" must be an integer >= 1, found {version!r:.60}')
    created_at = _timestamp(data, "created_at", number)
    updated_at = _timestamp(data, "updated_at", number)
    expires_at = _timestamp(data, "expires_at", number, optional=True)
    if updated_at < created_at:
        raise LineError(number, '"updated_at" is before "created_at"')
    if not isinstance(data["state"], dict):
        raise LineError(
            number, f'"state" must be a JSON object, found {type(data["state"]).__name__}'
        )
    try:
        state = state_type.model_validate(data["state"])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "state"
        raise LineError(
            number, f'"state" is not a valid {state_type.__name__}: {where}: {first["msg"]}'
        ) from exc
    size = data.get("size", 0)
    info = CheckpointInfo(
        thread_id, version, created_at, updated_at, expires_at, size if isinstance(size, int) else 0
    )
    return Entry(info, state)


def put(target: Checkpointer[Any], entry: Entry, now: datetime) -> Outcome:
    """Write ``entry`` into ``target`` unless it already holds that version or a newer one.

    This is what makes a rerun safe: a thread already copied is skipped, one that is behind is
    overwritten with ``expected_version`` set to what was just read (so a concurrent writer is
    never clobbered: the write fails with `ConflictError` instead), and a missing one is created
    with ``expected_version=0``. Versions and timestamps are kept (``restore_checkpoint``).
    """
    info = entry.info
    if info.expires_at is not None and info.expires_at <= now:
        return "expired"
    current = target.load_checkpoint(info.thread_id)
    if current is not None and current.info.version >= info.version:
        return "skipped"
    expected = 0 if current is None else current.info.version
    target.restore_checkpoint(info.thread_id, entry.state, info, expected_version=expected)
    return "written"

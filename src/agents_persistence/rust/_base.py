"""What every reader of a Rust Deep Agents SDK layout shares: the record, the source, the URLs.

A source is read-only: it lists thread ids page by page (never the whole store in memory) and
loads one record at a time. Decoding is separate (`decode_record`), so a record whose JSON does
not decode is reported by thread id instead of ending a listing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Self
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from agents_persistence.errors import ConfigurationError, CorruptStateError
from agents_persistence.snapshot import AgentStateSnapshot

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime
    from types import TracebackType

__all__ = ["RUST_SCHEMES", "RustRecord", "RustSource", "decode_record", "query_options"]

RUST_SCHEMES = ("rust+postgresql", "rust+postgres", "rust+redis", "rust+rediss", "rust+dynamodb")
"""URL schemes of the Rust SDK's layouts (``rust+postgresql+psycopg`` also names PostgreSQL)."""


@dataclass(frozen=True, slots=True)
class RustRecord:
    """One thread as the Rust SDK stored it.

    Attributes:
        thread_id: The thread id, as stored.
        state_json: The state, the Rust ``AgentStateSnapshot`` serde JSON (undecoded).
        created_at: When the Rust side created it, if the layout records it (PostgreSQL).
        updated_at: When it was last saved, if the layout records it (PostgreSQL, DynamoDB).
        expires_at: When the Rust TTL ends it (Redis ``SETEX``, DynamoDB ``ttl``), or ``None``.
    """

    thread_id: str
    state_json: str
    created_at: datetime | None = None
    updated_at: datetime | None = None
    expires_at: datetime | None = None


def decode_record(record: RustRecord) -> AgentStateSnapshot:
    """The record's state as an `AgentStateSnapshot` (unknown fields kept).

    Raises:
        CorruptStateError: The JSON is not a Rust ``AgentStateSnapshot``; names the thread.
    """
    try:
        return AgentStateSnapshot.model_validate_json(record.state_json)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "state"
        detail = f"{exc.error_count()} validation error(s), first at {where}: {first['msg']}"
        raise CorruptStateError(record.thread_id, detail) from exc


def query_options(url: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query of a ``rust+...`` URL as a dict, refusing keys not in ``allowed``.

    Raises:
        ConfigurationError: An unknown or repeated key.
    """
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        raise ConfigurationError(
            f"unknown option(s) {', '.join(unknown)} in {urlsplit(url).scheme}:// URL;"
            f" known: {', '.join(allowed)}"
        )
    repeated = sorted(key for key, values in query.items() if len(values) > 1)
    if repeated:
        raise ConfigurationError(f"option(s) given twice in the URL: {', '.join(repeated)}")
    return {key: values[0] for key, values in query.items()}


class RustSource:
    """A read-only view of one Rust SDK store (one table, key namespace or DynamoDB table).

    Subclasses implement `iter_thread_ids` and `load`. Close it (or use ``with``) to release
    the connections it opened.
    """

    layout: str = ""
    """``postgresql``, ``redis`` or ``dynamodb``."""

    def describe(self) -> str:
        """Where the records are, in words (no password)."""
        raise NotImplementedError

    def iter_thread_ids(self, *, page_size: int = 500) -> Iterator[str]:
        """Every thread id the store names, fetched ``page_size`` at a time.

        May name a thread whose record is gone (a stale Redis set entry) or expired: `load`
        then returns ``None``.
        """
        raise NotImplementedError

    def load(self, thread_id: str) -> RustRecord | None:
        """The thread's record, or ``None`` if it is missing or past its Rust TTL."""
        raise NotImplementedError

    def iter_records(self, *, page_size: int = 500) -> Iterator[RustRecord]:
        """Every live record, loaded one at a time while the ids are listed page by page."""
        for thread_id in self.iter_thread_ids(page_size=page_size):
            record = self.load(thread_id)
            if record is not None:
                yield record

    def load_state(self, thread_id: str) -> AgentStateSnapshot | None:
        """The thread's decoded state, or ``None``.

        Raises:
            CorruptStateError: The stored JSON does not decode.
        """
        record = self.load(thread_id)
        return None if record is None else decode_record(record)

    def close(self) -> None:
        """Release the connections this source opened."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""Continuity with the Rust Deep Agents SDK: read its stores, copy them, adopt its table in place.

- `open_rust_source` opens a read-only view of a Rust SDK store from a URL:
  ``rust+postgresql://USER@HOST/DB?table=agent_checkpoints``,
  ``rust+redis://HOST:PORT/DB?namespace=agents``,
  ``rust+dynamodb://TABLE?region=...&endpoint=...``.
- `copy_from_rust` copies its threads into any checkpointer (``agents-persistence copy --from``).
- `adopt_rust_table` brings a Rust PostgreSQL table under the library's migrations without a
  copy, with the Rust service still writing (``agents-persistence db adopt-rust``).

See docs/from-rust.md.
"""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from agents_persistence._extras import missing_extra
from agents_persistence.errors import ConfigurationError

from ._adopt import (
    ADOPTED_REVISION,
    AdoptionRefusedError,
    AdoptionReport,
    adopt_rust_table,
    compatibility_index_names,
    rust_statements,
    verify_rust_writes,
)
from ._base import RUST_SCHEMES, RustRecord, RustSource, decode_record
from ._copy import CopyReport, Failure, copy_from_rust

__all__ = [
    "ADOPTED_REVISION",
    "RUST_SCHEMES",
    "AdoptionRefusedError",
    "AdoptionReport",
    "CopyReport",
    "Failure",
    "RustRecord",
    "RustSource",
    "adopt_rust_table",
    "compatibility_index_names",
    "copy_from_rust",
    "decode_record",
    "is_rust_url",
    "open_rust_source",
    "rust_statements",
    "verify_rust_writes",
]


def is_rust_url(url: object) -> bool:
    """Whether ``url`` names a Rust SDK store (its scheme starts with ``rust+``)."""
    return isinstance(url, str) and urlsplit(url).scheme.lower().startswith("rust+")


def open_rust_source(url: str, **options: Any) -> RustSource:
    """Open a read-only Rust SDK store from its URL; ``close()`` it when done.

    Args:
        url: ``rust+postgresql://...?table=&schema=``, ``rust+redis://...?namespace=``
            (``rust+rediss://`` for TLS) or ``rust+dynamodb://TABLE?region=&endpoint=``.
        **options: For DynamoDB, credentials (``aws_access_key_id`` ...); nothing else.

    Raises:
        ConfigurationError: Not a ``rust+`` URL, or malformed.
        MissingExtraError: The driver of that store is not installed.
    """
    if not is_rust_url(url):
        raise ConfigurationError(
            f"not a Rust SDK store URL: {url!r:.120} (expected rust+postgresql://,"
            " rust+redis:// or rust+dynamodb://)"
        )
    family = urlsplit(url).scheme.lower().removeprefix("rust+").split("+", 1)[0]
    known = {
        "postgresql": ("_postgresql", "PostgresRustSource", "postgres"),
        "postgres": ("_postgresql", "PostgresRustSource", "postgres"),
        "redis": ("_redis", "RedisRustSource", "redis"),
        "rediss": ("_redis", "RedisRustSource", "redis"),
        "dynamodb": ("_dynamodb", "DynamoDBRustSource", "dynamodb"),
    }
    if family not in known:
        raise ConfigurationError(
            f"unknown Rust SDK store scheme {urlsplit(url).scheme!r};"
            f" known: {', '.join(RUST_SCHEMES)}"
        )
    module_name, class_name, extra = known[family]
    if family != "dynamodb" and options:
        raise ConfigurationError(
            f"the Rust {family} source takes no options ({', '.join(sorted(options))})"
        )
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
        if extra == "redis":
            importlib.import_module("redis")
        elif extra == "dynamodb":
            importlib.import_module("pynamodb")
    except ImportError as exc:
        raise missing_extra(f"reading {urlsplit(url).scheme}://", extra, exc.name) from exc
    source: RustSource = getattr(module, class_name).from_url(url, **options)
    return source

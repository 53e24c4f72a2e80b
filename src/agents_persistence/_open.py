"""`open_checkpointer`: pick and open a store from a URL, importing its driver only when used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from agents_persistence._extras import missing_extra
from agents_persistence.errors import ConfigurationError

if TYPE_CHECKING:
    from agents_persistence.contract import AsyncCheckpointer, Checkpointer

__all__ = ["open_async_checkpointer", "open_checkpointer", "store_module"]

_SQL = "agents_persistence.repositories.sql"
_STORES: dict[str, tuple[str, str, str, str]] = {
    # scheme: (module, sync class, async class, extra that installs it)
    "memory": (
        "agents_persistence.repositories.memory",
        "MemoryCheckpointer",
        "AsyncMemoryCheckpointer",
        "",
    ),
    "sqlite": (_SQL, "SQLCheckpointer", "AsyncSQLCheckpointer", "sqlite"),
    "postgresql": (_SQL, "SQLCheckpointer", "AsyncSQLCheckpointer", "postgres"),
    "postgres": (_SQL, "SQLCheckpointer", "AsyncSQLCheckpointer", "postgres"),
    "mysql": (_SQL, "SQLCheckpointer", "AsyncSQLCheckpointer", "mysql"),
    "mariadb": (_SQL, "SQLCheckpointer", "AsyncSQLCheckpointer", "mysql"),
    "redis": (
        "agents_persistence.repositories.redis",
        "RedisCheckpointer",
        "AsyncRedisCheckpointer",
        "redis",
    ),
    "rediss": (
        "agents_persistence.repositories.redis",
        "RedisCheckpointer",
        "AsyncRedisCheckpointer",
        "redis",
    ),
    "redis+cluster": (
        "agents_persistence.repositories.redis",
        "RedisCheckpointer",
        "AsyncRedisCheckpointer",
        "redis",
    ),
    "rediss+cluster": (
        "agents_persistence.repositories.redis",
        "RedisCheckpointer",
        "AsyncRedisCheckpointer",
        "redis",
    ),
    "dynamodb": (
        "agents_persistence.repositories.dynamodb",
        "DynamoDBCheckpointer",
        "AsyncDynamoDBCheckpointer",
        "dynamodb",
    ),
}


def _scheme(url: object) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"not a store URL: {url!r:.120}")
    scheme = urlsplit(url).scheme.lower()
    if scheme in _STORES:
        return scheme
    base = scheme.split("+", 1)[0]  # sqlite+aiosqlite, postgresql+psycopg, mysql+pymysql ...
    if base in _STORES and base not in ("redis", "rediss"):
        return base
    known = ", ".join(f"{name}://" for name in sorted(_STORES))
    raise ConfigurationError(f"unknown store URL scheme {scheme!r}; known: {known}")


def store_module(url: str) -> tuple[Any, str, str]:
    """Import the module of the store a URL names; return it and its sync and async class names."""
    scheme = _scheme(url)
    module_name, sync_name, async_name, extra = _STORES[scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if not extra:
            raise
        # The store module names the extra it needs; the scheme may need a larger one.
        raise missing_extra(f"the store for {scheme}://", extra, exc.name) from exc
    return module, sync_name, async_name


def open_checkpointer(url: str, **options: Any) -> Checkpointer[Any]:
    """Open a synchronous checkpointer for ``url``; it owns its connections (``close()`` them).

    Schemes: ``memory://``, ``sqlite:///PATH``, ``postgresql+psycopg://...``,
    ``mysql+pymysql://...``, ``redis://``, ``rediss://``, ``redis+cluster://``,
    ``dynamodb://TABLE?region=...&endpoint=...``.

    Args:
        url: The store URL.
        **options: Passed to the store's ``from_url`` (``namespace``, ``ttl``, ``state_type``...).

    Raises:
        ConfigurationError: unknown scheme, or the store's extra is not installed.
    """
    module, sync_name, _ = store_module(url)
    return cast("Checkpointer[Any]", getattr(module, sync_name).from_url(url, **options))


def open_async_checkpointer(url: str, **options: Any) -> AsyncCheckpointer[Any]:
    """The asyncio twin of `open_checkpointer` (SQL URLs get their async driver)."""
    module, _, async_name = store_module(url)
    return cast("AsyncCheckpointer[Any]", getattr(module, async_name).from_url(url, **options))

"""`open_checkpointer`: pick and open a store from a URL, importing its driver only when used."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from agents_persistence._extras import missing_extra
from agents_persistence.errors import ConfigurationError

if TYPE_CHECKING:
    from datetime import timedelta

    from agents_persistence._core import Clock
    from agents_persistence._keys import KeyProvider
    from agents_persistence.contract import AsyncCheckpointer, Checkpointer, StateT
    from agents_persistence.upcasting import Upcasters

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
    if scheme.startswith("rust+"):
        raise ConfigurationError(
            f"{scheme}:// names a Rust Deep Agents SDK store, which is read only here: open it"
            " with agents_persistence.rust.open_rust_source() or copy it with"
            " `agents-persistence copy --from URL --to URL` (see docs/from-rust.md)"
        )
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


def _given(
    namespace: str | None,
    ttl: float | timedelta | None,
    state_type: type[StateT] | None,
    max_state_bytes: int | None,
    clock: Clock | None,
    keys: KeyProvider | None,
    upcasters: Upcasters | None,
) -> dict[str, Any]:
    """The common keywords that were given, for the store's ``from_url``."""
    given = {
        "namespace": namespace,
        "ttl": ttl,
        "state_type": state_type,
        "max_state_bytes": max_state_bytes,
        "clock": clock,
        "keys": keys,
        "upcasters": upcasters,
    }
    return {name: value for name, value in given.items() if value is not None}


def open_checkpointer(
    url: str,
    *,
    namespace: str | None = None,
    ttl: float | timedelta | None = None,
    state_type: type[StateT] | None = None,
    max_state_bytes: int | None = None,
    clock: Clock | None = None,
    keys: KeyProvider | None = None,
    upcasters: Upcasters | None = None,
    **store_options: Any,
) -> Checkpointer[StateT]:
    """Open a synchronous checkpointer for ``url``; it owns its connections (``close()`` them).

    Schemes: ``memory://``, ``sqlite:///PATH``, ``postgresql+psycopg://...``,
    ``mysql+pymysql://...``, ``redis://``, ``rediss://``, ``redis+cluster://``,
    ``dynamodb://TABLE?region=...&endpoint=...``.

    A keyword left at ``None`` is not passed on: the store's default applies, or the URL's
    value where the URL can carry it (``dynamodb://...?namespace=...&ttl=...``).

    Args:
        url: The store URL.
        namespace: Isolates this checkpointer's threads; ``"default"`` by default.
        ttl: Seconds (or a timedelta) each save lives; ``None`` keeps threads forever.
        state_type: The pydantic model stored; `AgentStateSnapshot` by default.
        max_state_bytes: Largest encoded state accepted (the store's default if ``None``).
        clock: Returns the current aware time (tests move it by hand).
        keys: A key provider (`agents_persistence.encryption`): saves are encrypted at rest
            under its active key; ``None`` stores them in clear (docs/security.md).
        upcasters: Upgrade functions for records written at an older schema version of
            ``state_type`` (`agents_persistence.upcasting`).
        **store_options: Keywords of the store's own ``from_url`` (``auto_migrate``,
            ``key_prefix``, ``region``...); a keyword that store does not take raises
            `TypeError` naming its class.

    Raises:
        ConfigurationError: unknown scheme, or an invalid option.
        MissingExtraError: the store's extra is not installed (names it).
    """
    module, sync_name, _ = store_module(url)
    checkpointer = getattr(module, sync_name).from_url(
        url,
        **_given(namespace, ttl, state_type, max_state_bytes, clock, keys, upcasters),
        **store_options,
    )
    return cast("Checkpointer[StateT]", checkpointer)


def open_async_checkpointer(
    url: str,
    *,
    namespace: str | None = None,
    ttl: float | timedelta | None = None,
    state_type: type[StateT] | None = None,
    max_state_bytes: int | None = None,
    clock: Clock | None = None,
    keys: KeyProvider | None = None,
    upcasters: Upcasters | None = None,
    **store_options: Any,
) -> AsyncCheckpointer[StateT]:
    """The asyncio twin of `open_checkpointer` (SQL URLs get their async driver)."""
    module, _, async_name = store_module(url)
    checkpointer = getattr(module, async_name).from_url(
        url,
        **_given(namespace, ttl, state_type, max_state_bytes, clock, keys, upcasters),
        **store_options,
    )
    return cast("AsyncCheckpointer[StateT]", checkpointer)

"""Opening the clients `from_url` owns: one server or a cluster, sync or asyncio.

Clients are typed ``Any`` here: the types-redis stubs that redis-om installs predate redis-py 5
and lack the asyncio cluster, ``aclose`` and more.

URL forms: ``redis://[user:password@]host[:port][/db][?option=value...]``, ``rediss://`` for
TLS, and ``redis+cluster://host:port`` / ``rediss+cluster://host:port`` for Redis Cluster (any
reachable node; the others are discovered). Query options are redis-py's own
(``ssl_cert_reqs``...), except the time budget's: ``call_timeout``, ``pool_timeout``,
``socket_timeout`` and ``socket_connect_timeout`` are read here (see `budget`); keyword
options are listed in `open_client`.

The time budget: one call waits at most ``pool_timeout`` for a pooled connection, then
connects (``socket_connect_timeout``) and waits for each reply (``socket_timeout``). Their sum
is at most ``call_timeout``, so the first attempt always fits; the retry policy starts another
attempt only while the rest of the budget covers its backoff, a reconnection and a reply.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import EqualJitterBackoff

from agents_persistence.errors import DEFAULT_CALL_TIMEOUT, ConfigurationError
from agents_persistence.repositories._call_budget import share, validate_call_timeout
from agents_persistence.repositories._redis_errors import AsyncRetryOutages, RetryOutages
from agents_persistence.telemetry import note_retry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["DEFAULTS", "TIMEOUT_SHARES", "Budget", "budget", "open_async_client", "open_client"]

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEMES = ("redis", "rediss", *_CLUSTER_SCHEMES)

DEFAULTS: dict[str, Any] = {"max_connections": 50, "retries": 3}
"""Connection defaults of `from_url` besides the timeouts; every one can be overridden."""

TIMEOUT_SHARES = {"pool_timeout": 0.4, "socket_connect_timeout": 0.2, "socket_timeout": 0.4}
"""How ``call_timeout`` is shared among the timeouts not given (5 s: 2 s, 1 s and 2 s)."""

_URL_BUDGET = (*TIMEOUT_SHARES, "call_timeout")
"""Query options read by the store, not by redis-py (``timeout`` is redis-py's pool_timeout)."""

_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 0.5


@dataclass(frozen=True, slots=True)
class Budget:
    """The time budget of one call and the per-attempt timeouts derived from it.

    Attributes:
        call_timeout: Seconds one public call may take, waits and retries included.
        pool_timeout: Seconds a round trip waits for a free pooled connection.
        socket_connect_timeout: Seconds a connection attempt (with its handshake) waits.
        socket_timeout: Seconds a command waits for its reply.
    """

    call_timeout: float
    pool_timeout: float
    socket_connect_timeout: float
    socket_timeout: float

    @property
    def retry_seconds(self) -> float:
        """The worst case of one retry: its backoff, a reconnection and a reply."""
        return _BACKOFF_CAP + self.socket_connect_timeout + self.socket_timeout


def budget(call_timeout: float | None, timeouts: dict[str, float | None]) -> Budget:
    """The `Budget` of ``call_timeout`` (default `DEFAULT_CALL_TIMEOUT`) and the timeouts given.

    Timeouts left at ``None`` share what the given ones leave of ``call_timeout`` in the
    proportions of `TIMEOUT_SHARES`.

    Raises:
        ConfigurationError: a value is not a positive number, or the given timeouts add up to
            more than ``call_timeout``.
    """
    seconds = validate_call_timeout(DEFAULT_CALL_TIMEOUT if call_timeout is None else call_timeout)
    shared = share(seconds, {name: timeouts.get(name) for name in TIMEOUT_SHARES}, TIMEOUT_SHARES)
    return Budget(seconds, **shared)


class _ClusterOnDemand:
    """A sync `RedisCluster` built on first use.

    Its constructor connects to discover the cluster; building it lazily lets ``from_url``
    succeed while the cluster is down, like every other store, and fail per call instead.
    """

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._cluster: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # never recurse on our own attributes (copy, pickle)
            raise AttributeError(name)
        cluster = self._cluster
        if cluster is None:
            with self._lock:
                if self._cluster is None:
                    self._cluster = self._build()
                cluster = self._cluster
        return getattr(cluster, name)

    def close(self) -> None:
        """Close the cluster client if it was ever built."""
        with self._lock:
            if self._cluster is not None:
                self._cluster.close()


def _budget_options(query: str) -> tuple[str, dict[str, float]]:
    """The query without the time budget's options, and those options as numbers."""
    kept: list[tuple[str, str]] = []
    found: dict[str, float] = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        name = "pool_timeout" if key == "timeout" else key
        if name not in _URL_BUDGET:
            kept.append((key, raw))
            continue
        try:
            found[name] = float(raw)
        except ValueError as exc:
            raise ConfigurationError(f"Redis URL option {key}={raw!r} is not a number") from exc
    return urlencode(kept), found


def _split(url: object) -> tuple[str, bool, dict[str, float]]:
    """The URL redis-py understands, whether it names a cluster, and its budget options."""
    if not isinstance(url, str):
        raise ConfigurationError(f"not a Redis URL: {url!r:.120}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ConfigurationError(f"not a Redis URL: {url!r:.120} (use {known})")
    query, timing = _budget_options(parts.query)
    if timing:
        parts = parts._replace(query=query)
        url = urlunsplit(parts)
    if scheme not in _CLUSTER_SCHEMES:
        return url, False, timing
    if parts.path not in ("", "/", "/0"):
        raise ConfigurationError(f"Redis Cluster has only database 0, not {parts.path!r}")
    return urlunsplit(parts._replace(scheme=_CLUSTER_SCHEMES[scheme], path="")), True, timing


def _settings(
    options: dict[str, Any], timing: dict[str, float]
) -> tuple[dict[str, Any], int, int, Budget]:
    """redis-py's keywords, the pool size, the retries and the budget (keywords over the URL)."""
    settings = {**DEFAULTS, **options}
    given = {name: settings.pop(name, None) for name in _URL_BUDGET}
    chosen = {name: timing.get(name) if value is None else value for name, value in given.items()}
    call_timeout = chosen.pop("call_timeout")
    limits = budget(call_timeout, chosen)
    settings["socket_timeout"] = limits.socket_timeout
    settings["socket_connect_timeout"] = limits.socket_connect_timeout
    max_connections = settings.pop("max_connections")
    retries = settings.pop("retries")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError(f"retries must be an int >= 0, got {retries!r}")
    return settings, max_connections, retries, limits


class _Backoff(EqualJitterBackoff):
    """redis-py's jittered backoff; redis-py asks it for a delay only before a retry, so it logs."""

    def compute(self, failures: int) -> float:
        note_retry("redis", "connection error or timeout", failures, level=logging.WARNING)
        return super().compute(failures)


def _backoff() -> EqualJitterBackoff:
    return _Backoff(cap=_BACKOFF_CAP, base=_BACKOFF_BASE)


def open_client(url: str, options: dict[str, Any]) -> tuple[Any, Callable[[], None], Budget]:
    """Open a synchronous client for ``url``; return it, the function that closes it, its budget.

    Args:
        url: A ``redis://``, ``rediss://``, ``redis+cluster://`` or ``rediss+cluster://`` URL.
        options: ``call_timeout`` (seconds one call may take, retries included),
            ``max_connections`` (pool size, per node on a cluster), ``pool_timeout`` (seconds a
            call waits for a free pooled connection), ``socket_timeout``,
            ``socket_connect_timeout`` (timeouts left at ``None`` are derived from
            ``call_timeout``, see `budget`), ``retries`` (most reconnection attempts, with
            exponential backoff, 50 ms doubling up to 0.5 s, each only while it fits in the
            budget) and any other redis-py client keyword.

    Nothing connects before the first call.
    """
    target, cluster, timing = _split(url)
    settings, max_connections, retries, limits = _settings(options, timing)
    retry = RetryOutages(_backoff(), retries, retry_seconds=limits.retry_seconds)
    if cluster:
        node = _ClusterOnDemand(
            lambda: redis.cluster.RedisCluster.from_url(
                target, max_connections=max_connections, retry=retry, **settings
            )
        )
        return node, node.close, limits
    pool: Any = redis.BlockingConnectionPool.from_url(
        target,
        max_connections=max_connections,
        timeout=limits.pool_timeout,
        retry=retry,
        **settings,
    )
    client: Any = redis.Redis(connection_pool=pool)

    def close() -> None:
        client.close()
        pool.disconnect()

    return client, close, limits


def open_async_client(
    url: str, options: dict[str, Any]
) -> tuple[Any, Callable[[], Awaitable[None]], Budget]:
    """The asyncio twin of `open_client` (a cluster is discovered on first use)."""
    target, cluster, timing = _split(url)
    settings, max_connections, retries, limits = _settings(options, timing)
    retry = AsyncRetryOutages(_backoff(), retries, retry_seconds=limits.retry_seconds)
    if cluster:
        cluster_class: Any = redis.asyncio.cluster.RedisCluster
        node = cluster_class.from_url(
            target, max_connections=max_connections, retry=retry, **settings
        )
        return node, node.aclose, limits
    pool: Any = redis.asyncio.BlockingConnectionPool.from_url(
        target,
        max_connections=max_connections,
        timeout=limits.pool_timeout,
        retry=retry,
        **settings,
    )
    client: Any = redis.asyncio.Redis(connection_pool=pool)

    async def close() -> None:
        await client.aclose()
        await pool.aclose()

    return client, close, limits

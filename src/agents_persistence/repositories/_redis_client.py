"""Opening the clients `from_url` owns: one server or a cluster, sync or asyncio.

Clients are typed ``Any`` here: the types-redis stubs that redis-om installs predate redis-py 5
and lack the asyncio cluster, ``aclose`` and more.

URL forms: ``redis://[user:password@]host[:port][/db][?option=value...]``, ``rediss://`` for
TLS, and ``redis+cluster://host:port`` / ``rediss+cluster://host:port`` for Redis Cluster (any
reachable node; the others are discovered). Query options are redis-py's own
(``socket_timeout``, ``ssl_cert_reqs``...); keyword options are listed in `open_client`.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.backoff import EqualJitterBackoff

from agents_persistence.errors import ConfigurationError
from agents_persistence.repositories._redis_errors import AsyncRetryOutages, RetryOutages
from agents_persistence.telemetry import note_retry

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["DEFAULTS", "open_async_client", "open_client"]

_CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
_SCHEMES = ("redis", "rediss", *_CLUSTER_SCHEMES)

DEFAULTS: dict[str, Any] = {
    "max_connections": 50,
    "pool_timeout": 5.0,
    "socket_timeout": 5.0,
    "socket_connect_timeout": 2.0,
    "retries": 3,
}
"""Connection defaults of `from_url`; every one can be overridden by keyword."""

_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 0.5


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


def _split(url: object) -> tuple[str, bool]:
    """The URL redis-py understands, and whether it names a cluster."""
    if not isinstance(url, str):
        raise ConfigurationError(f"not a Redis URL: {url!r:.120}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise ConfigurationError(f"not a Redis URL: {url!r:.120} (use {known})")
    if scheme not in _CLUSTER_SCHEMES:
        return url, False
    if parts.path not in ("", "/", "/0"):
        raise ConfigurationError(f"Redis Cluster has only database 0, not {parts.path!r}")
    return urlunsplit(parts._replace(scheme=_CLUSTER_SCHEMES[scheme], path="")), True


def _settings(options: dict[str, Any]) -> tuple[dict[str, Any], int, float, int]:
    settings = {**DEFAULTS, **options}
    max_connections = settings.pop("max_connections")
    pool_timeout = settings.pop("pool_timeout")
    retries = settings.pop("retries")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigurationError(f"retries must be an int >= 0, got {retries!r}")
    return settings, max_connections, pool_timeout, retries


class _Backoff(EqualJitterBackoff):
    """redis-py's jittered backoff; redis-py asks it for a delay only before a retry, so it logs."""

    def compute(self, failures: int) -> float:
        note_retry("redis", "connection error or timeout", failures, level=logging.WARNING)
        return super().compute(failures)


def _backoff() -> EqualJitterBackoff:
    return _Backoff(cap=_BACKOFF_CAP, base=_BACKOFF_BASE)


def open_client(url: str, options: dict[str, Any]) -> tuple[Any, Callable[[], None]]:
    """Open a synchronous client for ``url``; return it and the function that closes it.

    Args:
        url: A ``redis://``, ``rediss://``, ``redis+cluster://`` or ``rediss+cluster://`` URL.
        options: ``max_connections`` (pool size, per node on a cluster), ``pool_timeout``
            (seconds a call waits for a free pooled connection), ``socket_timeout``,
            ``socket_connect_timeout``, ``retries`` (reconnection attempts with exponential
            backoff, 50 ms doubling up to 0.5 s) and any other redis-py client keyword.

    Nothing connects before the first call.
    """
    target, cluster = _split(url)
    settings, max_connections, pool_timeout, retries = _settings(options)
    retry = RetryOutages(_backoff(), retries)
    if cluster:
        node = _ClusterOnDemand(
            lambda: redis.cluster.RedisCluster.from_url(
                target, max_connections=max_connections, retry=retry, **settings
            )
        )
        return node, node.close
    pool: Any = redis.BlockingConnectionPool.from_url(
        target, max_connections=max_connections, timeout=pool_timeout, retry=retry, **settings
    )
    client: Any = redis.Redis(connection_pool=pool)

    def close() -> None:
        client.close()
        pool.disconnect()

    return client, close


def open_async_client(
    url: str, options: dict[str, Any]
) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """The asyncio twin of `open_client` (a cluster is discovered on first use)."""
    target, cluster = _split(url)
    settings, max_connections, pool_timeout, retries = _settings(options)
    retry = AsyncRetryOutages(_backoff(), retries)
    if cluster:
        cluster_class: Any = redis.asyncio.cluster.RedisCluster
        node = cluster_class.from_url(
            target, max_connections=max_connections, retry=retry, **settings
        )
        return node, node.aclose
    pool: Any = redis.asyncio.BlockingConnectionPool.from_url(
        target, max_connections=max_connections, timeout=pool_timeout, retry=retry, **settings
    )
    client: Any = redis.asyncio.Redis(connection_pool=pool)

    async def close() -> None:
        await client.aclose()
        await pool.aclose()

    return client, close

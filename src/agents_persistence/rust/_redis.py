"""The Rust SDK's Redis layout, read only.

The Rust checkpointer keeps each state as a plain string key ``<namespace>:thread:<id>``
(``SET``, or ``SETEX`` with a TTL in whole seconds) and names the thread in the set
``<namespace>:threads``, which never expires: it can name threads whose key is gone. The set is
walked with ``SSCAN`` (pages, never the whole set at once); a named key that is gone is skipped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from agents_persistence._core import utc_now
from agents_persistence.errors import ConfigurationError, CorruptStateError
from agents_persistence.repositories._redis_errors import translate_errors

from ._base import RustRecord, RustSource, query_options

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DEFAULT_RUST_NAMESPACE", "RedisRustSource"]

DEFAULT_RUST_NAMESPACE = "agents"
"""The Rust Redis checkpointer's default namespace (key prefix)."""

SOCKET_TIMEOUT = 10.0
"""Seconds a connection attempt or a reply may take before the server counts as unavailable."""


def _namespace(value: object) -> str:
    if not isinstance(value, str) or not value or not value.isprintable() or " " in value:
        raise ConfigurationError(
            f"invalid Rust Redis namespace {value!r:.80}: a non-empty key prefix without spaces"
            " or control characters"
        )
    return value


class RedisRustSource(RustSource):
    """The keys of one Rust Redis namespace, read only.

    Args:
        client: A redis-py client (left open) with ``decode_responses=False``.
        namespace: The Rust namespace, ``agents`` by default.
    """

    layout = "redis"

    def __init__(self, client: Any, *, namespace: str = DEFAULT_RUST_NAMESPACE) -> None:
        self.client = client
        self.namespace = _namespace(namespace)
        self.index_key = f"{self.namespace}:threads"
        self._owns_client = False

    def key(self, thread_id: str) -> str:
        """The string key holding ``thread_id``'s state."""
        return f"{self.namespace}:thread:{thread_id}"

    @classmethod
    def from_url(cls, url: str) -> RedisRustSource:
        """Open ``rust+redis://HOST:PORT/DB?namespace=agents`` (or ``rust+rediss://``).

        Raises:
            ConfigurationError: A malformed URL or namespace.
        """
        import redis

        parts = urlsplit(url)
        scheme = parts.scheme.lower().removeprefix("rust+")
        if scheme not in ("redis", "rediss"):
            raise ConfigurationError(f"not a rust+redis:// URL: {parts.scheme}://")
        options = query_options(url, ("namespace",))
        plain = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
        try:
            client = redis.Redis.from_url(
                plain, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
            )
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL: {exc}") from exc
        try:
            source = cls(client, namespace=options.get("namespace") or DEFAULT_RUST_NAMESPACE)
        except BaseException:
            client.close()
            raise
        source._owns_client = True
        return source

    def describe(self) -> str:
        kwargs = self.client.connection_pool.connection_kwargs
        where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
        return f"Rust Redis namespace {self.namespace!r} at {where} db {kwargs.get('db', 0)}"

    def iter_thread_ids(self, *, page_size: int = 500) -> Iterator[str]:
        cursor: int = 0
        while True:
            with translate_errors():
                cursor, members = self.client.sscan(self.index_key, cursor, count=page_size)
            for member in members:
                text = member.decode("utf-8", "surrogateescape")
                yield text
            if cursor == 0:
                return

    def load(self, thread_id: str) -> RustRecord | None:
        key = self.key(thread_id).encode("utf-8", "surrogateescape")
        with translate_errors():
            pipe = self.client.pipeline(transaction=True)
            pipe.get(key)
            pipe.pttl(key)
            raw, remaining = pipe.execute()
        if raw is None:
            return None  # expired or deleted; the set still names it
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptStateError(thread_id, f"the key's value is not UTF-8: {exc}") from exc
        expires_at = None
        if isinstance(remaining, int) and remaining > 0:
            expires_at = utc_now() + timedelta(milliseconds=remaining)
        return RustRecord(thread_id, text, expires_at=expires_at)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

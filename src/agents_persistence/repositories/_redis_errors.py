"""Error translation of the Redis store: the one place redis-py errors become ours.

Also the retry policy of the clients `from_url` opens: redis-py's `Retry`, except that it never
retries refused credentials (redis-py derives its ``AuthenticationError`` from its
``ConnectionError``, which ``Retry`` retries with backoff like an outage), and that it starts a
retry only while the call's time budget covers it (see `_call_budget`).

A timeout past which a call gives up is `CallTimeoutError` (a `BackendUnavailableError` and a
`TimeoutError`): a reply that did not come within ``socket_timeout``, a connection attempt past
``socket_connect_timeout``, or the asyncio twin's bound on the whole call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

import redis.asyncio.retry
import redis.retry
from redis import exceptions as redis_errors

from agents_persistence.errors import (
    AccessDeniedError,
    AuthenticationError,
    BackendUnavailableError,
    CallTimeoutError,
    CheckpointerError,
    DatabaseNotFoundError,
)
from agents_persistence.repositories._call_budget import fits

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractContextManager

__all__ = ["AsyncRetryOutages", "RetryOutages", "translate_errors", "translated"]

T = TypeVar("T")

# Credentials refused: WRONGPASS, NOAUTH, AUTH without a configured password (RESP2), AUTH
# with a user name on a server older than Redis 6.
_REFUSED_CREDENTIALS = (
    redis_errors.AuthenticationError,
    redis_errors.AuthenticationWrongNumberOfArgsError,
)
# Known credentials without the right: an ACL without the command or key (NOPERM), an OCSP
# responder refusing the certificate.
_DENIED = (redis_errors.NoPermissionError, redis_errors.AuthorizationError)
_NOT_RETRIED = _REFUSED_CREDENTIALS + _DENIED
_TIMEOUTS = (redis_errors.TimeoutError, TimeoutError)
_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ClusterError,
    redis_errors.TryAgainError,
    redis_errors.SlotNotCoveredError,
    TimeoutError,
    OSError,
)
# Redis gives no code beyond "ERR" for these two: SELECT of a database number the server does
# not have, and a long command on a connection that has not authenticated (Redis answers
# "Protocol error: unauthenticated multibulk length" instead of NOAUTH, and hangs up).
_NO_DATABASE = "DB index is out of range"
_UNAUTHENTICATED = "Protocol error: unauthenticated"


def translated(exc: BaseException) -> CheckpointerError | None:
    """The library's error for a redis-py error (``None`` for anything else).

    Refused credentials and missing rights come first: redis-py derives its authentication
    errors from its ``ConnectionError``, and they must not read as an outage.
    """
    if isinstance(exc, CheckpointerError):
        return None
    if isinstance(exc, redis_errors.RedisClusterException):
        # redis-py raises this one both for unreachable clusters (chaining the connection
        # error) and for misuse; the chained cause says which.
        cause = exc.__cause__
        if isinstance(cause, _NOT_RETRIED):
            return translated(cause)
        if isinstance(cause, redis_errors.ConnectionError | redis_errors.TimeoutError):
            return BackendUnavailableError(f"Redis Cluster is unavailable: {exc}")
        return CheckpointerError(f"Redis Cluster error: {exc}")
    if isinstance(exc, _REFUSED_CREDENTIALS):
        return AuthenticationError(f"Redis refused the credentials: {exc}")
    if isinstance(exc, redis_errors.ResponseError) and _UNAUTHENTICATED in str(exc):
        return AuthenticationError(f"Redis requires a password: {exc}")
    if isinstance(exc, _DENIED):
        return AccessDeniedError(f"Redis denied access: {exc}")
    if isinstance(exc, redis_errors.ResponseError) and _NO_DATABASE in str(exc):
        return DatabaseNotFoundError(
            f"unknown Redis database: {exc} (the server has as many as its `databases` setting"
            " says, 16 by default: 0 to 15)"
        )
    if isinstance(exc, _TIMEOUTS):
        return CallTimeoutError(f"Redis did not answer in time (call_timeout): {exc}")
    if isinstance(exc, _UNAVAILABLE):
        return BackendUnavailableError(f"Redis is unavailable: {exc}")
    if isinstance(exc, redis_errors.RedisError):
        return CheckpointerError(f"Redis error: {exc}")
    return None


class _TranslateErrors:
    """The context manager `translate_errors` returns (a class: cheaper than a generator)."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, traceback: object) -> None:
        if exc is None:
            return
        ours = translated(exc)
        if ours is not None:
            raise ours from exc


_TRANSLATE_ERRORS = _TranslateErrors()


def translate_errors() -> AbstractContextManager[None]:
    """Turn redis-py errors into the library's, keeping the cause chained.

    Raises:
        AuthenticationError: the server refused the credentials (wrong password, unknown user,
            a password missing on a server that requires one).
        AccessDeniedError: the user's ACL lacks a command or key the store needs.
        DatabaseNotFoundError: the URL's database number is beyond the server's databases.
        CallTimeoutError: the server did not answer in time (a `BackendUnavailableError`).
        BackendUnavailableError: the server refused the connection, is loading, or the
            cluster cannot serve the slot.
        CheckpointerError: any other Redis error (a script error, a foreign key type...).
    """
    return _TRANSLATE_ERRORS


def _final(error: Exception, retry_seconds: float) -> bool:
    """Whether ``error`` ends the call: refused credentials, or no room left for a retry."""
    return isinstance(error, _NOT_RETRIED) or not fits(retry_seconds)


class RetryOutages(redis.retry.Retry):
    """redis-py's `Retry`, within the call's budget, never retrying refused credentials.

    Args:
        backoff: The delay before each retry.
        retries: The most retries of one command (or connection attempt).
        retry_seconds: A retry's worst case (backoff, reconnection and reply): a retry starts
            only while the current call's budget has that much left, so a command that timed
            out on a hung server is not retried when a second wait would overrun the budget.
    """

    def __init__(self, backoff: Any, retries: int, *, retry_seconds: float = 0.0) -> None:
        super().__init__(backoff, retries)
        self.retry_seconds = retry_seconds

    def call_with_retry(
        self, do: Callable[[], T], fail: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> T:
        """Call ``do``, retrying outages while the budget allows; credentials errors at once."""

        def fail_then_stop(error: Exception, *more: Any) -> None:
            fail(error, *more)  # the caller's clean-up (disconnect) runs as for any failure
            if _final(error, self.retry_seconds):
                raise error

        return super().call_with_retry(do, fail_then_stop, *args, **kwargs)


class AsyncRetryOutages(redis.asyncio.retry.Retry):
    """The asyncio twin of `RetryOutages`."""

    def __init__(self, backoff: Any, retries: int, *, retry_seconds: float = 0.0) -> None:
        super().__init__(backoff, retries)
        self.retry_seconds = retry_seconds

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> T:
        """Await ``do``, retrying outages while the budget allows; credentials errors at once."""

        async def fail_then_stop(error: Exception, *more: Any) -> None:
            await fail(error, *more)
            if _final(error, self.retry_seconds):
                raise error

        return await super().call_with_retry(do, fail_then_stop, *args, **kwargs)

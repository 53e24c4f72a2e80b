"""The time budget of one public call (``call_timeout``), shared by the Redis and DynamoDB stores.

A store opens a `deadline` around each public call. The drivers' retry hooks (redis-py's
`Retry`, botocore's ``needs-retry`` event) and the stores' own loops of round trips ask it
whether one more attempt still fits: an attempt starts only while what is left of the budget
covers its worst case (its connect and socket timeouts, plus the backoff before it). The
per-attempt timeouts themselves are derived from ``call_timeout`` so that the first attempt
always fits; together, one call ends within ``call_timeout`` plus the scheduling slack of the
machine, retries included.

The deadline lives in a context variable: one per thread for the sync twins, one per task for
the asyncio twins (and copied into the DynamoDB twin's worker threads with the caller's
context).
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar, Token

from agents_persistence.errors import (
    DEFAULT_CALL_TIMEOUT,
    CallTimeoutError,
    ConfigurationError,
)

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "deadline",
    "fits",
    "remaining",
    "require",
    "share",
    "validate_call_timeout",
]

_DEADLINE: ContextVar[float | None] = ContextVar("agents_persistence_deadline", default=None)
_HARD: ContextVar[bool] = ContextVar("agents_persistence_hard_deadline", default=False)
"""Whether the caller is cut off at the deadline anyway (an asyncio twin's `asyncio.timeout`)."""


def validate_call_timeout(value: object) -> float:
    """Return ``value`` as seconds if it is a positive finite number (``call_timeout``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not value > 0
    ):
        raise ConfigurationError(
            f"call_timeout must be a positive number of seconds, got {value!r}"
        )
    return float(value)


def share(
    call_timeout: float,
    given: dict[str, float | None],
    weights: dict[str, float],
    *,
    spare: float = 0.0,
) -> dict[str, float]:
    """Per-attempt timeouts that add up to at most ``call_timeout``.

    Args:
        call_timeout: The budget of one call.
        given: Each timeout by name; ``None`` where the caller left it to be derived.
        weights: Each timeout's share of the budget when none is given.
        spare: The share kept free of any timeout (room for retries and further requests).

    Returns:
        Every timeout: the given ones as given, the others sharing what the given ones leave,
        in proportion to their weights.

    Raises:
        ConfigurationError: a timeout is not a positive number, or the given ones leave no
            room for the others (or exceed the budget): the first attempt must fit in it.
    """
    fixed: dict[str, float] = {}
    for name, value in given.items():
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
        fixed[name] = float(value)
    left = call_timeout - sum(fixed.values())
    derived = [name for name in given if name not in fixed]
    names = " + ".join(given)
    if left < -1e-9 or (derived and left <= 0):
        raise ConfigurationError(
            f"{names} must fit in call_timeout={call_timeout:g} s (one attempt's worst case"
            " may not exceed the budget of the whole call): lower them or raise call_timeout"
        )
    total_weight = sum(weights[name] for name in derived) + spare
    return {
        name: fixed[name] if name in fixed else left * weights[name] / total_weight
        for name in given
    }


class _Deadline:
    """The context manager `deadline` returns (a class: cheaper than a generator)."""

    __slots__ = ("_hard", "_hard_token", "_seconds", "_token")

    def __init__(self, seconds: float | None, hard: bool) -> None:
        self._seconds = seconds
        self._hard = hard
        self._token: Token[float | None] | None = None
        self._hard_token: Token[bool] | None = None

    def __enter__(self) -> None:
        if self._seconds is None:
            return
        at = time.monotonic() + self._seconds
        outer = _DEADLINE.get()
        self._token = _DEADLINE.set(at if outer is None else min(at, outer))
        if self._hard:
            self._hard_token = _HARD.set(True)

    def __exit__(self, *exc: object) -> None:
        if self._hard_token is not None:
            _HARD.reset(self._hard_token)
            self._hard_token = None
        if self._token is not None:
            _DEADLINE.reset(self._token)
            self._token = None


def deadline(seconds: float | None, *, hard: bool = False) -> _Deadline:
    """Bound the calls inside the block to ``seconds`` from now (``None``: no bound).

    An enclosing deadline that ends sooner stays in force. Not reentrant: make one per call.

    Args:
        seconds: The budget.
        hard: The caller is cut off at the deadline anyway (`asyncio.timeout`): `require` then
            lets a request start as long as the deadline has not passed, instead of only
            when its worst case fits, since the caller never waits past the deadline.
    """
    return _Deadline(seconds, hard)


def remaining() -> float | None:
    """Seconds left in the current call's budget (may be negative); ``None`` outside one."""
    at = _DEADLINE.get()
    return None if at is None else at - time.monotonic()


def fits(seconds: float) -> bool:
    """Whether an attempt that may take ``seconds`` ends within the current budget."""
    left = remaining()
    return left is None or left >= seconds


def require(seconds: float, what: str) -> None:
    """Raise `CallTimeoutError` unless an attempt of ``seconds`` still fits in the budget.

    Under a ``hard`` deadline, only once the deadline has passed.

    Args:
        seconds: The attempt's worst case.
        what: The attempt, for the message ("a request to DynamoDB").
    """
    left = remaining()
    if left is not None and left < (0.0 if _HARD.get() else seconds):
        raise CallTimeoutError(
            f"call_timeout reached: {max(left, 0.0):.3g} s left, too little for {what}"
            f" (up to {seconds:.3g} s)"
        )

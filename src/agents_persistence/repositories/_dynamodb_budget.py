"""The DynamoDB store's time budget: timeouts derived from ``call_timeout``, retries within it.

botocore bounds one attempt of a request by ``connect_timeout`` plus ``read_timeout`` and makes
up to ``1 + max_retries`` attempts with a jittered exponential backoff between them; one call
of the store may send several requests (a save that lost a race reads and writes again, a
listing queries each index shard). Unbounded, those multiply: ``(1 + max_retries) x
(connect_timeout + read_timeout)`` plus the backoff, per request.

Here, two hooks on the client's public event system keep the whole call within its budget
(`agents_persistence.repositories._call_budget`):

- ``before-call``: a request starts only while the budget left covers one attempt
  (``connect_timeout + read_timeout``); otherwise the call raises `CallTimeoutError`.
- ``needs-retry``: a retry starts only while the budget left covers its longest backoff and
  one more attempt; otherwise the error at hand ends the call (a timeout becomes
  `CallTimeoutError`, a throttled or failing service `BackendUnavailableError`).

The timeouts are derived so that one attempt always fits: ``connect_timeout + read_timeout <=
call_timeout``, with 20 % and 40 % of it by default (1 s and 2 s of the default 5 s), leaving
room for a quick retry or a second request. A request whose reply does not come within
``read_timeout`` is then not retried: a second wait would overrun the budget.
"""

from __future__ import annotations

from typing import Any

from agents_persistence.errors import DEFAULT_CALL_TIMEOUT, BackendUnavailableError
from agents_persistence.repositories._call_budget import (
    fits,
    require,
    share,
    validate_call_timeout,
)

__all__ = ["TIMEOUT_SHARES", "BudgetHooks", "derive_timeouts"]

TIMEOUT_SHARES = {"connect_timeout": 0.2, "read_timeout": 0.4}
"""Each timeout's share of ``call_timeout`` when not given; the rest is room for retries."""
_SPARE = 0.4
_MAX_BACKOFF = 20.0
"""botocore's cap on one backoff delay."""
_RETRIED_CODES = frozenset(
    {
        "InternalFailure",
        "InternalServerError",
        "LimitExceededException",
        "PriorRequestNotComplete",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "Throttling",
        "ThrottlingException",
        "TransactionInProgressException",
    }
)
"""Service error codes botocore's standard retry mode retries (besides any 5xx status)."""


def derive_timeouts(
    call_timeout: float | None, connect_timeout: float | None, read_timeout: float | None
) -> tuple[float, float, float]:
    """``call_timeout`` (default 5 s), ``connect_timeout`` and ``read_timeout`` in seconds.

    Timeouts left at ``None`` are shares of ``call_timeout`` (`TIMEOUT_SHARES`) of what the
    given one leaves.

    Raises:
        ConfigurationError: a value is not a positive number, or the given timeouts add up to
            more than ``call_timeout`` (one attempt must fit in the budget of a whole call).
    """
    budget = validate_call_timeout(DEFAULT_CALL_TIMEOUT if call_timeout is None else call_timeout)
    shared = share(
        budget,
        {"connect_timeout": connect_timeout, "read_timeout": read_timeout},
        TIMEOUT_SHARES,
        spare=_SPARE,
    )
    return budget, shared["connect_timeout"], shared["read_timeout"]


def _retried_response(response: object) -> str:
    """The reason botocore would retry this response (an error code or status), or ``""``."""
    if not isinstance(response, tuple) or len(response) != 2:
        return ""
    http, parsed = response
    status = getattr(http, "status_code", 0)
    error = parsed.get("Error") if isinstance(parsed, dict) else None
    code = str(error.get("Code") or "") if isinstance(error, dict) else ""
    if code in _RETRIED_CODES:
        return code
    if isinstance(status, int) and status >= 500:
        return code or f"HTTP {status}"
    return ""


class BudgetHooks:
    """The two event handlers that keep a botocore client's requests within the call budget.

    Args:
        attempt_seconds: One attempt's worst case, ``connect_timeout + read_timeout``.
        max_attempts: botocore's attempts per request, ``1 + max_retries``.
    """

    def __init__(self, attempt_seconds: float, max_attempts: int) -> None:
        self.attempt_seconds = attempt_seconds
        self.max_attempts = max_attempts
        self._hooked: object = None

    def install(self, client: Any) -> None:
        """Register the handlers on ``client`` (once per client; a new client gets them too)."""
        if client is self._hooked:
            return
        events = client.meta.events
        events.register_first(
            "before-call.dynamodb", self.before_call, unique_id="agents-persistence-budget-call"
        )
        events.register_first(
            "needs-retry.dynamodb", self.needs_retry, unique_id="agents-persistence-budget-retry"
        )
        self._hooked = client

    def before_call(self, **_: Any) -> None:
        """Refuse to start a request that could not end within the call's budget."""
        require(self.attempt_seconds, "a request to DynamoDB")

    def needs_retry(
        self, attempts: int, caught_exception: BaseException | None = None, **kwargs: Any
    ) -> None:
        """End the request now if botocore would retry it but the retry would overrun.

        Returns nothing: botocore's own retry handler, which runs next, decides whether and
        when to retry as usual.
        """
        if attempts >= self.max_attempts:
            return  # botocore gives up by itself
        reason = "" if caught_exception is not None else _retried_response(kwargs.get("response"))
        if caught_exception is None and not reason:
            return  # a success, or an error botocore does not retry
        backoff = min(_MAX_BACKOFF, 2.0 ** (attempts - 1))
        if fits(backoff + self.attempt_seconds):
            return
        if caught_exception is not None:
            raise caught_exception
        raise BackendUnavailableError(
            f"DynamoDB unavailable ({reason}), and too little of call_timeout is left for a retry"
        )

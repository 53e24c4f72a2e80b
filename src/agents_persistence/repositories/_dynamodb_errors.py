"""Error translation of the DynamoDB store: the one place driver errors become ours."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import TYPE_CHECKING

from botocore.exceptions import (  # type: ignore[import-untyped]
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from pynamodb.exceptions import PynamoDBException, TableDoesNotExist

from agents_persistence.errors import (
    AccessDeniedError,
    AuthenticationError,
    BackendUnavailableError,
    CallTimeoutError,
    CheckpointerError,
    ConfigurationError,
    CorruptStateError,
    SchemaNotReadyError,
    StateTooLargeError,
)
from agents_persistence.models.dynamodb import INDEX_NAME, ItemDecodeError
from agents_persistence.repositories._dynamodb_mapping import thread_of

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["ItemTooLargeError", "driver_errors", "error_code"]

_UNAVAILABLE_CODES = frozenset(
    {
        "InternalFailure",
        "InternalServerError",
        "LimitExceededException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "ThrottlingException",
    }
)
"""Error codes of a service that is there but cannot serve now (after the client's retries)."""

_REFUSED_CREDENTIALS_CODES = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
"""Error codes of requests whose keys, token or signature the service did not accept."""

_DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})
"""Error codes of known credentials without the permission (IAM policy) for the action."""

_XML_ERROR = re.compile(r"<Code>([^<]*)</Code>\s*<Message>([^<]*)</Message>")
"""A query-protocol (XML) error body, as some DynamoDB-compatible servers answer refusals."""


class ItemTooLargeError(StateTooLargeError):
    """DynamoDB refused an item as larger than its item size limit; nothing was written."""

    def __init__(self, thread_id: str, size: int, limit: int) -> None:
        super().__init__(thread_id, size, limit)
        self.args = (
            f"DynamoDB refused the item of thread {thread_id!r} as too large (state {size}"
            f" bytes; at most about {limit} bytes fit beside the item's other attributes);"
            " nothing was written",
        )


def error_code(exc: BaseException) -> str:
    """The service's error code (``ConditionalCheckFailedException``...), or ``""``.

    PynamoDB's own ``cause_response_code`` fails on causes without a response (timeouts).
    """
    return _code_and_message(exc)[0]


def _code_and_message(exc: BaseException) -> tuple[str, str]:
    cause = exc.cause if isinstance(exc, PynamoDBException) else exc
    response = getattr(cause, "response", None)
    error = response.get("Error") if isinstance(response, dict) else None
    if not isinstance(error, dict):
        return "", str(exc)
    code, message = str(error.get("Code") or ""), str(error.get("Message") or exc)
    if code.isdigit():
        # The client could not parse the body (an XML error where JSON was expected) and
        # fell back on the HTTP status: take the service's own code from the body.
        found = _XML_ERROR.search(message)
        if found is not None:
            return found.group(1), f"{found.group(2)} (HTTP {code})"
    return code, message


def _http_status(cause: BaseException | None) -> int:
    response = getattr(cause, "response", None)
    metadata = response.get("ResponseMetadata") if isinstance(response, dict) else None
    status = metadata.get("HTTPStatusCode") if isinstance(metadata, dict) else None
    return status if isinstance(status, int) else 0


def _translate(
    exc: Exception, table_name: str, oversize: StateTooLargeError | None
) -> CheckpointerError:
    cause = exc.cause if isinstance(exc, PynamoDBException) else exc
    code, message = _code_and_message(exc)
    server_error = code in _UNAVAILABLE_CODES or (code.isdigit() and code.startswith("5"))
    if isinstance(cause, ReadTimeoutError | ConnectTimeoutError):
        return CallTimeoutError(f"DynamoDB did not answer in time (call_timeout): {message}")
    if isinstance(cause, BotoConnectionError | HTTPClientError) or server_error:
        return BackendUnavailableError(
            f"DynamoDB unavailable ({code or type(cause).__name__}): {message}"
        )
    if code in _DENIED_CODES:
        return AccessDeniedError(f"DynamoDB denied access ({code}): {message}")
    if code in _REFUSED_CREDENTIALS_CODES or _http_status(cause) in (401, 403):
        return AuthenticationError(f"DynamoDB refused the credentials ({code}): {message}")
    if isinstance(cause, NoRegionError | NoCredentialsError | PartialCredentialsError):
        return ConfigurationError(f"DynamoDB client configuration: {message}")
    missing = isinstance(exc, TableDoesNotExist) or code.startswith("ResourceNotFound")
    if (missing or code == "ValidationException") and "index" in message.lower():
        return SchemaNotReadyError(
            f"DynamoDB table {table_name!r} lacks the {INDEX_NAME!r} index ({message}):"
            " create the table with DynamoDBCheckpointer.create_table()"
        )
    if missing:
        return SchemaNotReadyError(
            f"DynamoDB table {table_name!r} does not exist: create it with"
            " DynamoDBCheckpointer.create_table(), `agents-persistence dynamodb create-table`"
            " or the CloudFormation/Terraform of docs/dynamodb.md"
        )
    if code == "ValidationException" and "size" in message.lower() and oversize is not None:
        return oversize
    return CheckpointerError(f"DynamoDB request failed ({code or type(exc).__name__}): {message}")


@contextmanager
def driver_errors(
    table_name: str,
    *,
    thread_id: str = "",
    oversize: StateTooLargeError | None = None,
) -> Iterator[None]:
    """Translate PynamoDB and botocore errors raised inside the block into ours.

    Args:
        table_name: Named in the messages.
        thread_id: The thread concerned, named by `CorruptStateError` when the item read does
            not carry its key.
        oversize: What to raise if the service rejects an item as too large.

    Raises:
        AuthenticationError: The service did not accept the keys, token or signature.
        AccessDeniedError: The credentials lack the IAM permission for the action.
        CallTimeoutError: No connection or no reply in time (a `BackendUnavailableError`).
        BackendUnavailableError: Refused connections, throttling, server errors.
        SchemaNotReadyError: The table or its index is missing.
        CorruptStateError: A stored item does not have the model's attribute types.
        StateTooLargeError: The service refused the item for its size.
        ConfigurationError: No region or no credentials.
        CheckpointerError: Anything else the service or the driver reported.
    """
    try:
        yield
    except CheckpointerError:
        raise
    except ItemDecodeError as exc:
        raise CorruptStateError(thread_of(exc.key) or thread_id, exc.detail) from exc
    except (PynamoDBException, BotoCoreError, ClientError) as exc:
        raise _translate(exc, table_name, oversize) from exc

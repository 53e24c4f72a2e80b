"""DynamoDB: refused credentials and missing IAM permissions need a fix, not a retry.

moto accepts any keys unless told to check them, and the shared kit's server stays that way:
these tests start a private moto server that enforces IAM (`MotoIAMServer`). moto answers a
refusal with HTTP 403 and an XML body, DynamoDB itself with HTTP 400 and a JSON body naming
the error code; the second form is checked on responses of DynamoDB's documented shape.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest
from botocore.exceptions import ClientError

from agents_persistence import (
    AccessDeniedError,
    AsyncDynamoDBCheckpointer,
    AuthenticationError,
    BackendUnavailableError,
    CheckpointerError,
    DynamoDBCheckpointer,
)
from agents_persistence.repositories._dynamodb_errors import driver_errors

from ..kits.secured import AwsKeys, MotoIAMServer, assert_needs_a_fix, failure, saves

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..support import Portal

MODES = ["sync", "async"]


@pytest.fixture(scope="module")
def iam_server() -> Iterator[MotoIAMServer]:
    server = MotoIAMServer()
    try:
        server.start()
        with DynamoDBCheckpointer(table(), **server.options(server.writer)) as cp:
            cp.create_table()
        yield server
    finally:
        server.stop()


def table() -> str:
    return "ap-auth-errors"


def opener(server: MotoIAMServer, keys: AwsKeys, mode: str) -> Callable[[], Any]:
    """Opens the server's table with ``keys`` (a fresh namespace each time)."""
    kind = DynamoDBCheckpointer if mode == "sync" else AsyncDynamoDBCheckpointer
    namespace = "auth" + uuid.uuid4().hex[:8]
    return lambda: kind(table(), namespace=namespace, **server.options(keys))


@pytest.mark.parametrize("mode", MODES)
def test_allowed_keys_work(iam_server: MotoIAMServer, mode: str, portal: Portal) -> None:
    # The control: the server checks keys, and the writer's pass.
    saves(opener(iam_server, iam_server.writer, mode), mode, portal)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("who", "kind", "says"),
    [
        ("unknown", AuthenticationError, "InvalidClientTokenId"),  # keys moto never issued
        ("wrong secret", AuthenticationError, "SignatureDoesNotMatch"),
        ("nobody", AccessDeniedError, "not authorized"),  # known keys, no IAM policy
    ],
)
def test_refused_keys_need_a_fix(
    iam_server: MotoIAMServer,
    who: str,
    kind: type[CheckpointerError],
    says: str,
    mode: str,
    portal: Portal,
) -> None:
    keys = {
        "unknown": iam_server.unknown,
        "wrong secret": AwsKeys(iam_server.writer.access_key_id, "not-the-secret"),
        "nobody": iam_server.nobody,
    }[who]
    error = failure(opener(iam_server, keys, mode), mode, portal)
    assert_needs_a_fix(error, kind)
    assert type(error) is kind  # AccessDeniedError is not an AuthenticationError
    assert says in str(error)
    assert "<?xml" not in str(error)  # the service's message, not the raw body
    assert keys.secret_access_key not in str(error)


def test_table_management_with_unknown_keys_is_an_authentication_error(
    iam_server: MotoIAMServer,
) -> None:
    options = iam_server.options(iam_server.unknown)
    with DynamoDBCheckpointer("ap-auth-other", **options) as cp, pytest.raises(AuthenticationError):
        cp.create_table()


def _service_error(code: str, message: str, status: int = 400) -> ClientError:
    """A botocore error as DynamoDB's JSON protocol delivers it (documented error shape)."""
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": 0},
        },
        "GetItem",
    )


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        (
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            AuthenticationError,
        ),
        (
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided.",
            AuthenticationError,
        ),
        (
            "ExpiredTokenException",
            "The security token included in the request is expired",
            AuthenticationError,
        ),
        (
            "MissingAuthenticationTokenException",
            "Request is missing Authentication Token",
            AuthenticationError,
        ),
        (
            "AccessDeniedException",
            "User: arn:aws:iam::123456789012:user/x is not authorized to perform:"
            " dynamodb:GetItem on resource: arn:aws:dynamodb:us-east-1:123456789012:table/t",
            AccessDeniedError,
        ),
    ],
)
def test_dynamodb_refusal_codes(code: str, message: str, kind: type[CheckpointerError]) -> None:
    with pytest.raises(CheckpointerError) as raised, driver_errors("t"):
        raise _service_error(code, message)
    assert_needs_a_fix(raised.value, kind)
    assert code in str(raised.value)


def test_an_unparsed_403_is_an_authentication_error() -> None:
    # A server whose error body the client cannot read still says 403 Forbidden.
    with pytest.raises(CheckpointerError) as raised, driver_errors("t"):
        raise _service_error("403", "Forbidden", status=403)
    assert_needs_a_fix(raised.value, AuthenticationError)


def test_throttling_is_still_unavailable() -> None:
    exc: Any = _service_error(
        "ThrottlingException", "Rate of requests exceeds the allowed throughput."
    )
    with pytest.raises(BackendUnavailableError), driver_errors("t"):
        raise exc

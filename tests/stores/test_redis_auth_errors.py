"""Redis: refused credentials, ACL refusals and unknown databases need a fix, not a retry.

redis-py derives its ``AuthenticationError`` from its ``ConnectionError``; the store still raises
`AuthenticationError` (not a `ConnectionError`), sync and async, and its clients do not retry
refused credentials. A wrong or missing password needs a server that asks for one: a private
``redis-server --requirepass`` on a free port.
"""

from __future__ import annotations

import shutil
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import (
    AccessDeniedError,
    AgentStateSnapshot,
    AsyncRedisCheckpointer,
    AuthenticationError,
    ConfigurationError,
    DatabaseNotFoundError,
    RedisCheckpointer,
)

from ..kits.redis import REDIS_URL, RedisServer
from ..kits.secured import PASSWORD, assert_needs_a_fix, failure, saves, unusable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from agents_persistence import CheckpointerError

    from ..support import Portal

MODES = ["sync", "async"]
READER = "reader"


def opener(url: str, mode: str, **options: Any) -> Callable[[], Any]:
    """Opens ``url`` with ``RedisCheckpointer.from_url`` (or its async twin)."""
    kind = RedisCheckpointer if mode == "sync" else AsyncRedisCheckpointer
    return lambda: kind.from_url(url, namespace="auth", **options)


def refused(url: str, mode: str, portal: Portal, **options: Any) -> CheckpointerError:
    """What a load and a save through ``url`` raise."""
    return failure(opener(url, mode, **options), mode, portal)


def _url(port: int, credentials: str = "", database: int = 0, query: str = "") -> str:
    return f"redis://{credentials}127.0.0.1:{port}/{database}{query}"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private server with a password, and an ACL user that may only read."""
    if shutil.which("redis-server") is None:
        unusable("redis-server is not on PATH")
    server = RedisServer(tmp_path_factory.mktemp("redis-auth"), "--requirepass", PASSWORD)
    server.start()
    try:
        with server.client(password=PASSWORD) as admin:
            admin.execute_command(
                "ACL", "SETUSER", READER, "on", f">{PASSWORD}", "~*", "+@read", "+@connection"
            )
        yield server
    finally:
        server.stop()


def _connections_received(server: RedisServer) -> int:
    with server.client(password=PASSWORD) as admin:
        return int(admin.info("stats")["total_connections_received"])


@pytest.mark.parametrize("mode", MODES)
def test_right_password_works(secured: RedisServer, mode: str, portal: Portal) -> None:
    # The control for the tests below.
    saves(opener(_url(secured.port, f":{PASSWORD}@"), mode), mode, portal)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("credentials", "protocol", "says"),
    [
        (":wrong@", "", "invalid username-password pair"),  # WRONGPASS
        ("nobody:wrong@", "", "invalid username-password pair"),  # unknown user
        ("", "", "authenticated"),  # no password: HELLO refused (RESP3)
        ("", "?protocol=2", "Authentication required"),  # no password: NOAUTH (RESP2)
        (":wrong@", "?protocol=2", "invalid username-password pair"),  # AUTH <password>
    ],
)
def test_refused_credentials_are_an_authentication_error(
    secured: RedisServer, credentials: str, protocol: str, says: str, mode: str, portal: Portal
) -> None:
    error = refused(_url(secured.port, credentials, query=protocol), mode, portal)
    assert_needs_a_fix(error, AuthenticationError)
    assert says in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_refused_credentials_are_not_retried(
    secured: RedisServer, mode: str, portal: Portal
) -> None:
    # With 3 retries, a client that retried refused credentials would connect 4 times per call.
    before = _connections_received(secured)
    refused(_url(secured.port, ":wrong@"), mode, portal, retries=3)
    # One load and one save: one connection each, plus the one reading the counter.
    assert _connections_received(secured) - before == 3


@pytest.mark.parametrize("mode", MODES)
def test_acl_refusing_a_command_is_access_denied(
    secured: RedisServer, mode: str, portal: Portal
) -> None:
    url = _url(secured.port, f"{READER}:{PASSWORD}@")

    def sync() -> BaseException:
        with (
            RedisCheckpointer.from_url(url, namespace="auth") as cp,
            pytest.raises(AccessDeniedError) as raised,
        ):
            cp.save_state("t", AgentStateSnapshot())
        return raised.value

    async def asynchronous() -> BaseException:
        async with AsyncRedisCheckpointer.from_url(url, namespace="auth") as cp:
            with pytest.raises(AccessDeniedError) as raised:
                await cp.save_state("t", AgentStateSnapshot())
        return raised.value

    error = sync() if mode == "sync" else portal.call(asynchronous)
    assert_needs_a_fix(error, AccessDeniedError)
    assert not isinstance(error, AuthenticationError)
    assert "NOPERM" in str(error) or "permission" in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_password_on_a_server_without_one(mode: str, portal: Portal) -> None:
    # RESP2 sends ``AUTH <password>``, which a server without a password answers with an error.
    password = "pw-" + uuid.uuid4().hex[:8]
    base = REDIS_URL.replace("redis://", f"redis://:{password}@", 1)
    error = refused(base + "?protocol=2", mode, portal)
    assert_needs_a_fix(error, AuthenticationError)
    assert "without any password configured" in str(error)


def test_resp3_password_on_a_server_without_one_is_accepted_by_redis() -> None:
    # RESP3 sends ``HELLO 3 AUTH default <password>``: Redis accepts any password for a user
    # declared ``nopass`` (its default user without requirepass). Redis's rule, not ours.
    base = REDIS_URL.replace("redis://", "redis://:any-password@", 1)
    with RedisCheckpointer.from_url(base, namespace="auth-" + uuid.uuid4().hex[:8]) as cp:
        assert cp.load_state("t") is None


@pytest.mark.parametrize("mode", MODES)
def test_database_number_beyond_the_server_is_database_not_found(mode: str, portal: Portal) -> None:
    url = REDIS_URL.rsplit("/", 1)[0] + "/9999"
    error = refused(url, mode, portal)
    assert_needs_a_fix(error, DatabaseNotFoundError)
    assert isinstance(error, ConfigurationError)
    assert "DB index is out of range" in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_cluster_client_with_refused_credentials_is_an_authentication_error(
    secured: RedisServer, mode: str, portal: Portal
) -> None:
    # A cluster client discovers the cluster through its first node; redis-py wraps the refusal
    # in its RedisClusterException, which the translation looks through.
    url = f"redis+cluster://:wrong@127.0.0.1:{secured.port}"
    error = refused(url, mode, portal)
    assert_needs_a_fix(error, AuthenticationError)

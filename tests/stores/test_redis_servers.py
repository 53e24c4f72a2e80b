"""The Redis store against servers the tests start themselves: restarts and TLS.

Each test runs its own ``redis-server`` on a free loopback port (nothing persisted), and the
fixture kills it whatever happens.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from agents_persistence import (
    AgentStateSnapshot,
    AsyncRedisCheckpointer,
    BackendUnavailableError,
    RedisCheckpointer,
)

from ..kits.base import IN_CI
from ..kits.redis import RedisServer, free_port

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from ..support import Portal

FAST = {"socket_timeout": 1.0, "socket_connect_timeout": 0.5, "retries": 2}


def _need(*programs: str) -> None:
    missing = [name for name in programs if shutil.which(name) is None]
    if missing:
        message = f"{', '.join(missing)} not on PATH"
        if IN_CI:
            pytest.fail(message + " (CI=true)")
        pytest.skip(message)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    _need("redis-server")
    own = RedisServer(tmp_path / "redis")
    own.start()
    try:
        yield own
    finally:
        own.stop()


def state(n: int) -> AgentStateSnapshot:
    return AgentStateSnapshot(scratchpad={"n": n})


@pytest.mark.timeout(60)
def test_same_checkpointer_works_after_a_restart(server: RedisServer) -> None:
    cp = RedisCheckpointer.from_url(server.url, namespace="restart", **FAST)
    assert cp.save_state("t", state(1)).version == 1

    # A restart between two calls: the pooled connection is dead, the next call reconnects.
    server.stop()
    server.start()
    assert cp.load_state("t") is None  # nothing was persisted
    assert cp.save_state("t", state(2)).version == 1  # the scripts are loaded again

    # Calls while the server is down fail fast and typed, then the same object recovers.
    server.stop()
    with pytest.raises(BackendUnavailableError):
        cp.load_state("t")
    with pytest.raises(BackendUnavailableError):
        cp.save_state("t", state(3))
    with pytest.raises(ConnectionError):
        cp.list_threads()
    server.start()
    assert cp.save_state("t", state(4), expected_version=0).version == 1
    assert [t.thread_id for t in cp.iter_threads()] == ["t"]
    assert cp.delete_thread("t") is True
    cp.close()


@pytest.mark.timeout(60)
def test_injected_client_recovers_after_a_restart(server: RedisServer) -> None:
    client = redis.Redis(port=server.port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1))
    cp = RedisCheckpointer(client, namespace="restart")
    cp.save_state("t", state(1))
    server.stop()
    with pytest.raises(BackendUnavailableError):
        cp.save_state("t", state(2))
    server.start()
    assert cp.save_state("t", state(3)).version == 1
    cp.close()
    client.close()


@pytest.mark.timeout(60)
def test_async_checkpointer_works_after_a_restart(server: RedisServer, portal: Portal) -> None:
    async def scenario() -> list[Any]:
        seen: list[Any] = []
        cp = AsyncRedisCheckpointer.from_url(server.url, namespace="restart", **FAST)
        try:
            seen.append((await cp.save_state("t", state(1))).version)
            server.stop()
            try:
                await cp.load_state("t")
            except BackendUnavailableError:
                seen.append("unavailable")
            server.start()
            seen.append((await cp.save_state("t", state(2))).version)
            seen.append(await cp.load_state("t"))
        finally:
            await cp.close()
        return seen

    assert portal.call(scenario) == [1, "unavailable", 1, state(2)]


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    _need("redis-server", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    own = RedisServer(
        tmp_path / "redis",
        "--tls-port", str(port),
        "--tls-cert-file", str(cert),
        "--tls-key-file", str(key),
        "--tls-ca-cert-file", str(cert),
        "--tls-auth-clients", "no",
        "--port", "0",  # overrides the plain-text listener: TLS only
        port=port,
    )  # fmt: skip
    own.start()
    try:
        yield own, cert
    finally:
        own.stop()


@pytest.mark.timeout(60)
def test_rediss_url_speaks_tls(tls_server: tuple[RedisServer, Path], portal: Portal) -> None:
    server, cert = tls_server
    url = f"rediss://127.0.0.1:{server.port}/0"
    with RedisCheckpointer.from_url(
        url, namespace="tls", client_options={"ssl_ca_certs": str(cert)}
    ) as cp:
        assert cp.save_state("t", state(1)).version == 1

    async def scenario() -> Any:
        async with AsyncRedisCheckpointer.from_url(
            url + f"?ssl_ca_certs={cert}", namespace="tls"
        ) as acp:
            return await acp.load_state("t")

    assert portal.call(scenario) == state(1)
    # Without the CA the server's certificate is refused: no silent plain-text fallback.
    unverified = RedisCheckpointer.from_url(url, namespace="tls", retries=0)
    with unverified, pytest.raises(BackendUnavailableError, match="certificate"):
        unverified.load_state("t")

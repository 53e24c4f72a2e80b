"""The private-server fixtures do what fault tests rely on: freeze, blackhole, clean up."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..servers import Blackhole, RedisServer, ServerError, accepts
from .conftest import need


@pytest.fixture
def server() -> RedisServer:
    need(RedisServer)
    own = RedisServer()
    try:
        own.start()
        yield own
    finally:
        own.close()


@pytest.mark.timeout(60)
def test_pause_freezes_the_server_and_resume_thaws_it(server: RedisServer) -> None:
    client = redis.Redis(
        port=server.port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        assert client.ping()
        server.pause()
        assert accepts(server.port)  # the kernel still accepts: only answers stop
        with pytest.raises(redis.TimeoutError):
            client.ping()
        server.resume()
        client.connection_pool.disconnect()
        assert client.ping()
    finally:
        client.close()


@pytest.mark.timeout(60)
def test_kill_ends_the_group_and_close_removes_the_directory() -> None:
    need(RedisServer)
    server = RedisServer(appendonly=True, appendfsync="always")
    server.start()
    try:
        redis.Redis(port=server.port).set("k", "v")
        pid = server.process.pid if server.process else -1
        server.kill()
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
        server.start()  # same port, same directory: the AOF brings the key back
        assert redis.Redis(port=server.port).get("k") == b"v"
        with pytest.raises(ServerError):
            server.start()
    finally:
        server.close()
    assert not server.root.exists()
    assert not accepts(server.port)


@pytest.mark.timeout(60)
def test_a_server_dies_with_the_thread_that_started_it() -> None:
    need(RedisServer)
    server = RedisServer()
    starter = threading.Thread(target=server.start)
    starter.start()
    starter.join(30)
    try:
        assert server.process is not None
        deadline = time.monotonic() + 10
        while server.process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.process.poll() is not None, "the server outlived the thread that started it"
    finally:
        server.close()


@pytest.mark.timeout(60)
def test_blackhole_accepts_and_never_answers() -> None:
    with Blackhole() as hole:
        with socket.create_connection(("127.0.0.1", hole.port), timeout=1) as conn:
            conn.settimeout(0.3)
            conn.sendall(b"PING\r\n")
            with pytest.raises(TimeoutError):
                conn.recv(1)
        assert hole.accepted == 1
    assert not accepts(hole.port)

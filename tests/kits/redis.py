"""Redis kits: the shared server on 127.0.0.1:6379 and a 3-master cluster the kit starts itself.

The kits look behind the library through the documented key layout
(``agents_persistence:{<namespace>}:thread:<thread_id>``), so a change of layout fails here.
`RedisServer` and `RedisCluster` also serve the store tests that start their own servers.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.cluster

from agents_persistence import AsyncRedisCheckpointer, RedisCheckpointer

from .base import StoreKit, closed_port, tcp_reachable
from .encrypted import EncryptedKit

REDIS_URL = os.environ.get("AGENTS_PERSISTENCE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CORRUPT_STATE = '{"todos": "not a list"'
UNREACHABLE = {"socket_connect_timeout": 0.5, "socket_timeout": 0.5, "retries": 1}


def thread_key(namespace: str, thread_id: str = "") -> str:
    """The documented key of a thread's hash (or, without a thread id, their common prefix)."""
    return f"agents_persistence:{{{namespace}}}:thread:{thread_id}"


def pieces_key(namespace: str, thread_id: str = "") -> str:
    """The documented key of the hash of a thread's pieces (or their common prefix)."""
    return f"agents_persistence:{{{namespace}}}:pieces:{thread_id}"


def free_port() -> int:
    return closed_port()


def _server_binaries() -> str | None:
    missing = [name for name in ("redis-server", "redis-cli") if shutil.which(name) is None]
    return f"{' and '.join(missing)} not on PATH" if missing else None


class RedisServer:
    """A ``redis-server`` of our own on a free loopback port, in its own directory.

    It never persists anything and dies with the test process (``setpriv --pdeathsig``) even
    if a finalizer never runs.
    """

    def __init__(self, workdir: Path, *extra: str, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        if shutil.which("setpriv"):
            command = ["setpriv", "--pdeathsig", "KILL", *command]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while not tcp_reachable("127.0.0.1", self.port, timeout=0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.workdir / "redis.log"
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start: "
                    + (log.read_text()[-2000:] if log.exists() else "no log")
                )
            time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.kill()
        process.wait(10)
        if process.stderr is not None:
            process.stderr.close()

    def client(self, **options: Any) -> redis.Redis[bytes]:
        return redis.Redis(host="127.0.0.1", port=self.port, **options)


class RedisCluster:
    """Three masters, no replicas, on free loopback ports in a temporary directory."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ap-redis-cluster-"))
        # The bus port is given explicitly: the default, port + 10000, may not exist.
        self.nodes = [
            RedisServer(
                self.root / f"node{n}",
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "2000",
                "--cluster-port", str(free_port()),
            )
            for n in range(3)
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def start(self, timeout: float = 30.0) -> None:
        try:
            for node in self.nodes:
                node.start()
            subprocess.run(
                [
                    "redis-cli", "--cluster", "create",
                    *(f"127.0.0.1:{node.port}" for node in self.nodes),
                    "--cluster-replicas", "0", "--cluster-yes",
                ],
                check=True, capture_output=True, timeout=timeout,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                with node.client() as client:
                    while client.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                        if time.monotonic() > deadline:
                            raise RuntimeError(f"cluster node {node.port} never reached state ok")
                        time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def client(self, **options: Any) -> redis.cluster.RedisCluster[bytes]:
        return redis.cluster.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, **options)


class RedisKit(StoreKit):
    """The shared server (``AGENTS_PERSISTENCE_TEST_REDIS_URL``, default 127.0.0.1:6379/0).

    Sync checkpointers share one injected client; async ones come from ``from_url`` and own
    their pool, so both construction paths run the whole contract suite.
    """

    name = "redis"
    db_system = "redis"
    large_state_bytes = 1_000_000

    def __init__(self, url: str = REDIS_URL) -> None:
        self.url = url
        self._client: Any = None

    def unavailable_reason(self) -> str | None:
        parts = urlsplit(self.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 6379
        if not tcp_reachable(host, port):
            return f"nothing answers at {host}:{port}"
        return None

    def start(self) -> None:
        self._client = redis.Redis.from_url(self.url)

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            self.start()
        return self._client

    def make(self, *, namespace: str, **options: Any) -> RedisCheckpointer[Any]:
        return RedisCheckpointer(self.client, namespace=namespace, **options)

    async def make_async(self, *, namespace: str, **options: Any) -> AsyncRedisCheckpointer[Any]:
        # A wider budget than the default 5 s (1 s to connect): the servers run on two cores
        # shared with the rest of the suite, where a loopback connect once took longer than
        # that. The budget's own tests (tests/stores/test_redis_call_budget.py) set theirs.
        options.setdefault("call_timeout", 15.0)
        return AsyncRedisCheckpointer.from_url(self.url, namespace=namespace, **options)

    def corrupt(self, namespace: str, thread_id: str) -> None:
        key = thread_key(namespace, thread_id)
        assert self.client.exists(key) == 1, f"no record at {key}"
        self.client.hset(key, "state", CORRUPT_STATE)

    def stored_count(self, namespace: str) -> int:
        return sum(1 for _ in self.client.scan_iter(match=thread_key(namespace) + "*", count=1000))

    def stored_values(self, namespace: str, thread_id: str) -> list[bytes]:
        """The stored head (the ``state`` field) and every piece body, as bytes."""
        head = self.client.hget(thread_key(namespace, thread_id), "state")
        assert isinstance(head, bytes), f"no record for {thread_id!r}"
        return [head, *self.client.hvals(pieces_key(namespace, thread_id))]

    def make_unreachable(self, *, namespace: str) -> RedisCheckpointer[Any]:
        url = f"redis://127.0.0.1:{closed_port()}/0"
        return RedisCheckpointer.from_url(url, namespace=namespace, **UNREACHABLE)

    async def make_unreachable_async(self, *, namespace: str) -> AsyncRedisCheckpointer[Any]:
        url = f"redis://127.0.0.1:{closed_port()}/0"
        return AsyncRedisCheckpointer.from_url(url, namespace=namespace, **UNREACHABLE)


class RedisClusterKit(RedisKit):
    """A 3-master cluster started for the session, through `redis.cluster.RedisCluster`."""

    name = "redis-cluster"

    def __init__(self) -> None:
        super().__init__(url="")
        self.cluster: RedisCluster | None = None

    def unavailable_reason(self) -> str | None:
        return _server_binaries()

    def start(self) -> None:
        if self.cluster is not None:
            return
        cluster = RedisCluster()
        atexit.register(cluster.stop)  # in case the session ends without calling stop()
        cluster.start()
        self.cluster, self.url = cluster, cluster.url
        self._client = cluster.client()

    def stop(self) -> None:
        super().stop()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.stop()

    def stored_count(self, namespace: str) -> int:
        # A namespace's keys share one slot (the hash tag): ask the node that owns it.
        slot = self.client.keyslot(thread_key(namespace))
        keys = self.client.cluster_get_keys_in_slot(slot, 1_000_000)
        prefix = thread_key(namespace)
        names = (key.decode() if isinstance(key, bytes) else key for key in keys)
        return sum(1 for name in names if name.startswith(prefix))

    def make_unreachable(self, *, namespace: str) -> RedisCheckpointer[Any]:
        url = f"redis+cluster://127.0.0.1:{closed_port()}"
        return RedisCheckpointer.from_url(url, namespace=namespace, **UNREACHABLE)

    async def make_unreachable_async(self, *, namespace: str) -> AsyncRedisCheckpointer[Any]:
        url = f"redis+cluster://127.0.0.1:{closed_port()}"
        return AsyncRedisCheckpointer.from_url(url, namespace=namespace, **UNREACHABLE)


def wait_for(predicate: Any, timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = bool(predicate())
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


@contextlib.contextmanager
def listening(port: int) -> Any:
    """A socket that accepts connections on ``port`` and never answers (a hung server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(16)
        yield sock


KITS: list[StoreKit] = [RedisKit(), RedisClusterKit(), EncryptedKit(RedisKit())]

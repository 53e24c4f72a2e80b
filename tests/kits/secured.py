"""Servers that check credentials, for the tests of refused credentials and unknown databases.

The machine's shared servers trust everyone (PostgreSQL trust auth, MariaDB root without a
password, Redis without a password, moto accepting any keys). Tests that need a server to refuse
a password start their own, on free loopback ports, and stop only what they started:

- `PostgresServer`: a private cluster made by ``initdb`` with scram-sha-256 authentication;
- `MotoIAMServer`: moto's server in a child process, enforcing IAM signatures and policies after
  its first requests (``INITIAL_NO_AUTH_ACTION_COUNT``), with one user allowed DynamoDB and one
  allowed nothing;
- `mariadb_user`: a uniquely named user with a password on the shared MariaDB, dropped after.

`failure` runs a load and a save through a checkpointer, sync or async, and returns what they
raised; `saves` is the control that the same set-up works with the right credentials;
`assert_needs_a_fix` checks that an error is one no retry can cure.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agents_persistence import AgentStateSnapshot, BackendUnavailableError, CheckpointerError

from .base import IN_CI, closed_port, tcp_reachable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..support import Portal

PG_BIN = Path(os.environ.get("AGENTS_PERSISTENCE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PASSWORD = "s3cret-" + uuid.uuid4().hex[:8]
REGION = "us-east-1"


def unusable(reason: str) -> None:
    """Skip (or, with CI=true, fail) a test whose private server cannot be started here."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing test server fails the run)")
    pytest.skip(reason)


def failure(opener: Callable[[], Any], mode: str, portal: Portal) -> CheckpointerError:
    """What a load and then a save raise on the checkpointer ``opener`` makes.

    Args:
        opener: Makes a sync checkpointer in mode ``"sync"``, an async one in ``"async"``
            (called on the portal's loop).
        mode: ``"sync"`` or ``"async"``.
        portal: The test session's event loop.

    Both calls must fail with the same error type; the load's error is returned.
    """

    def sync() -> tuple[CheckpointerError, CheckpointerError]:
        with opener() as cp:
            with pytest.raises(CheckpointerError) as loading:
                cp.load_state("t")
            with pytest.raises(CheckpointerError) as saving:
                cp.save_state("t", AgentStateSnapshot())
        return loading.value, saving.value

    async def asynchronous() -> tuple[CheckpointerError, CheckpointerError]:
        async with opener() as cp:
            with pytest.raises(CheckpointerError) as loading:
                await cp.load_state("t")
            with pytest.raises(CheckpointerError) as saving:
                await cp.save_state("t", AgentStateSnapshot())
        return loading.value, saving.value

    loaded, saved = sync() if mode == "sync" else portal.call(asynchronous)
    assert type(loaded) is type(saved), (loaded, saved)
    return loaded


def saves(opener: Callable[[], Any], mode: str, portal: Portal) -> None:
    """Check that a checkpointer ``opener`` makes saves a state and loads it back (a control)."""
    state = AgentStateSnapshot(scratchpad={"check": uuid.uuid4().hex})

    def sync() -> Any:
        with opener() as cp:
            cp.save_state("control", state)
            return cp.load_state("control")

    async def asynchronous() -> Any:
        async with opener() as cp:
            await cp.save_state("control", state)
            return await cp.load_state("control")

    assert (sync() if mode == "sync" else portal.call(asynchronous)) == state


def assert_needs_a_fix(error: BaseException, kind: type[CheckpointerError]) -> None:
    """``error`` is a ``kind``, chained to the driver's error, and nothing a retry loop retries."""
    assert isinstance(error, kind), repr(error)
    assert not isinstance(error, ConnectionError | BackendUnavailableError), repr(error)
    assert error.__cause__ is not None
    assert not isinstance(error.__cause__, CheckpointerError)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not tcp_reachable("127.0.0.1", port, timeout=0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait(10)
            text = log.read_text(errors="replace")[-2000:] if log.exists() else "no log"
            raise RuntimeError(f"the server on port {port} did not start: {text}")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _as_postgres_user() -> list[str]:
    """The prefix that runs a PostgreSQL binary as ``postgres`` (initdb refuses root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        unusable("initdb cannot run as root and setpriv is not on PATH")
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]


def _dies_with_us() -> list[str]:
    """Kill the child if this process dies without stopping it (no stray servers)."""
    return ["setpriv", "--pdeathsig", "KILL"] if shutil.which("setpriv") else []


class PostgresServer:
    """A private PostgreSQL cluster (scram-sha-256 for every connection) on a free port.

    Its superuser is ``postgres`` with password `PASSWORD`.
    """

    def __init__(self) -> None:
        self.port = closed_port()
        self.root = Path(tempfile.mkdtemp(prefix="ap-pg-auth-"))
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, user: str = "postgres", password: str | None = PASSWORD) -> str:
        """A psycopg URL to the ``postgres`` database as ``user`` (no password if None)."""
        secret = "" if password is None else f":{password}"
        return f"postgresql+psycopg://{user}{secret}@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        if not (PG_BIN / "initdb").exists():
            unusable(f"no PostgreSQL binaries in {PG_BIN}")
        prefix = _as_postgres_user()
        data = self.root / "data"
        password_file = self.root / "password"
        password_file.write_text(PASSWORD + "\n")
        if prefix:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(password_file, "postgres", "postgres")
        subprocess.run(
            [
                *prefix, str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                "--auth=scram-sha-256", f"--pwfile={password_file}", "-E", "UTF8",
                "--no-sync", "--no-instructions",
            ],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        log = self.root / "postgres.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    *_dies_with_us(), *prefix, str(PG_BIN / "postgres"), "-D", str(data),
                    "-p", str(self.port), "-k", str(self.root),
                    "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
                    "-c", "shared_buffers=16MB", "-c", "max_connections=20",
                ],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_for_port(self.port, self.process, log, timeout=60)
        # The port opens before recovery ends ("the database system is starting up").
        deadline = time.monotonic() + 60
        ready = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while subprocess.run(ready, check=False, timeout=30).returncode != 0:
            if time.monotonic() > deadline or self.process.poll() is not None:
                text = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the server on port {self.port} did not get ready: {text}")
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        _stop(process, signal.SIGINT)  # PostgreSQL's fast shutdown
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class AwsKeys:
    """An IAM access key pair."""

    access_key_id: str
    secret_access_key: str

    def options(self) -> dict[str, str]:
        """The checkpointer's keyword arguments for these keys."""
        return {
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }


class MotoIAMServer:
    """moto's server in a child process, checking every request after the IAM set-up.

    moto reads ``INITIAL_NO_AUTH_ACTION_COUNT`` once per process and lets that many requests
    through unchecked; the set-up spends exactly them creating two users, so every later request
    is checked against IAM: `writer` may use DynamoDB, `nobody` has no policy, and keys moto
    never issued are refused. (moto answers these refusals as HTTP 403 with an XML body, where
    DynamoDB answers 400 with a JSON one: the translation handles both.)
    """

    _SETUP_REQUESTS = 5

    def __init__(self) -> None:
        self.port = closed_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.root = Path(tempfile.mkdtemp(prefix="ap-moto-iam-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.writer = AwsKeys("", "")
        self.nobody = AwsKeys("", "")
        self.unknown = AwsKeys("AKIA" + uuid.uuid4().hex[:16].upper(), "not-a-secret")

    def start(self) -> None:
        try:
            import moto.server  # noqa: F401
        except ImportError as exc:
            unusable(f"moto[server] is not installed ({exc})")
        import boto3

        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(self._SETUP_REQUESTS)}
        log = self.root / "moto.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [*_dies_with_us(), sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                 "-p", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_for_port(self.port, self.process, log, timeout=60)
        iam = boto3.client(
            "iam",
            region_name=REGION,
            endpoint_url=self.endpoint,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"}],
        }
        iam.create_user(UserName="writer")  # 1
        self.writer = _keys(iam.create_access_key(UserName="writer"))  # 2
        iam.put_user_policy(  # 3
            UserName="writer", PolicyName="dynamodb", PolicyDocument=json.dumps(policy)
        )
        iam.create_user(UserName="nobody")  # 4
        self.nobody = _keys(iam.create_access_key(UserName="nobody"))  # 5

    def options(self, keys: AwsKeys) -> dict[str, Any]:
        """Checkpointer keyword arguments reaching this server with ``keys``, no retries."""
        return {
            "region": REGION,
            "endpoint_url": self.endpoint,
            "max_retries": 0,
            **keys.options(),
        }

    def stop(self) -> None:
        process, self.process = self.process, None
        _stop(process, signal.SIGTERM)
        shutil.rmtree(self.root, ignore_errors=True)


def _keys(response: dict[str, Any]) -> AwsKeys:
    key = response["AccessKey"]
    return AwsKeys(key["AccessKeyId"], key["SecretAccessKey"])


@contextlib.contextmanager
def mariadb_user(root_url: str, *, grant_database: str | None) -> Iterator[tuple[str, str]]:
    """A new MariaDB user with a password (yields its name and password); dropped afterwards.

    Args:
        root_url: A URL with the right to create users (the shared server's root).
        grant_database: A database the user gets every privilege on, or None for none.
    """
    from sqlalchemy import create_engine, text

    name = "ap_auth_" + uuid.uuid4().hex[:10]
    engine = create_engine(root_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(f"CREATE USER '{name}'@'%' IDENTIFIED BY :password"), {"password": PASSWORD}
            )
            if grant_database is not None:
                conn.execute(text(f"GRANT ALL PRIVILEGES ON `{grant_database}`.* TO '{name}'@'%'"))
        yield name, PASSWORD
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{name}'@'%'"))
        engine.dispose()

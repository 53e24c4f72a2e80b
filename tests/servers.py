"""Private database servers for fault tests: started, stopped, paused and killed by the test.

Every server here runs from its own temporary directory on a free loopback port, as a child
of the test process in a process group of its own, so a test can stop it gracefully, kill the
whole group with SIGKILL (a crash), freeze it with SIGSTOP (a hung server) and start it again
on the same data. Nothing here ever touches the machine's shared services.

- `PostgresServer`: a PostgreSQL cluster (``initdb`` then ``postgres`` directly); trust auth
  by default, or a password with any ``initdb --auth`` method (scram-sha-256...).
- `MariaDBServer`: ``mariadb-install-db`` into a temporary datadir, then ``mariadbd`` with its
  own port and socket; root without a password by default, or with one.
- `RedisServer`: ``redis-server`` with or without AOF (``appendfsync`` always, everysec or
  no), optionally with ``requirepass``.
- `Blackhole`: a TCP socket that accepts connections and never answers.

Every server takes ``extra_args`` (appended to its command line), so auth, TLS or tuning
tests can reuse these classes. Servers are context managers; `ServerProcess.close` always
kills the process group and removes the directory. As a last resort the server also dies
with the thread that started it (``setpriv --pdeathsig KILL``): start servers from the main
thread, or from a thread that outlives them.

A time-budget test, for example, freezes a server and resumes it whatever happens, so a call
that is not bounded blocks only until the test gives up waiting for it::

    with PostgresServer(settings={"statement_timeout": "2s"}) as pg:
        url = pg.create_database("budget")
        ...  # migrate, save once
        pg.pause()
        try:
            ...  # run the call on a worker thread; join it with a timeout; assert the error
        finally:
            pg.resume()

Binaries: ``/usr/lib/postgresql/<major>/bin`` (or ``PG_BIN``), ``mariadb-install-db`` and
``mariadbd`` (``/usr/sbin``), ``redis-server`` on PATH. As root, PostgreSQL runs as the
``postgres`` user and MariaDB as ``mysql`` (both refuse to run as root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on right now (bound, then released)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _find(name: str, *dirs: str) -> str | None:
    for directory in dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


def _pg_bin() -> Path | None:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    root = Path("/usr/lib/postgresql")
    majors = sorted((p for p in root.glob("*/bin") if (p / "postgres").exists()), reverse=True)
    preferred = root / "15" / "bin"
    return preferred if preferred in majors else (majors[0] if majors else None)


class ServerError(RuntimeError):
    """A private server failed to start or stop; the message ends with its log."""


class ServerProcess:
    """One server process (and its children) that a test owns; subclasses say which.

    Args:
        root: Directory for data, socket and log; created if missing, removed by `close` when
            the server created it (a temporary one if None).
        port: Loopback port (a free one if None); kept across restarts.
        extra_args: Appended to the server's command line.
        start_timeout: Seconds `start` waits for the server to answer.
    """

    kind: ClassVar[str] = "?"
    #: The signal of a graceful stop (`stop`); `kill` always sends SIGKILL to the group.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    run_as: ClassVar[str | None] = None

    def __init__(
        self,
        root: Path | None = None,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self._owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix=f"ap-{self.kind}-")) if root is None else root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False
        self._prepared = False
        self._log = None

    # -- what subclasses provide -------------------------------------------------------------
    @classmethod
    def missing(cls) -> str | None:
        """Why this server cannot run here (a binary or user is missing), or None."""
        return None

    def prepare(self) -> None:
        """One-time set-up of the data directory (initdb...); runs before the first start."""

    def command(self) -> list[str]:
        """The server's command line (without ``extra_args``)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """Whether the server answers a real request (not just accepts TCP)."""
        return accepts(self.port)

    # -- life cycle ----------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for error messages."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _chown(self, path: Path) -> None:
        if self.run_as is not None and os.geteuid() == 0:
            entry = pwd.getpwnam(self.run_as)
            for dirpath, _, filenames in os.walk(path):
                os.chown(dirpath, entry.pw_uid, entry.pw_gid)
                for name in filenames:
                    os.chown(Path(dirpath) / name, entry.pw_uid, entry.pw_gid)

    def _wrap(self, command: list[str]) -> list[str]:
        """Drop root for servers that refuse it; die with the starting thread if all else fails."""
        prefix: list[str] = []
        if shutil.which("setpriv"):
            prefix = ["setpriv"]
            if self.run_as is not None and os.geteuid() == 0:
                prefix += [f"--reuid={self.run_as}", f"--regid={self.run_as}", "--init-groups"]
            prefix += ["--pdeathsig", "KILL"]
        return [*prefix, *command]

    def run_setup(self, command: list[str], timeout: float = 120.0) -> None:
        """Run a set-up command (initdb...) as the server's user; raise with its output."""
        result = subprocess.run(
            self._wrap(command), capture_output=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace")[-3000:]
            raise ServerError(f"{command[0]} failed ({result.returncode}):\n{output}")

    def start(self) -> float:
        """Start the server on its port and data; return the monotonic time it answered.

        Raises:
            ServerError: it exited or did not answer within ``start_timeout``.
        """
        if self.running:
            raise ServerError(f"{self.kind} on port {self.port} is already running")
        if not self._prepared:
            self._chown(self.root)
            self.prepare()
            self._prepared = True
        log = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                self._wrap([*self.command(), *self.extra_args]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() reaches the children
            )
        finally:
            log.close()
        self.paused = False
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.process.poll() is not None:
                self.process = None
                raise ServerError(f"{self.kind} exited at start:\n{self.log_tail()}")
            if self.ready():
                return time.monotonic()
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError(f"{self.kind} did not answer in time:\n{self.log_tail()}")
            time.sleep(0.05)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)

    def _wait_group_gone(self, timeout: float) -> bool:
        """Wait until no process of the group is left (children outlive a killed leader)."""
        if self.process is None:
            return True
        pgid = self.process.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.process.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop (``stop_signal``); falls back to `kill` after ``timeout`` seconds."""
        if not self.running:
            self.process = None
            return
        self.resume()
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return
        self._wait_group_gone(timeout)
        self.process = None

    def kill(self) -> None:
        """SIGKILL to the whole process group: a crash, no shutdown work at all."""
        if self.process is None:
            return
        self._signal_group(signal.SIGKILL)
        self.paused = False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        self._wait_group_gone(30)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP to the group: connections stay open and nothing answers (a hung server)."""
        self._signal_group(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT to the group after `pause`."""
        if self.paused:
            self._signal_group(signal.SIGCONT)
            self.paused = False

    def restart(self, how: str = "stop") -> float:
        """`stop` (``how="stop"``) or `kill` (``"kill"``), then `start`; return when it answered."""
        if how == "kill":
            self.kill()
        elif how == "stop":
            self.stop()
        else:
            raise ValueError(f"restart how={how!r}: 'stop' or 'kill'")
        return self.start()

    def close(self) -> None:
        """Kill the server (whatever its state) and remove the directory it created."""
        self.resume()
        self.kill()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Any:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PostgresServer(ServerProcess):
    """A PostgreSQL cluster of its own: ``initdb`` once, then ``postgres -D`` on a free port.

    Durability settings are PostgreSQL's defaults (``fsync=on``, ``synchronous_commit=on``);
    only ``initdb`` itself skips its final sync (``--no-sync``), which a crash of the server
    process (as opposed to the machine) cannot observe. `stop` is a fast shutdown (SIGINT).

    Args:
        auth: ``initdb --auth`` method for local and host connections (``trust``,
            ``scram-sha-256``, ``md5``...).
        password: The ``postgres`` superuser's password (needed unless ``auth="trust"``).
        settings: ``-c name=value`` settings added to the command line.
        **kwargs: See `ServerProcess`.
    """

    kind = "postgresql"
    stop_signal = signal.SIGINT  # fast shutdown: roll back open transactions, disconnect
    run_as = "postgres"

    def __init__(
        self,
        root: Path | None = None,
        *,
        auth: str = "trust",
        password: str | None = None,
        settings: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.auth = auth
        self.password = password
        self.settings = dict(settings or {})
        self.user = "postgres"

    @classmethod
    def missing(cls) -> str | None:
        bin_dir = _pg_bin()
        if bin_dir is None:
            return "no PostgreSQL server binaries (set PG_BIN)"
        if os.geteuid() == 0 and not _user_exists(cls.run_as):
            return f"running as root and no {cls.run_as!r} user to run PostgreSQL as"
        return None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def prepare(self) -> None:
        bin_dir = _pg_bin()
        assert bin_dir is not None
        command = [
            str(bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
            "-E", "UTF8", "--locale=C", "--no-sync", f"--auth={self.auth}",
        ]  # fmt: skip
        if self.password is not None:
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n")
            self._chown(pwfile)
            command.append(f"--pwfile={pwfile}")
        self.run_setup(command)

    def command(self) -> list[str]:
        bin_dir = _pg_bin()
        assert bin_dir is not None
        settings = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.root),
            "max_connections": "100",
            **self.settings,
        }
        flags = [arg for name, value in settings.items() for arg in ("-c", f"{name}={value}")]
        return [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port), *flags]

    def ready(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection string for ``database``."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=HOST, port=self.port, user=self.user, dbname=database, password=self.password
        )

    def url(self, database: str = "postgres", driver: str = "psycopg") -> str:
        """A SQLAlchemy URL for ``database``."""
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return f"postgresql+{driver}://{self.user}{secret}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create ``name`` (if missing) and return its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if found is None:
                conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class MariaDBServer(ServerProcess):
    """A MariaDB server of its own: ``mariadb-install-db`` once, then ``mariadbd``.

    Started with ``--no-defaults`` (no system option file), its own TCP port and socket,
    and InnoDB's default durability (``innodb_flush_log_at_trx_commit=1``: the redo log is
    flushed at every commit). `stop` is a normal shutdown (SIGTERM).

    Args:
        password: root's password (None: root without a password, over TCP too).
        **kwargs: See `ServerProcess`.
    """

    kind = "mariadb"
    run_as = "mysql"

    def __init__(
        self, root: Path | None = None, *, password: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(root, **kwargs)
        self.password = password
        self.user = "root"

    @classmethod
    def missing(cls) -> str | None:
        for name in ("mariadb-install-db", "mariadbd"):
            if _find(name, "/usr/sbin", "/usr/bin") is None:
                return f"{name} not found"
        if os.geteuid() == 0 and not _user_exists(cls.run_as):
            return f"running as root and no {cls.run_as!r} user to run MariaDB as"
        return None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_path(self) -> Path:
        return self.root / "mysqld.sock"

    def _user_flag(self) -> list[str]:
        return [f"--user={self.run_as}"] if os.geteuid() == 0 else []

    def prepare(self) -> None:
        installer = _find("mariadb-install-db", "/usr/bin", "/usr/sbin")
        assert installer is not None
        self.run_setup(
            [
                installer,
                "--no-defaults",
                f"--datadir={self.data_dir}",
                *self._user_flag(),
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ]
        )
        if self.password is not None:
            init = self.root / "init.sql"
            secret = self.password.replace("'", "''")
            init.write_text(
                f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{secret}';\n"
                f"CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '{secret}';\n"
                "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;\n"
            )
            self._chown(init)
            self.extra_args.insert(0, f"--init-file={init}")

    def command(self) -> list[str]:
        server = _find("mariadbd", "/usr/sbin", "/usr/bin")
        assert server is not None
        return [
            server, "--no-defaults", f"--datadir={self.data_dir}", *self._user_flag(),
            f"--port={self.port}", f"--bind-address={HOST}", f"--socket={self.socket_path}",
            f"--pid-file={self.root / 'mariadbd.pid'}", "--skip-log-bin",
            "--innodb-buffer-pool-size=64M", "--max-connections=200",
        ]  # fmt: skip

    def ready(self) -> bool:
        import pymysql

        try:
            conn = pymysql.connect(
                host=HOST, port=self.port, user=self.user, password=self.password or "",
                connect_timeout=2, read_timeout=5, write_timeout=5,
            )  # fmt: skip
        except pymysql.Error:
            return False
        conn.close()
        return True

    def url(self, database: str = "mysql", driver: str = "pymysql") -> str:
        """A SQLAlchemy URL for ``database`` (utf8mb4)."""
        secret = f":{quote(self.password, safe='')}" if self.password else ""
        return f"mysql+{driver}://{self.user}{secret}@{HOST}:{self.port}/{database}?charset=utf8mb4"

    def create_database(self, name: str) -> str:
        """Create ``name`` (if missing) and return its SQLAlchemy URL."""
        import pymysql

        conn = pymysql.connect(
            host=HOST, port=self.port, user=self.user, password=self.password or ""
        )
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{name}`")
        finally:
            conn.close()
        return self.url(name)


class RedisServer(ServerProcess):
    """A ``redis-server`` of its own, with or without AOF.

    With ``appendonly=True``, ``appendfsync`` says when Redis flushes the AOF:
    ``always`` before every reply (an acknowledged write survives a kill -9),
    ``everysec`` once a second (a kill -9 can lose the last second of acknowledged writes;
    a graceful `stop` loses nothing), ``no`` when the OS decides. RDB snapshots are off.
    `stop` is SIGTERM, which Redis treats as SHUTDOWN (it flushes the AOF first).

    Args:
        appendonly: Keep an append-only file in the server's directory.
        appendfsync: ``always``, ``everysec`` or ``no``.
        password: ``requirepass`` (None: no auth).
        **kwargs: See `ServerProcess`.
    """

    kind = "redis"

    def __init__(
        self,
        root: Path | None = None,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(root, **kwargs)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.password = password

    @classmethod
    def missing(cls) -> str | None:
        return None if shutil.which("redis-server") else "redis-server not on PATH"

    def command(self) -> list[str]:
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", HOST, "--dir", str(self.root),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
        ]  # fmt: skip
        if self.password is not None:
            command += ["--requirepass", self.password]
        return command

    def ready(self) -> bool:
        import redis

        client = redis.Redis(
            host=HOST, port=self.port, password=self.password, socket_timeout=2,
            socket_connect_timeout=2,
        )  # fmt: skip
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def url(self, db: int = 0) -> str:
        """A ``redis://`` URL for database ``db``."""
        secret = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{secret}{HOST}:{self.port}/{db}"


class Blackhole:
    """A TCP server that accepts every connection and never reads or answers.

    Clients connect at once, then wait on their first reply until their own timeout. Use as
    a context manager; `close` drops every held connection.
    """

    def __init__(self, port: int | None = None) -> None:
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((HOST, port or 0))
        self._sock.listen(128)
        self.port = int(self._sock.getsockname()[1])
        self.held: list[socket.socket] = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="blackhole")
        self._thread.start()

    @property
    def accepted(self) -> int:
        """How many connections were accepted so far."""
        return len(self.held)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._thread.join(5)
        for conn in self.held:
            conn.close()

    def __enter__(self) -> Blackhole:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _user_exists(name: str | None) -> bool:
    if name is None:
        return True
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


SERVERS: dict[str, type[ServerProcess]] = {
    cls.kind: cls for cls in (PostgresServer, MariaDBServer, RedisServer)
}

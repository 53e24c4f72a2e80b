"""Private SQL servers: a PostgreSQL cluster and a MariaDB server of the test's own."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ._base import HOST, ServerProcess, find_binary, user_exists


def _pg_bin() -> Path | None:
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    root = Path("/usr/lib/postgresql")
    majors = sorted((p for p in root.glob("*/bin") if (p / "postgres").exists()), reverse=True)
    preferred = root / "15" / "bin"
    return preferred if preferred in majors else (majors[0] if majors else None)


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
        if os.geteuid() == 0 and not user_exists(cls.run_as):
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
            if find_binary(name, "/usr/sbin", "/usr/bin") is None:
                return f"{name} not found"
        if os.geteuid() == 0 and not user_exists(cls.run_as):
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
        installer = find_binary("mariadb-install-db", "/usr/bin", "/usr/sbin")
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
        server = find_binary("mariadbd", "/usr/sbin", "/usr/bin")
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

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
- `MotoServer`: ``moto_server``, DynamoDB's API in memory (a stalled endpoint when paused).
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

from ._base import HOST, ServerError, ServerProcess, accepts, free_port
from .blackhole import Blackhole
from .moto import MotoServer
from .redis import RedisServer
from .sql import MariaDBServer, PostgresServer

__all__ = [
    "HOST",
    "SERVERS",
    "Blackhole",
    "MariaDBServer",
    "MotoServer",
    "PostgresServer",
    "RedisServer",
    "ServerError",
    "ServerProcess",
    "accepts",
    "free_port",
]

SERVERS: dict[str, type[ServerProcess]] = {
    cls.kind: cls for cls in (PostgresServer, MariaDBServer, RedisServer)
}

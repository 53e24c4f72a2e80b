"""A private ``redis-server``, with or without AOF and a password."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ._base import HOST, ServerProcess

if TYPE_CHECKING:
    from pathlib import Path


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

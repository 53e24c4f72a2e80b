"""A private moto server process: DynamoDB's API on a free loopback port, as a stalled endpoint.

Unlike the in-process server of ``tests/kits/dynamodb.py``, this one is a process of its own,
so a test can freeze it with SIGSTOP: the kernel still accepts connections and takes the
request, nothing answers (a stalled endpoint).
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from ._base import HOST, ServerProcess


class MotoServer(ServerProcess):
    """``moto_server`` (moto's standalone server) on its own port; state lives in memory."""

    kind = "moto"

    @staticmethod
    def _binary() -> str | None:
        beside = Path(sys.executable).with_name("moto_server")
        return str(beside) if beside.is_file() else shutil.which("moto_server")

    @classmethod
    def missing(cls) -> str | None:
        return None if cls._binary() else "moto_server (moto[server]) is not installed"

    def command(self) -> list[str]:
        return [self._binary() or "moto_server", "-H", HOST, "-p", str(self.port)]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    @property
    def endpoint(self) -> str:
        """The ``endpoint_url`` of the server."""
        return f"http://{HOST}:{self.port}"

"""Writer subprocesses (`tests.reliability._worker`) seen from the test: spawn, read, kill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._workload import Ledger

REPO = Path(__file__).resolve().parents[2]


class WriterProcess:
    """One writer process; every line it prints lands in a shared `Ledger` as it arrives.

    Args:
        url: Store URL for `open_checkpointer`.
        options: Its keyword options (JSON-serialisable: namespace, credentials...).
        threads: Thread ids the writer increments.
        limit: Version at which the writer leaves a thread alone.
        writer: The writer's name.
        ledger: Where acknowledgements, errors and untyped exceptions go.
        seed: Seed of the writer's choice of thread.
    """

    def __init__(
        self,
        url: str,
        options: dict[str, Any],
        threads: list[str],
        limit: int,
        writer: str,
        ledger: Ledger,
        seed: int = 0,
    ) -> None:
        spec = {
            "url": url,
            "options": options,
            "threads": threads,
            "limit": limit,
            "writer": writer,
            "seed": seed,
        }
        self.ledger = ledger
        self.acked = 0
        self.done: tuple[int, int] | None = None
        self.killed = False
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability._worker", json.dumps(spec)],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )
        self._acked = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"read-{writer}")
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            word, _, rest = line.rstrip("\n").partition(" ")
            if word == "ack":
                thread_id, _, version = rest.rpartition(" ")
                self.ledger.ack(thread_id, int(version))
                self.acked += 1
                self._acked.set()
            elif word == "error":
                self.ledger.errors[rest] += 1
            elif word == "untyped":
                self.ledger.untyped.append(rest)
            elif word == "done":
                wins, conflicts = rest.split()
                self.done = (int(wins), int(conflicts))
                self.ledger.conflicts += int(conflicts)

    def wait_first_ack(self, timeout: float) -> bool:
        """Block until the writer acknowledged at least one save (or ``timeout`` passes)."""
        return self._acked.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, whatever the writer is doing; then collect what it printed."""
        if self.process.poll() is None:
            self.process.kill()
            self.killed = True
        self.wait(30)

    def wait(self, timeout: float) -> int:
        """Wait for the writer to exit and its output to be read; its exit code."""
        try:
            code = self.process.wait(timeout)
        finally:
            self._reader.join(timeout)
        return code

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-3000:]

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

"""What every private server shares: ports, the process group, stop/kill/pause/resume."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

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


def find_binary(name: str, *dirs: str) -> str | None:
    for directory in dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)


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
        self._signal_all(signal.SIGKILL)
        self.paused = False
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(30)
        self._wait_group_gone(30)
        self.process = None

    def descendants(self) -> list[int]:
        """The server's process and every process below it (read from ``/proc``).

        PostgreSQL backends call ``setsid()``, so they leave the server's process group: a
        signal to the group alone would stop the postmaster and leave every backend answering.
        """
        if self.process is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces and parentheses.
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, ()))
        return found

    def _signal_all(self, sig: signal.Signals) -> None:
        self._signal_group(sig)
        for pid in self.descendants():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def pause(self) -> None:
        """SIGSTOP to the server and all its descendants: connections stay open, nothing answers.

        The kernel still accepts connections and acknowledges bytes sent (a hung server).
        """
        self._signal_all(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        """SIGCONT to the server and all its descendants after `pause`."""
        if self.paused:
            self._signal_all(signal.SIGCONT)
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


def user_exists(name: str | None) -> bool:
    if name is None:
        return True
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True

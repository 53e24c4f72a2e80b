"""Behaviour that only shows on a terminal: the delete confirmation and progress bars."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from .conftest import seed, snapshot_of

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from .conftest import Target

    Make = Callable[[str], Target]

pty = pytest.importorskip("pty", reason="needs a pseudo-terminal (POSIX)")


def on_terminal(args: list[str], typed: bytes = b"") -> tuple[int, str]:
    """Run the command with a pseudo-terminal as stdin, stdout and stderr; type ``typed``."""
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTS_PERSISTENCE_URL", "CI")}
    env.update(COLUMNS="120", TERM="xterm")
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "agents_persistence", *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=env,
        close_fds=True,
    )
    os.close(follower)
    if typed:
        os.write(leader, typed)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the command exited and closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    return process.wait(timeout=120), output.decode("utf-8", errors="replace")


def test_delete_asks_on_a_terminal(make: Make) -> None:
    target = make("sqlite")
    seed(target, 2)
    code, output = on_terminal(["threads", "delete", "thread-00", *target.args], b"n\n")
    assert code == 1
    assert "Delete thread 'thread-00'" in output
    assert "error:" not in output  # a "no" is an answer, not a failure
    assert "thread-00" in snapshot_of(target)
    code, output = on_terminal(["threads", "delete", "thread-00", *target.args], b"y\n")
    assert code == 0, output
    assert "deleted thread 'thread-00'" in output
    assert sorted(snapshot_of(target)) == ["thread-01"]


def test_import_shows_progress_on_a_terminal(make: Make, tmp_path: Path) -> None:
    source, target = make("sqlite"), make("sqlite")
    seed(source, 3)
    dump = tmp_path / "three.jsonl"
    code, output = on_terminal(["export", "--output", str(dump), *source.args])
    assert code == 0, output
    code, output = on_terminal(["import", str(dump), *target.args])
    assert code == 0, output
    assert "importing" in output
    assert "3/3" in output
    assert "imported 3 threads" in output

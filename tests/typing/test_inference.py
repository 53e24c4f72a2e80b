"""Typing: mypy (strict, the project's configuration) on ``inference.py``.

The snippet holds ``assert_type`` lines for every store's constructor and ``from_url``, sync and
async, and for `open_checkpointer`; a ``# E: <message>`` comment line says the next line must get
that error (a misspelt keyword, a state type that does not match). The test fails on any other
error, and on an announced error that no longer comes: an inference regression or a signature
that accepts anything again is caught.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SNIPPET = Path(__file__).with_name("inference.py")
_ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


def expected_errors() -> set[tuple[int, str]]:
    lines = SNIPPET.read_text().splitlines()
    # A "# E: <message>" comment line announces the error of the line after it.
    return {
        (number + 1, line.strip().removeprefix("# E: "))
        for number, line in enumerate(lines, start=1)
        if line.strip().startswith("# E: ")
    }


def mypy_errors() -> tuple[set[tuple[int, str]], str]:
    # The snippet must see this checkout's sources, not whatever is installed.
    env = {**os.environ, "MYPYPATH": str(ROOT / "src")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--no-error-summary",
            "--hide-error-context",
            "--show-error-codes",
            str(SNIPPET.relative_to(ROOT)),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode not in (0, 1) or done.stderr.strip():
        pytest.fail(f"mypy did not run: {done.returncode}\n{done.stderr}{done.stdout}")
    found = set()
    for line in done.stdout.splitlines():
        match = _ERROR.match(line)
        if match:
            found.add((int(match["line"]), match["message"].strip()))
    return found, done.stdout


@pytest.mark.timeout(600)
def test_mypy_infers_the_state_type_and_refuses_misspelt_keywords() -> None:
    expected = expected_errors()
    # The snippet covers every store, both twins and open_checkpointer, and its typos.
    assert len(expected) >= 7
    found, output = mypy_errors()
    assert found - expected == set(), f"unexpected mypy errors:\n{output}"
    assert expected - found == set(), f"mypy no longer reports:\n{output}"

"""``demo``: a scripted agent that resumes where it stopped, on every store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from agents_persistence import AgentStateSnapshot
from agents_persistence.cli.demo import TURN_KEY, play_turn

from .conftest import Invoke, Target, _has_store

if TYPE_CHECKING:
    from pathlib import Path


def test_demo_twice_resumes(cli: Invoke, target: Target) -> None:
    first = cli("demo", "--turns", "3", "--thread", "t1", "--json", *target.args)
    assert first.exit_code == 0, first.output
    one = json.loads(first.stdout)
    assert one["resumed_from_version"] == 0
    assert [t["turn"] for t in one["turns"]] == [1, 2, 3]
    assert [t["saved_version"] for t in one["turns"]] == [1, 2, 3]
    assert [t["loaded_version"] for t in one["turns"]] == [0, 1, 2]
    assert one["turns"][2]["raised_interrupt"] == "call-3"
    assert one["conflict"]["expected_version"] == 2
    assert "expected version 2, found version 3" in one["conflict"]["error"]
    assert one["final"]["version"] == 3
    assert [t["thread_id"] for t in one["threads"]] == ["t1"]

    second = cli("demo", "--turns", "2", "--thread", "t1", "--json", *target.args)
    assert second.exit_code == 0, second.output
    two = json.loads(second.stdout)
    assert two["resumed_from_version"] == 3
    assert [t["turn"] for t in two["turns"]] == [4, 5]
    assert [t["saved_version"] for t in two["turns"]] == [4, 5]
    assert two["turns"][0]["resolved_interrupt"] == "call-3"
    assert two["final"]["version"] == 5

    with target.open() as checkpointer:
        checkpoint = checkpointer.load_checkpoint("t1")
    assert checkpoint.info.version == 5
    state = checkpoint.state
    assert state.scratchpad[TURN_KEY] == 5
    assert state.scratchpad["approved_calls"] == ["call-3"]
    assert [todo.status for todo in state.todos] == ["completed"] * 4 + ["in_progress"]
    assert state.pending_interrupts == []
    # Two messages a turn, plus the tool result that resolved the interrupt.
    assert len(state.messages) == 11
    # The rejected stale writer left no trace.
    assert "written_by" not in state.scratchpad


def test_demo_on_the_default_sqlite_file(cli: Invoke, tmp_path: Path) -> None:
    if not _has_store("sql"):
        pytest.skip("the SQL store is not built yet")
    first = cli("demo", "--turns", "4")
    assert first.exit_code == 0, first.output
    path = tmp_path / "agents-persistence.sqlite3"
    assert path.is_file()
    assert f"using the SQLite file {path}" in first.stderr
    assert "turn 3: loaded version 2, saved version 3\n" in first.stdout
    assert "  agent  asks a human to approve send_email (call-3), waits\n" in first.stdout
    assert "turn 4: loaded version 3, saved version 4\n  human  approves call-3\n" in first.stdout
    assert "a second writer still holding version 3 tries to save: rejected" in first.stdout
    assert "ConflictError: thread 'demo': expected version 3, found version 4" in first.stdout
    assert f"in SQLite file {path}, table agent_checkpoints, namespace 'default'" in first.stdout
    assert "resuming" not in first.stdout

    second = cli("demo", "--turns", "2")
    assert second.exit_code == 0, second.output
    assert "resuming after turn 4 (version 4)" in second.stdout
    assert "turn 5: loaded version 4, saved version 5" in second.stdout
    assert "turn 6: loaded version 5, saved version 6" in second.stdout
    assert "waiting for approval of call-6" in second.stdout
    assert "run the demo again to resume at turn 7" in second.stdout


def test_demo_in_memory_runs_but_keeps_nothing(cli: Invoke) -> None:
    for _ in range(2):
        result = cli("demo", "--url", "memory://", "--turns", "2", "--json")
        assert result.exit_code == 0, result.output
        data = json.loads(result.stdout)
        assert data["resumed_from_version"] == 0
        assert [t["saved_version"] for t in data["turns"]] == [1, 2]


def _env(tmp_path: Path, **changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTS_PERSISTENCE_URL"}
    env["AGENTS_PERSISTENCE_URL"] = f"sqlite:///{tmp_path / 'env.sqlite3'}"
    return {**env, **changes}


def _hint(stdout: str) -> str:
    """The command the demo says to inspect the thread with."""
    lines = stdout.splitlines()
    position = lines.index(next(line for line in lines if line.endswith("inspect with")))
    return lines[position + 1].strip()


def _run_hint(hint: str, cwd: Path, env: dict[str, str]) -> None:
    """Run the hint exactly as printed, through a shell, from where the demo ran."""
    shown = subprocess.run(
        f"{hint} --json", shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0, (hint, shown.stderr)
    assert json.loads(shown.stdout)["thread_id"] == "demo"


def test_demo_as_a_real_process(tmp_path: Path) -> None:
    if not _has_store("sql"):
        pytest.skip("the SQL store is not built yet")
    env = _env(tmp_path)
    command = [sys.executable, "-m", "agents_persistence", "demo", "--turns", "2"]
    runs = [
        subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        for _ in range(2)
    ]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert "turn 2: loaded version 1, saved version 2" in runs[0].stdout
    assert "resuming after turn 2 (version 2)" in runs[1].stdout
    assert "turn 4: loaded version 3, saved version 4" in runs[1].stdout
    # The URL came from the environment: no default file, and nothing said about one.
    assert not (tmp_path / "agents-persistence.sqlite3").exists()
    assert "using the SQLite file" not in runs[0].stderr
    # Started with python -m, it says to inspect with python -m, this very interpreter.
    hint = _hint(runs[1].stdout)
    assert hint.endswith(" -m agents_persistence threads show demo"), hint
    _run_hint(hint, tmp_path, env)


def _launcher(directory: Path) -> Path:
    """An ``agents-persistence`` script like the one pip installs in ``<venv>/bin``."""
    directory.mkdir(parents=True)
    script = directory / "agents-persistence"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from agents_persistence.cli import main\n"
        "sys.exit(main())\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("on_path", [False, True], ids=["as-make-runs-it", "on-path"])
def test_the_demo_hint_works_as_printed(tmp_path: Path, on_path: bool) -> None:
    if not _has_store("sql"):
        pytest.skip("the SQL store is not built yet")
    script = _launcher(tmp_path / ".venv" / "bin")
    path = os.environ.get("PATH", "")
    if on_path:
        env = _env(tmp_path, PATH=f"{script.parent}{os.pathsep}{path}")
        command = ["agents-persistence", "demo", "--turns", "1"]
        expected = "agents-persistence threads show demo"
    else:
        # What `make demo` does: the script by its path, with .venv/bin not on PATH.
        env = _env(tmp_path)
        command = [".venv/bin/agents-persistence", "demo", "--turns", "1"]
        expected = ".venv/bin/agents-persistence threads show demo"
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert _hint(run.stdout) == expected
    _run_hint(expected, tmp_path, env)


def test_turns_raise_and_resolve_interrupts() -> None:
    state = AgentStateSnapshot()
    now = datetime(2026, 1, 1, tzinfo=UTC)
    played = [play_turn(state, now) for _ in range(7)]
    assert [turn.number for turn in played] == [1, 2, 3, 4, 5, 6, 7]
    assert [turn.raised for turn in played] == [None, None, "call-3", None, None, "call-6", None]
    assert [turn.resolved for turn in played] == [None, None, None, "call-3", None, None, "call-6"]
    assert state.pending_interrupts == []
    assert state.scratchpad["approved_calls"] == ["call-3", "call-6"]
    assert len(state.files) == 6  # the script has six files; turn 7 rewrites the first
    assert state.files["notes/tickets.md"].endswith(
        "Written on turn 7 while working on: group tickets by product.\n"
    )

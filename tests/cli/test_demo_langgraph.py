"""``demo --langgraph``: the scripted deep agent stops at its interrupt, the next run resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from agents_persistence.cli import _deep_agent
from agents_persistence.langgraph import SQLCheckpointSaver

from .conftest import Invoke, make_target

if TYPE_CHECKING:
    from pathlib import Path


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTS_PERSISTENCE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "agents_persistence", "demo", "--langgraph", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_stops_at_the_interrupt_and_the_next_process_resumes(cli: Invoke, tmp_path: Path) -> None:
    first = _demo(tmp_path)
    assert first.returncode == 0, first.stderr
    path = tmp_path / "agents-persistence.sqlite3"
    assert f"using the SQLite file {path}" in first.stderr
    out = first.stdout
    assert "deep agent on thread 'demo': a new run\n" in out
    assert "  agent  calls write_todos (3 todos)\n" in out
    assert "  agent  calls write_file /notes/tickets.md\n" in out
    assert "  agent  waits for a human to approve send_email\n" in out
    assert "3 todos (0 completed), 1 file, 6 messages, 1 interrupt in history" in out
    assert "run it again to approve the call and let the agent finish:" in out
    assert out.rstrip().endswith(" -m agents_persistence demo --langgraph")
    assert "Done:" not in out

    second = _demo(tmp_path)
    assert second.returncode == 0, second.stderr
    out = second.stdout
    assert "resuming at the interrupt the last run left" in out
    assert "  human  approves send_email (interrupt " in out
    assert "  tool   send_email: sent 'Support tickets, last week' to team@example.com" in out
    assert "  agent  Done: the summary is in /notes/tickets.md and went to the team.\n" in out
    assert "3 todos (3 completed), 1 file, 10 messages, 1 interrupt in history" in out
    assert "run it again" not in out

    third = cli("demo", "--langgraph")  # in this process, from the same directory
    assert third.exit_code == 0, third.output
    assert "this run already finished" in third.stdout
    assert "start another run with --thread NEW" in third.stdout

    # What the two processes left is the whole scripted run, as on InMemorySaver.
    with SQLCheckpointSaver.from_url(f"sqlite:///{path}") as saver:
        stored = _deep_agent.transcript(_deep_agent.build_agent(saver), "demo")
    assert stored["pending"] == []
    assert [todo["status"] for todo in stored["todos"]] == ["completed"] * 3
    assert list(stored["files"]) == [_deep_agent.REPORT_PATH]


@pytest.mark.parametrize("store", ["sqlite", "postgresql", "mariadb"])
def test_json_reports_each_phase(
    cli: Invoke, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = make_target(store, tmp_path, monkeypatch)
    thread = f"deep-{target.namespace}"
    try:
        phases = []
        for _ in range(3):
            result = cli("demo", "--langgraph", "--thread", thread, "--url", target.url, "--json")
            assert result.exit_code == 0, result.output
            phases.append(json.loads(result.stdout))
    finally:
        with SQLCheckpointSaver.from_url(target.url) as saver:
            saver.delete_thread(thread)
    first, second, third = phases
    assert [p["phase"] for p in phases] == ["interrupted", "finished", "already finished"]
    assert [p["resumed"] for p in phases] == [False, True, False]
    [request] = first["pending"]
    assert [a["name"] for a in request["action_requests"]] == ["send_email"]
    assert [t["status"] for t in first["todos"]] == ["in_progress", "pending", "pending"]
    assert first["files"][_deep_agent.REPORT_PATH]["content"].startswith("# Support tickets")
    assert second["pending"] == []
    assert [t["status"] for t in second["todos"]] == ["completed"] * 3
    assert (first["messages"], second["messages"]) == (6, 10)
    assert [m["type"] for m in second["new_messages"]] == ["tool", "ai", "tool", "ai"]
    assert second["interrupts_in_history"] == 1
    assert second["checkpoints"] > first["checkpoints"]
    assert third["new_messages"] == []
    assert {k: v for k, v in third.items() if k not in ("phase", "new_messages", "resumed")} == {
        k: v for k, v in second.items() if k not in ("phase", "new_messages", "resumed")
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--url", "memory://"], "demo --langgraph runs on SQL URLs"),
        (["--url", "redis://127.0.0.1:6379/0"], "demo --langgraph runs on SQL URLs"),
        (["--namespace", "other"], "keys checkpoints by thread only: drop --namespace"),
    ],
)
def test_what_it_does_not_run_on(cli: Invoke, args: list[str], message: str) -> None:
    result = cli("demo", "--langgraph", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def _without(blocked: list[str], tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A None entry in sys.modules makes an import fail as if the package were not installed.
    probe = (
        f"import sys; sys.modules.update(dict.fromkeys({blocked!r}))\n"
        "from agents_persistence.cli import main\n"
        f"main({list(args)!r})"
    )
    return subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_deepagents_it_says_what_to_install(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    done = _without(["deepagents"], tmp_path, "demo", "--langgraph", "--url", url)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "error: MissingExtraError: demo --langgraph needs deepagents:"
        " pip install 'agents-persistence[deepagents]'"
    )


def test_the_plain_demo_needs_neither_deepagents_nor_langgraph(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    blocked = ["deepagents", "langgraph", "langchain", "langchain_core"]
    done = _without(blocked, tmp_path, "demo", "--turns", "1", "--url", url)
    assert done.returncode == 0, done.stderr
    assert "turn 1: loaded version 0, saved version 1" in done.stdout

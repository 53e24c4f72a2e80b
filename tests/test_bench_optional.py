"""``python -m bench`` without the bench extra: each missing part is reported and skipped.

The benchmark runs in a subprocess whose imports of matplotlib, pyinstrument, LangGraph's SQLite
and PostgreSQL savers, boto3 and the OpenTelemetry SDK fail, on the in-memory store (plus
DynamoDB, which is skipped before its server starts), with the quick sections that involve them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = (
    "matplotlib",
    "pyinstrument",
    "langgraph.checkpoint.sqlite",
    "langgraph.checkpoint.postgres",
    "boto3",
    "opentelemetry.sdk",
)
# Every import of a blocked module (or of one inside it) fails, as if it were not installed.
RUNNER = """
import runpy
import sys
from importlib.abc import MetaPathFinder

BLOCKED = {blocked!r}


class Block(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
        return None


sys.meta_path.insert(0, Block())
sys.argv = ["python -m bench", *{argv!r}]
runpy.run_module("bench", run_name="__main__", alter_sys=True)
"""


def test_bench_without_optional_dependencies_reports_and_skips(tmp_path: Path) -> None:
    argv = [
        "--quick",
        "--stores",
        "memory,dynamodb",
        "--sections",
        "turns,conversation,telemetry,profile",
        "--out",
        str(tmp_path),
    ]
    (tmp_path / "latest.png").write_bytes(b"a chart of an earlier run")
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER.format(blocked=BLOCKED, argv=argv)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    skipped = "\n".join(results["skipped"])
    for package in (
        "matplotlib",
        "pyinstrument",
        "langgraph-checkpoint-sqlite",
        "langgraph-checkpoint-postgres",
        "opentelemetry-sdk",
        "boto3",
    ):
        assert package in skipped, f"{package} missing from the recorded skips:\n{skipped}"
        assert package in proc.stdout, f"{package} missing from the printed skips"
    assert results["stores"] == ["memory"]
    assert not (tmp_path / "latest.png").exists(), "a chart of another run was left beside"

    # What does not need them still ran: LangGraph's in-memory family and the conversation,
    # whose bytes-written column says why it is empty.
    assert [r["saver"] for r in results["turns"]] == ["ours (memory)", "InMemorySaver"]
    (row,) = results["conversation"]
    assert row["reached"] == row["turns"]
    assert row["written"].startswith("n/a (opentelemetry-sdk not installed")
    latest = (tmp_path / "latest.md").read_text()
    assert "opentelemetry-sdk not installed" in latest
    assert (tmp_path / "conversation.md").exists()


def test_latest_md_quotes_nothing_but_its_own_run(tmp_path: Path) -> None:
    """The generated report points at the hand-written notes instead of copying them in."""
    from bench import report

    results = {
        "env": {
            "date": "2026-01-01 00:00 UTC",
            "command": "python -m bench",
            "cpu": "cpu",
            "cores": 2,
            "memory": "1 GiB RAM",
            "os": "os",
            "python": "3",
            "commit": "abc",
            "versions": {},
            "servers": {},
            "duration_s": 1.0,
        },
        "settings": {"quick": True, "reps": 1, "turn_reps": 1, "throughput_reps": 1},
        "skipped": [],
        "stores": [],
    }
    latest = report.markdown(results)
    notes = (ROOT / "bench" / "NOTES.md").read_text().splitlines()
    quoted = [line for line in notes if len(line) > 30 and line in latest]
    assert quoted == []
    assert "bench/NOTES.md" in latest


def test_conversation_reads_the_bytes_each_save_wrote() -> None:
    """The section's measuring pass finds the library's write.size metric, one value a save."""
    from bench import conversation

    from agents_persistence import MemoryCheckpointer, telemetry

    steps = conversation.workload(12)
    was_enabled = telemetry.is_enabled()
    with MemoryCheckpointer() as cp:
        written, status = conversation.measuring_pass(cp, "t", steps)
    assert status == "measured"
    assert len(written) == len(steps)
    assert all(size > 0 for size in written)
    assert telemetry.is_enabled() == was_enabled

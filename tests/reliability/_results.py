"""Figures the reliability tests measured, shown after the run and written to RESULTS.md.

Only the long run (``make reliability``) writes the file; a quick run prints its figures in
the terminal summary.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

RESULTS_PATH = Path(__file__).with_name("RESULTS.md")

NOTES = """\
How to read this:

- *acked* counts saves that returned a `CheckpointInfo` to the caller. *lost* counts threads
  whose stored version, read back at the end, was below the highest version acknowledged for
  it: it must be 0. *duplicate wins* counts (thread, version) pairs acknowledged to two
  writers: it must be 0. *inconsistent* counts threads whose stored counter differs from their
  version (every save adds 1 to both): it must be 0.
- *typed errors* are exceptions under `CheckpointerError` (conflicts are counted apart);
  *untyped* are any others, and must be 0.
- *recovery* is the time from the restarted server first answering a request of its own
  (PostgreSQL and MariaDB: a login; Redis: PING) to the end of the first successful
  increment (a load, then a save) by the checkpointer that lived through the outage. The load
  loop pauses 20 ms after an error, so figures below that resolution mean "the next call
  worked".
- Durability settings: PostgreSQL 15 with its defaults (`fsync=on`, `synchronous_commit=on`);
  MariaDB with InnoDB's default `innodb_flush_log_at_trx_commit=1`; Redis with
  `appendonly yes` and `appendfsync always` for kill -9 (every write is flushed to the AOF
  before Redis replies, so an acknowledged write survives the crash of the server process),
  and `appendfsync everysec` for graceful restarts (SIGTERM makes Redis flush the AOF on
  shutdown; a kill -9 under `everysec` may lose up to a second of acknowledged writes, which
  is Redis's documented trade-off, not this library's). Redis without persistence loses every
  key on restart by design and is not tested for durability here.
- Nothing here is a pass/fail threshold on time: the tests assert the counts; the times are
  what this machine measured.
"""


@dataclass
class Results:
    """Rows per section, in the order tests added them.

    `write` merges into the existing file: a row replaces the earlier row with the same first
    two cells (the store or case, and the mode or writers), others are kept, and the ``run``
    column says when each row was measured. So a partial long run (``-k``) refreshes its rows
    without dropping the rest.
    """

    sections: dict[str, list[dict[str, object]]] = field(default_factory=dict)
    long_run: bool = False
    outcome: str = ""
    started: str = field(default_factory=lambda: f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")

    def add(self, section: str, **row: object) -> None:
        self.sections.setdefault(section, []).append({**row, "run": self.started})

    def render(self, command: str, earlier: str = "") -> str:
        old_sections, old_runs = _parse(earlier)
        sections = dict(old_sections)
        for section, rows in self.sections.items():
            merged = {_key(row): row for row in sections.get(section, [])}
            merged.update({_key(row): row for row in rows})
            sections[section] = list(merged.values())
        runs = [*old_runs, f"{self.started}: {self.outcome or 'outcome not recorded'}"]
        lines = [
            "# Reliability results",
            "",
            f"Written by `{command}`; the `run` column says when each row was measured.",
            "",
            f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {_versions()}.",
            "",
            "## Runs",
            "",
            *(f"- {run}" for run in runs),
            "",
        ]
        for section, rows in sections.items():
            lines += [f"## {section}", "", *_table(rows), ""]
        lines += ["## Notes", "", NOTES]
        return "\n".join(lines)

    def write(self, command: str, path: Path = RESULTS_PATH) -> Path:
        earlier = path.read_text() if path.exists() else ""
        path.write_text(self.render(command, earlier))
        return path


def _key(row: dict[str, object]) -> tuple[str, ...]:
    return tuple(str(value) for value in list(row.values())[:2])


def _parse(text: str) -> tuple[dict[str, list[dict[str, object]]], list[str]]:
    """Sections and runs of an earlier RESULTS.md (as `render` writes it)."""
    sections: dict[str, list[dict[str, object]]] = {}
    runs: list[str] = []
    section = ""
    header: list[str] = []
    written = ""
    for line in text.splitlines():
        if line.startswith("Written by") and " on " in line:  # a file without a run column
            written = line.rsplit(" on ", 1)[1].rstrip(".")
        elif line.startswith("Tests: ") and written:
            runs.append(f"{written}: {line.removeprefix('Tests: ').rstrip('.')}")
        elif line.startswith("## "):
            section, header = line[3:], []
        elif section == "Runs" and line.startswith("- "):
            runs.append(line[2:])
        elif section not in ("", "Runs", "Notes") and line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if not header:
                header = cells
            elif not line.startswith("|---"):
                row: dict[str, object] = dict(zip(header, cells, strict=False))
                if written and "run" not in row:
                    row["run"] = written
                sections.setdefault(section, []).append(row)
    return sections, runs


def seconds(values: list[float]) -> str:
    """``median / max`` of durations, in seconds."""
    if not values:
        return "-"
    return f"{statistics.median(values):.3f} / {max(values):.3f}"


def _table(rows: list[dict[str, object]]) -> list[str]:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return out


def _versions() -> str:
    found = []
    for label, command in (
        ("PostgreSQL", ["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        ("MariaDB", [shutil.which("mariadbd") or "/usr/sbin/mariadbd", "--version"]),
        ("Redis", [shutil.which("redis-server") or "redis-server", "--version"]),
    ):
        try:
            text = subprocess.run(command, capture_output=True, text=True, timeout=10).stdout
        except OSError:
            continue
        words = text.split()
        version = next((w for w in words if w[:1].isdigit() or w.startswith("v=")), "?")
        found.append(f"{label} {version.removeprefix('v=').split('-')[0]}")
    return ", ".join(found)

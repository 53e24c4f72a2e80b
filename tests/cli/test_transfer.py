"""``export``, ``import`` and ``copy`` between different stores: identical states and versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from .conftest import Invoke, Target, put_expired, sample_state, seed, snapshot_of

if TYPE_CHECKING:
    from pathlib import Path

Make = Callable[[str], Target]

PAIRS = [
    ("sqlite", "postgresql"),
    ("postgresql", "sqlite"),
    ("mariadb", "sqlite"),
    ("sqlite", "redis"),
    ("redis", "dynamodb"),
    ("dynamodb", "postgresql"),
]


def counts(result_stdout: str) -> tuple[int, int, int]:
    data = json.loads(result_stdout)
    return data["written"], data["skipped"], data["expired"]


@pytest.mark.parametrize(("source_name", "target_name"), PAIRS)
def test_export_import_round_trip(
    cli: Invoke, make: Make, tmp_path: Path, source_name: str, target_name: str
) -> None:
    source, target = make(source_name), make(target_name)
    seed(source, 5)
    put_expired(source, "expired-thread")
    dump = tmp_path / "threads.jsonl"

    exported = cli("export", "--output", str(dump), *source.args)
    assert exported.exit_code == 0, exported.output
    assert f"exported 5 threads from namespace '{source.namespace}'" in exported.stdout
    lines = dump.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["format"] == "agents-persistence-export"
    assert header["version"] == 1
    assert header["namespace"] == source.namespace
    assert len(lines) == 6
    first = json.loads(lines[1])
    assert set(first) == {
        "thread_id",
        "version",
        "created_at",
        "updated_at",
        "expires_at",
        "size",
        "state",
    }

    imported = cli("import", str(dump), "--json", *target.args)
    assert imported.exit_code == 0, imported.output
    assert counts(imported.stdout) == (5, 0, 0)
    assert snapshot_of(target) == snapshot_of(source)

    rerun = cli("import", str(dump), "--json", *target.args)
    assert counts(rerun.stdout) == (0, 5, 0)
    assert snapshot_of(target) == snapshot_of(source)

    # The source moves on for one thread; the target holds a newer copy of another.
    with source.open() as checkpointer:
        checkpointer.save_state("thread-02", sample_state(500))
    with target.open() as checkpointer:
        checkpointer.save_state("thread-03", sample_state(600))
        checkpointer.save_state("thread-03", sample_state(601))
    assert cli("export", "--output", str(dump), *source.args).exit_code == 0
    third = cli("import", str(dump), *target.args)
    assert third.exit_code == 0, third.output
    assert "imported 5 threads" in third.stdout
    assert "1 written, 4 skipped (already up to date)" in third.stdout
    after, before = snapshot_of(target), snapshot_of(source)
    assert after["thread-02"] == before["thread-02"]
    assert after["thread-03"][0] == sample_state(601).model_dump(mode="json")
    assert {tid: v for tid, v in after.items() if tid != "thread-03"} == {
        tid: v for tid, v in before.items() if tid != "thread-03"
    }


@pytest.mark.parametrize(("source_name", "target_name"), PAIRS)
def test_copy_round_trip(cli: Invoke, make: Make, source_name: str, target_name: str) -> None:
    source, target = make(source_name), make(target_name)
    seed(source, 4)
    copied = cli(
        "copy", "--to", target.url, "--to-namespace", target.namespace, "--json", *source.args
    )
    assert copied.exit_code == 0, copied.output
    assert counts(copied.stdout) == (4, 0, 0)
    assert snapshot_of(target) == snapshot_of(source)
    rerun = cli("copy", "--to", target.url, "--to-namespace", target.namespace, *source.args)
    assert rerun.exit_code == 0
    assert "copied 4 threads" in rerun.stdout
    assert "0 written, 4 skipped (already up to date)" in rerun.stdout
    assert snapshot_of(target) == snapshot_of(source)
    # Copying back the other way changes nothing: every version is already there.
    back = cli(
        "copy", "--to", source.url, "--to-namespace", source.namespace, "--json", *target.args
    )
    assert counts(back.stdout) == (0, 4, 0)


def test_copy_keeps_the_namespace_by_default(cli: Invoke, make: Make) -> None:
    source, target = make("sqlite"), make("sqlite")
    seed(source, 2)
    result = cli("copy", "--to", target.url, *source.args)
    assert result.exit_code == 0, result.output
    assert snapshot_of(target, source.namespace) == snapshot_of(source)


def test_copy_onto_itself_is_refused(cli: Invoke, make: Make) -> None:
    source = make("sqlite")
    seed(source, 1)
    result = cli("copy", "--to", source.url, *source.args)
    assert result.exit_code == 2
    assert "same store and namespace" in result.stderr


def _good_lines(cli: Invoke, make: Make, tmp_path: Path, count: int) -> list[str]:
    source = make("sqlite")
    seed(source, count)
    dump = tmp_path / "good.jsonl"
    assert cli("export", "--output", str(dump), *source.args).exit_code == 0
    return dump.read_text(encoding="utf-8").splitlines()


def _bad_variants(good: str) -> dict[str, tuple[str, str]]:
    data = json.loads(good)

    def with_(**changes: object) -> str:
        return json.dumps({**data, **changes})

    missing = {k: v for k, v in data.items() if k != "updated_at"}
    return {
        "truncated": (good[: len(good) // 2], "not valid JSON"),
        "not an object": ("[1, 2]", "expected a JSON object"),
        "missing key": (json.dumps(missing), "missing 'updated_at'"),
        "bad version": (with_(version=0), '"version" must be an integer >= 1'),
        "naive time": (with_(created_at="2026-01-01T00:00:00"), '"created_at" has no time zone'),
        "bad thread id": (with_(thread_id="a\x00b"), "invalid thread id"),
        "bad state": (
            with_(state={"todos": "not a list"}),
            '"state" is not a valid AgentStateSnapshot: todos',
        ),
    }


@pytest.mark.parametrize(
    "variant",
    [
        "truncated",
        "not an object",
        "missing key",
        "bad version",
        "naive time",
        "bad thread id",
        "bad state",
    ],
)
def test_a_bad_line_is_refused_with_its_number(
    cli: Invoke, make: Make, tmp_path: Path, variant: str
) -> None:
    lines = _good_lines(cli, make, tmp_path, 4)
    bad, why = _bad_variants(lines[3])[variant]
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join([*lines[:3], bad, *lines[4:]]) + "\n", encoding="utf-8")
    target = make("sqlite")

    result = cli("import", str(broken), *target.args)
    assert result.exit_code == 1
    assert result.stdout == ""
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert message.startswith(f"error: {broken}: line 4: ")
    assert why in message
    assert "nothing of line 4 was written; before it: 2 written" in message
    imported = snapshot_of(target)
    assert sorted(imported) == sorted(json.loads(line)["thread_id"] for line in lines[1:3])

    # Fixed, the rerun finishes the job and skips what is already there.
    fixed = cli("import", str(tmp_path / "good.jsonl"), "--json", *target.args)
    assert counts(fixed.stdout) == (2, 2, 0)


def test_a_bad_header_imports_nothing(cli: Invoke, make: Make, tmp_path: Path) -> None:
    lines = _good_lines(cli, make, tmp_path, 2)
    target = make("sqlite")
    for header, why in [
        ('{"format": "something-else", "version": 1}', "not an agents-persistence export"),
        ('{"format": "agents-persistence-export", "version": 2}', "version 2 is not supported"),
        (lines[1], "not an agents-persistence export"),
    ]:
        dump = tmp_path / "headless.jsonl"
        dump.write_text("\n".join([header, *lines[1:]]) + "\n", encoding="utf-8")
        result = cli("import", str(dump), *target.args)
        assert result.exit_code == 1
        assert "line 1: " in result.stderr
        assert why in result.stderr
    assert snapshot_of(target) == {}


def test_import_of_a_missing_or_empty_file(cli: Invoke, make: Make, tmp_path: Path) -> None:
    target = make("sqlite")
    missing = cli("import", str(tmp_path / "nope.jsonl"), *target.args)
    assert missing.exit_code == 2
    assert "cannot read" in missing.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = cli("import", str(empty), *target.args)
    assert result.exit_code == 1
    assert "empty file" in result.stderr


def test_export_to_stdout_and_import_from_stdin(cli: Invoke, make: Make) -> None:
    source, target = make("sqlite"), make("sqlite")
    seed(source, 3)
    exported = cli("export", *source.args)
    assert exported.exit_code == 0
    # Off a terminal: no progress bar, the summary alone on stderr, the data alone on stdout.
    assert exported.stderr == f"exported 3 threads from namespace '{source.namespace}'\n"
    assert len(exported.stdout.splitlines()) == 4
    imported = cli("import", "-", "--json", *target.args, input=exported.stdout)
    assert imported.exit_code == 0, imported.output
    assert imported.stderr == ""
    assert counts(imported.stdout) == (3, 0, 0)
    assert snapshot_of(target) == snapshot_of(source)


def test_expired_threads_in_a_file_are_not_imported(
    cli: Invoke, make: Make, tmp_path: Path
) -> None:
    lines = _good_lines(cli, make, tmp_path, 2)
    stale = json.loads(lines[1])
    stale.update(
        thread_id="gone",
        expires_at="2020-01-01T00:00:00+00:00",
        created_at="2019-01-01T00:00:00+00:00",
        updated_at="2019-06-01T00:00:00+00:00",
    )
    dump = tmp_path / "with-expired.jsonl"
    dump.write_text("\n".join([*lines, json.dumps(stale)]) + "\n", encoding="utf-8")
    target = make("sqlite")
    result = cli("import", str(dump), "--json", *target.args)
    assert counts(result.stdout) == (2, 0, 1)
    assert "gone" not in snapshot_of(target)


def test_export_piped_into_import_between_processes(make: Make) -> None:
    source, target = make("sqlite"), make("sqlite")
    seed(source, 3)
    env = {k: v for k, v in os.environ.items() if k != "AGENTS_PERSISTENCE_URL"}
    # The states hold non-ASCII text: the export must be UTF-8 whatever the locale says.
    env["PYTHONIOENCODING"] = "ascii"
    command = [sys.executable, "-m", "agents_persistence"]
    exported = subprocess.run(
        [*command, "export", *source.args], env=env, capture_output=True, timeout=120
    )
    assert exported.returncode == 0, exported.stderr
    imported = subprocess.run(
        [*command, "import", "-", "--json", *target.args],
        input=exported.stdout,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert imported.returncode == 0, imported.stderr
    assert counts(imported.stdout.decode()) == (3, 0, 0)
    assert snapshot_of(target) == snapshot_of(source)

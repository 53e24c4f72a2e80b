"""Exit codes, one-line errors, ``--debug``, where the URL comes from, and the entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import pytest

from agents_persistence import (
    AccessDeniedError,
    AuthenticationError,
    BackendUnavailableError,
    ConfigurationError,
    DatabaseNotFoundError,
    SchemaNotReadyError,
)

from ..kits.base import closed_port
from ..kits.secured import MotoIAMServer
from .conftest import Invoke, _has_store, seed

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from .conftest import Target

    Make = Callable[[str], Target]


def test_unreachable_server_is_one_line_and_exit_1(cli: Invoke) -> None:
    if not _has_store("sql"):
        pytest.skip("the SQL store is not built yet")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    result = cli("threads", "list", "--url", url)
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: BackendUnavailableError: ")
    assert "check that the server is running and reachable, then retry" in lines[0]


def test_debug_shows_the_traceback(cli: Invoke) -> None:
    if not _has_store("sql"):
        pytest.skip("the SQL store is not built yet")
    url = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/test"
    result = cli("threads", "list", "--url", url, "--debug", catch=True)
    assert result.exit_code == 1
    assert isinstance(result.exception, BackendUnavailableError)
    assert result.exc_info is not None
    assert result.exc_info[2] is not None


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["threads", "list", "--url", "nosuch://x"], "error: ConfigurationError: unknown store"),
        (
            ["threads", "list", "--url", "memory://", "--namespace", "bad namespace!"],
            "invalid namespace",
        ),
        (["threads", "show", "a\tb", "--url", "memory://"], "error: InvalidThreadIdError: "),
        (["threads", "list", "--url", "memory://", "--limit", "0"], "Invalid value for '--limit'"),
        (["threads", "frobnicate"], "No such command 'frobnicate'"),
        (["demo", "--turns", "zero", "--url", "memory://"], "Invalid value for '--turns'"),
    ],
)
def test_bad_usage_exits_2(cli: Invoke, args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.output


def test_a_corrupt_record_is_reported_and_can_be_deleted(cli: Invoke, make: Make) -> None:
    target = make("sqlite")
    seed(target, 2)
    from sqlalchemy import create_engine, text

    engine = create_engine(target.url)
    with engine.begin() as connection:
        changed = connection.execute(
            text(
                "UPDATE agent_checkpoints SET state = :raw"
                " WHERE namespace = :ns AND thread_id = 'thread-00'"
            ),
            {"raw": '{"todos": "not a list"}', "ns": target.namespace},
        )
        assert changed.rowcount == 1
    engine.dispose()
    shown = cli("threads", "show", "thread-00", *target.args)
    assert shown.exit_code == 1
    line = shown.stderr.strip()
    assert line.startswith("error: CorruptStateError: stored state of thread 'thread-00'")
    assert "agents-persistence threads delete" in line
    exported = cli("export", *target.args)
    assert exported.exit_code == 1
    assert "CorruptStateError" in exported.stderr
    assert cli("threads", "delete", "thread-00", "--yes", *target.args).exit_code == 0
    assert cli("threads", "show", "thread-01", *target.args).exit_code == 0


def test_global_options_before_the_command(cli: Invoke, target: Target) -> None:
    seed(target, 2)
    result = cli("--url", target.url, "--namespace", target.namespace, "--json", "threads", "list")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["threads"]) == 2
    # The command's own option wins over the global one.
    other = cli("--namespace", "elsewhere", "threads", "list", "--json", *target.args)
    assert len(json.loads(other.stdout)["threads"]) == 2


def test_url_from_the_environment(
    cli: Invoke, target: Target, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seed(target, 3)
    monkeypatch.setenv("AGENTS_PERSISTENCE_URL", target.url)
    result = cli("threads", "list", "--json", "--namespace", target.namespace)
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["threads"]) == 3
    assert "using the SQLite file" not in result.stderr
    assert not (tmp_path / "agents-persistence.sqlite3").exists()


def test_default_url_is_a_sqlite_file_in_the_working_directory(cli: Invoke, tmp_path: Path) -> None:
    if not _has_store("sql"):
        pytest.skip("the SQL store is not built yet")
    assert cli("db", "upgrade").exit_code == 0
    result = cli("threads", "list", "--json")
    assert result.exit_code == 0, result.output
    path = tmp_path / "agents-persistence.sqlite3"
    assert path.is_file()
    assert f"using the SQLite file {path}" in result.stderr
    assert json.loads(result.stdout) == {"namespace": "default", "threads": [], "more": False}


def test_passwords_are_not_printed(cli: Invoke) -> None:
    result = cli("db", "current", "--url", "redis://user:s3cret@127.0.0.1:1/0")
    assert result.exit_code == 2
    assert "s3cret" not in result.output
    assert "redis://user:***@127.0.0.1:1/0" in result.stderr


def _run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AGENTS_PERSISTENCE_URL"}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, **kwargs
    )


def test_module_entry_point_and_exit_codes() -> None:
    helped = _run("-m", "agents_persistence", "--help")
    assert helped.returncode == 0
    for command in (
        "demo",
        "threads",
        "purge-expired",
        "db",
        "dynamodb",
        "export",
        "import",
        "copy",
    ):
        assert command in helped.stdout
    version = _run("-m", "agents_persistence", "--version")
    from agents_persistence import __version__

    assert version.stdout.strip() == f"agents-persistence {__version__}"
    missing = _run("-m", "agents_persistence", "threads", "show", "nope", "--url", "memory://")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: thread 'nope' not found in namespace 'default'"
    usage = _run("-m", "agents_persistence", "threads", "delete", "x", "--url", "memory://")
    assert usage.returncode == 2


def test_importing_the_library_does_not_import_the_command() -> None:
    probe = (
        "import sys, agents_persistence; print(sorted(m for m in"
        " ('typer', 'rich', 'click', 'agents_persistence.cli') if m in sys.modules))"
    )
    done = _run("-c", probe)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_the_cli_extra_the_command_says_what_to_install() -> None:
    # A None entry in sys.modules makes "import typer" fail as if typer were not installed.
    probe = (
        "import sys; sys.modules['typer'] = None\n"
        "from agents_persistence.cli import main\n"
        "main(['--help'])"
    )
    done = _run("-c", probe)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        "agents-persistence: the command needs typer: pip install 'agents-persistence[cli]'"
    )


# -- one hint per kind of error ---------------------------------------------------------------


def _one_error_line(result: Any, exit_code: int, kind: str) -> str:
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: {kind}: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


def _sql_url(url: str, **parts: Any) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(**parts).render_as_string(hide_password=False)


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


@pytest.mark.parametrize(
    ("store", "url_of", "kind", "hint"),
    [
        (
            "postgresql",
            lambda url: _sql_url(url, username=_unique("ap_no_role")),
            "AuthenticationError",
            "(check the user name and password in the URL; retrying will not help)",
        ),
        (
            "postgresql",
            lambda url: _sql_url(url, database="ap_no_db_42"),
            "DatabaseNotFoundError",
            "(create it with: createdb ap_no_db_42; or fix the database name in the URL)",
        ),
        (
            "mariadb",
            lambda url: _sql_url(url, database="ap_no_db_42"),
            "DatabaseNotFoundError",
            "(create it with: CREATE DATABASE `ap_no_db_42`; or fix the database name in the URL)",
        ),
        (
            "redis",
            lambda url: url.replace("redis://", "redis://nobody:wrong@", 1),
            "AuthenticationError",
            "(check the user name and password in the URL; retrying will not help)",
        ),
        (
            "redis",
            lambda url: url.rsplit("/", 1)[0] + "/9999",
            "DatabaseNotFoundError",
            "(use a database number the server has, or raise its `databases` setting)",
        ),
    ],
)
def test_server_refusals_get_their_own_hint_and_exit_2(
    cli: Invoke,
    make: Make,
    store: str,
    url_of: Callable[[str], str],
    kind: str,
    hint: str,
) -> None:
    url = url_of(make(store).url)
    line = _one_error_line(cli("threads", "list", "--url", url), 2, kind)
    assert line.endswith(hint)
    assert "check that the server is running" not in line


def test_sqlite_in_a_missing_directory_says_which_directory_to_create(
    cli: Invoke, tmp_path: Path
) -> None:
    if not _has_store("sql"):
        pytest.skip("the SQL store is not built yet")
    missing = tmp_path / "no-such-directory"
    for args in (["threads", "list"], ["db", "upgrade"]):
        result = cli(*args, "--url", f"sqlite:///{missing}/agents.db")
        line = _one_error_line(result, 2, "DatabaseNotFoundError")
        assert line.endswith(f"(create the directory {missing} first, or fix the URL)")
    assert not missing.exists()


def test_read_only_sqlite_file_is_access_denied_with_its_hint(cli: Invoke, make: Make) -> None:
    target = make("sqlite")
    seed(target, 1)
    path = target.url.removeprefix("sqlite:///")
    read_only = f"sqlite:///file:{path}?mode=ro&uri=true"
    assert (
        cli(
            "threads", "show", "thread-00", "--url", read_only, "--namespace", target.namespace
        ).exit_code
        == 0
    )
    result = cli(
        "threads",
        "delete",
        "thread-00",
        "--yes",
        "--url",
        read_only,
        "--namespace",
        target.namespace,
    )
    line = _one_error_line(result, 1, "AccessDeniedError")
    assert line.endswith(
        "(make the SQLite file and its directory writable by this user; retrying will not help)"
    )
    assert cli("threads", "show", "thread-00", *target.args).exit_code == 0  # still there


@pytest.fixture(scope="module")
def iam_moto() -> Iterator[MotoIAMServer]:
    if not _has_store("dynamodb"):
        pytest.skip("the DynamoDB store is not built yet")
    server = MotoIAMServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("who", "kind", "code", "hint"),
    [
        (
            "unknown",
            "AuthenticationError",
            2,
            "(check the AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or"
            " AWS_PROFILE) and the endpoint; retrying will not help)",
        ),
        (
            "nobody",
            "AccessDeniedError",
            1,
            "(allow this table's DynamoDB actions in the IAM policy; retrying will not help)",
        ),
    ],
)
def test_dynamodb_refusals_get_their_own_hint(
    cli: Invoke,
    iam_moto: MotoIAMServer,
    monkeypatch: pytest.MonkeyPatch,
    who: str,
    kind: str,
    code: int,
    hint: str,
) -> None:
    keys = getattr(iam_moto, who)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys.secret_access_key)
    query = urlencode({"region": "us-east-1", "endpoint": iam_moto.endpoint, "max_retries": 0})
    result = cli("threads", "list", "--url", f"dynamodb://ap-cli-auth?{query}")
    line = _one_error_line(result, code, kind)
    assert line.endswith(hint)


@pytest.mark.parametrize(
    ("error", "url", "code", "hint"),
    [
        (
            BackendUnavailableError("x"),
            "redis://h/0",
            1,
            "check that the server is running and reachable, then retry",
        ),
        (
            AuthenticationError("x"),
            "postgresql+psycopg://u@h/d",
            2,
            "check the user name and password in the URL; retrying will not help",
        ),
        (
            AuthenticationError("x"),
            "dynamodb://t?region=r",
            2,
            "check the AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or"
            " AWS_PROFILE) and the endpoint; retrying will not help",
        ),
        (
            AccessDeniedError("x"),
            "postgresql+psycopg://u@h/d",
            1,
            "grant this user the privileges on the database, or use another user;"
            " retrying will not help",
        ),
        (
            AccessDeniedError("x"),
            "redis://u:p@h/0",
            1,
            "allow the store's commands and keys in this user's ACL; retrying will not help",
        ),
        (DatabaseNotFoundError("x"), None, 2, "fix the database in the URL"),
        (ConfigurationError("x"), "memory://", 2, "check --url and --namespace"),
        (
            SchemaNotReadyError("x"),
            "postgresql+psycopg://u@h/d",
            1,
            "create the tables with: agents-persistence db upgrade --url postgresql+psycopg://u@h/d",
        ),
    ],
)
def test_each_error_gets_its_own_hint(
    error: Exception, url: str | None, code: int, hint: str
) -> None:
    from agents_persistence.cli._common import explain

    line, exit_code = explain(error, url)
    assert line == f"{type(error).__name__}: x ({hint})"
    assert exit_code == code

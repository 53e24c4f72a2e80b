"""What every command shares: the global options, opening stores, output, and error reporting.

A command body runs inside a `Run`, which resolves the global options (the command's own value
first, then the one given before the command name, then ``AGENTS_PERSISTENCE_URL``, then the
default SQLite file), opens and closes stores, and turns every failure into one line on stderr
and an exit code: 0 success, 1 failed operation or missing thread, 2 bad usage.

Keys for an encrypted store resolve the same way (`agents_persistence.cli._keyring`): the
command's ``--keys FILE`` or ``--kms-key-id ID``, then the same before the command name, then
``AGENTS_PERSISTENCE_KEYS_FILE``, then ``AGENTS_PERSISTENCE_KEYS`` (the file's JSON itself).
Keys are never given on the command line itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import parse_qs, unquote, urlsplit

import click
import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from agents_persistence import open_checkpointer
from agents_persistence._core import DEFAULT_NAMESPACE
from agents_persistence.cli._keyring import KeySource, resolve_keys
from agents_persistence.errors import (
    AccessDeniedError,
    AuthenticationError,
    BackendUnavailableError,
    CheckpointerError,
    ConfigurationError,
    ConflictError,
    CorruptStateError,
    DatabaseNotFoundError,
    DecryptionError,
    InvalidArgumentError,
    MissingExtraError,
    SchemaNotReadyError,
    UnknownKeyError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from datetime import datetime
    from types import TracebackType

    from agents_persistence._keys import KeyProvider
    from agents_persistence.contract import Checkpointer

__all__ = [
    "DEFAULT_SQLITE_FILE",
    "ENV_URL",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandFailed",
    "DebugOption",
    "JsonOption",
    "KeysOption",
    "KmsKeyOption",
    "NamespaceOption",
    "Run",
    "UrlOption",
    "UsageProblem",
    "describe_store",
    "explain",
    "iso",
    "plural",
    "progress_bar",
    "redact",
    "root_options",
    "scheme_family",
    "stdin_is_terminal",
]

ENV_URL = "AGENTS_PERSISTENCE_URL"
DEFAULT_SQLITE_FILE = "agents-persistence.sqlite3"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        metavar="URL",
        help=f"Store URL. Default: ${ENV_URL}, else the SQLite file ./{DEFAULT_SQLITE_FILE}.",
        show_default=False,
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        metavar="NAME",
        help="Namespace of the threads. Default: 'default'.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the data as JSON.")]
KeysOption = Annotated[
    Path | None,
    typer.Option(
        "--keys",
        metavar="FILE",
        help=(
            "Key file of an encrypted store: a local keyring or KMS settings (JSON, see"
            " docs/security.md). Default: $AGENTS_PERSISTENCE_KEYS_FILE, else"
            " $AGENTS_PERSISTENCE_KEYS, else no encryption."
        ),
        dir_okay=False,
        show_default=False,
    ),
]
KmsKeyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--kms-key-id",
        metavar="ID",
        help=(
            "AWS KMS key (id, ARN or alias) of an encrypted store; repeat it to add older keys"
            " for reading (the first is the active one). Region, endpoint and credentials come"
            " from the usual AWS settings."
        ),
        show_default=False,
    ),
]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]


class UsageProblem(Exception):
    """The command line asks for something that cannot be done as given (exit code 2)."""


class CommandFailed(Exception):
    """The operation failed or its thread does not exist (exit code 1)."""


@dataclass(frozen=True, slots=True)
class _Given:
    url: str | None = None
    namespace: str | None = None
    as_json: bool = False
    debug: bool = False
    keys: KeySource = field(default_factory=KeySource)


def root_options(
    ctx: typer.Context,
    url: str | None,
    namespace: str | None,
    as_json: bool,
    debug: bool,
    keys: KeySource | None = None,
) -> None:
    """Remember the global options given before the command name (``agents-persistence --url``)."""
    ctx.obj = _Given(url, namespace, as_json, debug, keys or KeySource())


def scheme_family(url: str) -> str:
    """The store family a URL names: sqlite, postgresql, mysql, redis, dynamodb, memory, or ''."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    base = scheme.split("+", 1)[0]
    families = {
        "postgres": "postgresql",
        "mariadb": "mysql",
        "rediss": "redis",
    }
    base = families.get(base, base)
    known = ("sqlite", "postgresql", "mysql", "redis", "dynamodb", "memory")
    return base if base in known else ""


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for printing."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


def plural(count: int, noun: str) -> str:
    """``"1 thread"``, ``"2 threads"``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def iso(moment: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 text (``None`` stays ``None``)."""
    return None if moment is None else moment.isoformat()


def describe_store(url: str) -> str:
    """Where a URL keeps its threads, in words (no password)."""
    family = scheme_family(url)
    parts = urlsplit(url)
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    table = query.get("table") or query.get("table_name") or "agent_checkpoints"
    if family == "sqlite":
        path = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
        where = str(Path(path).resolve()) if path and path != ":memory:" else "memory (:memory:)"
        return f"SQLite file {where}, table {table}"
    if family in ("postgresql", "mysql"):
        name = {"postgresql": "PostgreSQL", "mysql": "MySQL/MariaDB"}[family]
        database = parts.path.lstrip("/") or "(default database)"
        port = parts.port or "default port"
        return f"{name} database {database} at {parts.hostname}:{port}, table {table}"
    if family == "redis":
        database = parts.path.lstrip("/") or "0"
        return f"Redis at {parts.hostname or 'localhost'}:{parts.port or 6379} db {database}"
    if family == "dynamodb":
        where = query.get("endpoint") or "AWS"
        region = query.get("region") or os.environ.get("AWS_DEFAULT_REGION") or "default region"
        return f"DynamoDB table {parts.netloc or parts.path.lstrip('/')} ({where}, {region})"
    if family == "memory":
        return "this process's memory (gone when the command exits)"
    return redact(url)


_NO_RETRY = "retrying will not help"


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _schema_hint(message: str, url: str | None) -> str:
    if url is None or "--url" in message:
        return ""  # the store's message already names the command that fixes it, in full
    family = scheme_family(url)
    where = shlex.quote(redact(url))
    if family == "dynamodb":
        return f"create it with: agents-persistence dynamodb create-table --url {where}"
    if family in ("sqlite", "postgresql", "mysql"):
        return f"create the tables with: agents-persistence db upgrade --url {where}"
    return ""


def _credentials_hint(message: str, url: str | None) -> str:
    if url is not None and scheme_family(url) == "dynamodb":
        return (
            "check the AWS credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or"
            f" AWS_PROFILE) and the endpoint; {_NO_RETRY}"
        )
    return f"check the user name and password in the URL; {_NO_RETRY}"


def _access_hint(message: str, url: str | None) -> str:
    family = scheme_family(url) if url is not None else ""
    if family == "sqlite":
        return f"make the SQLite file and its directory writable by this user; {_NO_RETRY}"
    if family == "dynamodb":
        return f"allow this table's DynamoDB actions in the IAM policy; {_NO_RETRY}"
    if family == "redis":
        return f"allow the store's commands and keys in this user's ACL; {_NO_RETRY}"
    return f"grant this user the privileges on the database, or use another user; {_NO_RETRY}"


def _database_hint(message: str, url: str | None) -> str:
    if url is None:
        return "fix the database in the URL"
    family = scheme_family(url)
    parts = urlsplit(url)
    name = unquote(parts.path.lstrip("/"))
    if family == "sqlite":
        directory = Path(unquote(parts.path[1:]) or ".").resolve().parent
        if not directory.is_dir():
            return f"create the directory {shlex.quote(str(directory))} first, or fix the URL"
        return f"check that this user may create files in {shlex.quote(str(directory))}"
    if family == "postgresql":
        return f"create it with: createdb {shlex.quote(name)}; or fix the database name in the URL"
    if family == "mysql":
        return f"create it with: CREATE DATABASE `{name}`; or fix the database name in the URL"
    if family == "redis":
        return "use a database number the server has, or raise its `databases` setting"
    return "fix the database in the URL"


# What each error means for the person at the command line: its exit code, and the hint that
# follows the message ("" for none, or a function of the message and the store's URL). The
# first matching class wins, so subclasses come before their bases.
_Hint = str | Callable[[str, str | None], str]
_HINTS: list[tuple[type[BaseException], int, _Hint]] = [
    (ConflictError, EXIT_FAILED, "another writer saved the thread first; load it again and retry"),
    (SchemaNotReadyError, EXIT_FAILED, _schema_hint),
    (
        BackendUnavailableError,
        EXIT_FAILED,
        "check that the server is running and reachable, then retry",
    ),
    (AuthenticationError, EXIT_USAGE, _credentials_hint),
    (AccessDeniedError, EXIT_FAILED, _access_hint),
    (
        UnknownKeyError,
        EXIT_FAILED,
        "add that key to the keys given with --keys FILE or --kms-key-id ID (docs/security.md)",
    ),
    (
        DecryptionError,
        EXIT_FAILED,
        "an encrypted thread needs its keys: --keys FILE or --kms-key-id ID (docs/security.md);"
        " with the right keys, it was changed or copied from elsewhere",
    ),
    (
        CorruptStateError,
        EXIT_FAILED,
        "the stored record cannot be read; remove it with: agents-persistence threads delete ID",
    ),
    (DatabaseNotFoundError, EXIT_USAGE, _database_hint),
    # Its message already says what to install.
    (MissingExtraError, EXIT_USAGE, ""),
    (ConfigurationError, EXIT_USAGE, "check --url and --namespace"),
    (InvalidArgumentError, EXIT_USAGE, ""),
    (CheckpointerError, EXIT_FAILED, ""),
]


def explain(exc: BaseException, url: str | None = None) -> tuple[str, int]:
    """One line saying what went wrong and what to do, and the exit code it deserves.

    Each kind of error gets its own advice: retry for an unreachable server, fix the
    credentials, create the database or the tables, and so on.

    Args:
        exc: What a command raised.
        url: The store it was working on, for hints that name a command to run.
    """
    if isinstance(exc, UsageProblem):
        return _one_line(str(exc)), EXIT_USAGE
    if isinstance(exc, CommandFailed):
        return _one_line(str(exc)), EXIT_FAILED
    for kind, code, hint in _HINTS:
        if isinstance(exc, kind):
            message = _one_line(str(exc)).rstrip(".")
            advice = hint if isinstance(hint, str) else hint(message, url)
            if advice:
                message = f"{message} ({advice})"
            return f"{type(exc).__name__}: {message}", code
    return (
        f"unexpected {type(exc).__name__}: {_one_line(str(exc))}"
        " (rerun with --debug for the traceback)",
        EXIT_FAILED,
    )


class Run:
    """One invocation of a command: resolved options, consoles, opened stores, error reporting.

    Use as a context manager around the command body; it closes every store it opened and turns
    exceptions into one error line and an exit code (tracebacks only with ``--debug``).
    """

    def __init__(
        self,
        ctx: typer.Context,
        *,
        url: str | None,
        namespace: str | None,
        as_json: bool,
        debug: bool,
    ) -> None:
        given = ctx.find_root().obj
        root = given if isinstance(given, _Given) else _Given()
        # The command's own --keys / --kms-key-id (`KeysOption`, `KmsKeyOption`), if it has them.
        own = KeySource(ctx.params.get("keys"), tuple(ctx.params.get("kms_key_id") or ()))
        self._key_sources = (own, root.keys)
        self._keys: tuple[KeyProvider | None] | None = None
        self.as_json = as_json or root.as_json
        self.debug = debug or root.debug
        self.namespace = namespace or root.namespace or DEFAULT_NAMESPACE
        self.err = Console(stderr=True, highlight=False)
        self.out = _stdout_console()
        given_url = url or root.url
        explicit = given_url or os.environ.get(ENV_URL) or None
        self.url_is_default = explicit is None
        self.url = explicit or _default_url()
        # How to name this store again in a follow-up command a person is told to run.
        self.follow_up = "" if not given_url else f" --url {shlex.quote(redact(given_url))}"
        if self.namespace != DEFAULT_NAMESPACE:
            self.follow_up += f" --namespace {shlex.quote(self.namespace)}"
        self._opened: list[Checkpointer[Any]] = []

    def notice_default_url(self) -> None:
        """Say which file the default SQLite URL points at (on stderr, so data stays clean)."""
        if self.url_is_default:
            path = urlsplit(self.url).path[1:]
            self.err.print(
                f"using the SQLite file {path} (no --url given and {ENV_URL} is not set)",
                soft_wrap=True,
                markup=False,
            )

    @property
    def keys(self) -> KeyProvider | None:
        """The key provider the options or the environment name (``None``: no encryption)."""
        if self._keys is None:
            try:
                self._keys = (resolve_keys(*self._key_sources),)
            except ValueError as exc:  # ConfigurationError of a key file, or two sources
                raise UsageProblem(str(exc)) from None
        return self._keys[0]

    def keys_from(self, file: Path | None) -> KeyProvider | None:
        """The key provider of another key file (``--to-keys``), or ``None`` if not given."""
        if file is None:
            return None
        try:
            return KeySource(file).provider()
        except ValueError as exc:
            raise UsageProblem(str(exc)) from None

    def open(self, url: str | None = None, namespace: str | None = None, **options: Any) -> Any:
        """Open a checkpointer (this run's URL, namespace and keys unless given); closed on exit."""
        options.setdefault("keys", self.keys)
        checkpointer = open_checkpointer(
            url or self.url, namespace=namespace or self.namespace, **options
        )
        self._opened.append(checkpointer)
        return checkpointer

    def emit(self, data: object) -> None:
        """Print ``data`` as JSON on stdout."""
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        close_error = self._close_all()
        problem = exc if exc is not None else close_error
        # typer 0.29 has Exit and Abort classes of its own, not click's: both kinds end the
        # command as they mean to, as do SystemExit (a closed pipe) and Ctrl-C.
        if problem is None or isinstance(
            problem,
            click.exceptions.Exit
            | click.ClickException
            | click.exceptions.Abort
            | typer.Exit
            | typer.Abort
            | SystemExit
            | KeyboardInterrupt,
        ):
            return
        if self.debug and not isinstance(problem, UsageProblem | CommandFailed):
            if problem is exc:
                return  # propagates with its traceback
            raise problem
        line, code = explain(problem, self.url)
        self.err.print(f"error: {line}", soft_wrap=True, markup=False)
        raise typer.Exit(code) from None

    def _close_all(self) -> Exception | None:
        # Every store gets closed even if one fails; the first failure is reported only when
        # the body succeeded, so it never hides the error already on its way out.
        first: Exception | None = None
        while self._opened:
            checkpointer = self._opened.pop()
            try:
                checkpointer.close()
            except Exception as exc:
                first = first or exc
        return first

    def fail(self, message: str) -> NoReturn:
        """Stop with exit code 1 and ``message`` on stderr."""
        raise CommandFailed(message)

    def usage(self, message: str) -> NoReturn:
        """Stop with exit code 2 and ``message`` on stderr."""
        raise UsageProblem(message)


@contextlib.contextmanager
def progress_bar(run: Run, description: str, total: int | None) -> Iterator[Callable[[], None]]:
    """Yield a function that advances a progress bar on stderr, shown only on a terminal."""
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    else:
        columns += [TextColumn("{task.completed} threads")]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=run.err, disable=not run.err.is_terminal) as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)


def _default_url() -> str:
    return f"sqlite:///{Path(DEFAULT_SQLITE_FILE).resolve()}"


def _stdout_console() -> Console:
    # Off a terminal rich assumes 80 columns and would fold or cut thread ids in tables; a wide
    # fixed width keeps piped output whole and stable.
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=200)
    return console


def stdin_is_terminal() -> bool:
    """Whether a person can answer a question (stdin is a terminal)."""
    return sys.stdin.isatty()

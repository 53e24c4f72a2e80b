"""A store without its extra: `MissingExtraError` naming the extra, however it is reached.

Nothing is uninstalled: each case runs in a subprocess whose first ``sys.meta_path`` finder
refuses the driver packages, as if they were not installed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_PROBE = textwrap.dedent(
    """
    import importlib, json, sys

    blocked = set(sys.argv[1].split(","))

    class NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NotInstalled())
    import agents_persistence
    from agents_persistence import CheckpointerError, ConfigurationError, MissingExtraError

    try:
        exec(sys.argv[2])
    except Exception as exc:
        print(json.dumps({
            "type": type(exc).__name__,
            "message": str(exc),
            "extra": getattr(exc, "extra", None),
            "name": getattr(exc, "name", None),
            "configuration": isinstance(exc, ConfigurationError),
            "value": isinstance(exc, ValueError),
            "root": isinstance(exc, CheckpointerError),
            "import": isinstance(exc, ImportError),
        }))
    else:
        print(json.dumps(None))
    """
)


def _probe(blocked: str, code: str) -> dict[str, object] | None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, blocked, code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] | None = json.loads(done.stdout)
    return result


CASES = [
    # (blocked packages, how the store is reached, the extra the error must name)
    ("sqlalchemy", "from agents_persistence import SQLCheckpointer", "sqlite"),
    ("sqlalchemy", "from agents_persistence import AsyncSQLCheckpointer", "sqlite"),
    ("alembic", "import agents_persistence.repositories.sql", "sqlite"),
    ("redis_om,aredis_om", "from agents_persistence import RedisCheckpointer", "redis"),
    ("redis", "from agents_persistence import AsyncRedisCheckpointer", "redis"),
    ("redis_om", "import agents_persistence.repositories.redis", "redis"),
    ("pynamodb", "from agents_persistence import DynamoDBCheckpointer", "dynamodb"),
    ("pynamodb", "agents_persistence.AsyncDynamoDBCheckpointer", "dynamodb"),
    ("pynamodb", "import agents_persistence.repositories.dynamodb", "dynamodb"),
    ("langgraph", "import agents_persistence.langgraph", "langgraph"),
    ("deepagents", "import agents_persistence.cli._deep_agent", "deepagents"),
    ("sqlalchemy", "from agents_persistence.langgraph import SQLCheckpointSaver", "sqlite"),
    ("pynamodb", "from agents_persistence.langgraph import DynamoDBCheckpointSaver", "dynamodb"),
    ("sqlalchemy", "agents_persistence.open_checkpointer('sqlite:///x.db')", "sqlite"),
    ("sqlalchemy", "agents_persistence.open_checkpointer('postgresql://db/app')", "postgres"),
    ("sqlalchemy", "agents_persistence.open_async_checkpointer('mariadb://db/app')", "mysql"),
    ("redis_om", "agents_persistence.open_checkpointer('redis://')", "redis"),
    ("pynamodb", "agents_persistence.open_checkpointer('dynamodb://table')", "dynamodb"),
    # The store imports, but the SQL driver from_url picks is missing.
    ("psycopg", "agents_persistence.open_checkpointer('postgresql://db/app')", "postgres"),
    ("pymysql", "agents_persistence.SQLCheckpointer.from_url('mysql://db/app')", "mysql"),
    ("aiomysql", "agents_persistence.open_async_checkpointer('mariadb://db/app')", "mysql"),
]


@pytest.mark.parametrize(("blocked", "code", "extra"), CASES)
def test_a_missing_extra_is_named(blocked: str, code: str, extra: str) -> None:
    error = _probe(blocked, code)
    assert error is not None, f"{code} worked with {blocked} blocked"
    assert error["type"] == "MissingExtraError", error
    assert f"pip install 'agents-persistence[{extra}]'" in str(error["message"])
    assert error["extra"] == extra
    assert str(error["name"]).partition(".")[0] in blocked.split(",")
    # A ConfigurationError (so a ValueError under the root) and, for optional imports, an
    # ImportError.
    flags = ("configuration", "value", "root", "import")
    assert [error[flag] for flag in flags] == [True] * len(flags), error


def test_the_core_and_the_memory_store_need_no_extra() -> None:
    blocked = "sqlalchemy,alembic,redis,redis_om,aredis_om,pynamodb,botocore"
    code = (
        "from agents_persistence import MemoryCheckpointer, AgentStateSnapshot\n"
        "with agents_persistence.open_checkpointer('memory://') as cp:\n"
        "    assert cp.save_state('t', AgentStateSnapshot()).version == 1\n"
    )
    assert _probe(blocked, code) is None


def test_without_the_block_the_probe_imports_every_store() -> None:
    # The probe itself is sound: with nothing blocked, every store imports.
    code = "from agents_persistence import SQLCheckpointer, RedisCheckpointer, DynamoDBCheckpointer"
    assert _probe("nothing-here", code) is None

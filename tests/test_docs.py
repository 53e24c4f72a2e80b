"""The Python blocks of the README and the docs/ guides run as written, on local servers.

Each ```python block runs in a fresh interpreter in a temporary directory. A block that cannot
run on its own (a fragment of an ``env.py``, say) is preceded by ``<!-- not run: REASON -->``;
the reason is required, and every other block runs. DynamoDB blocks reach moto's server on
127.0.0.1:5005, which this module starts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .kits.base import IN_CI, tcp_reachable

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    "README.md",
    "docs/sqlalchemy.md",
    "docs/observability.md",
    "docs/redis.md",
    "docs/dynamodb.md",
    "docs/sql.md",
    "docs/migrations.md",
    "docs/langgraph.md",
    "docs/encryption.md",
    "docs/security.md",
    "docs/from-rust.md",
]
MOTO_PORT = 5005
_BLOCK = re.compile(
    r"(?:<!--\s*not run:\s*(?P<reason>[^>]*?)\s*-->\s*\n)?^```python\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)


def _blocks() -> list[tuple[str, int, str, str | None]]:
    found = []
    for name in DOCUMENTS:
        path = ROOT / name
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            line = text.count("\n", 0, match.start("code"))
            found.append((name, line, match["code"], match["reason"]))
    return found


BLOCKS = _blocks()


def test_the_readme_has_blocks_that_run() -> None:
    readme = [b for b in BLOCKS if b[0] == "README.md"]
    assert sum(1 for b in readme if b[3] is None) >= 6
    for name in DOCUMENTS:
        assert any(b[0] == name and b[3] is None for b in BLOCKS), f"{name}: no block runs"
    for name, line, _, reason in BLOCKS:
        assert reason is None or reason.strip(), f"{name}:{line}: a skipped block needs a reason"


@pytest.fixture(scope="module")
def servers() -> Iterator[None]:
    for name, port in (("PostgreSQL", 5432), ("Redis", 6379)):
        if not tcp_reachable("127.0.0.1", port):
            message = f"{name} unreachable at 127.0.0.1:{port}"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    if tcp_reachable("127.0.0.1", MOTO_PORT):
        pytest.fail(f"port {MOTO_PORT} is taken: the README's DynamoDB blocks need moto there")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=MOTO_PORT)
    server.start()
    yield
    server.stop()


@pytest.mark.parametrize(
    ("document", "line", "code", "reason"),
    [pytest.param(*b, id=f"{b[0]}:{b[1]}") for b in BLOCKS],
)
def test_block_runs(
    document: str, line: int, code: str, reason: str | None, servers: None, tmp_path: Path
) -> None:
    if reason is not None:
        pytest.skip(reason)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.pop("AGENTS_PERSISTENCE_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"{document}:{line} failed:\n{done.stdout}\n{done.stderr}"

"""Fixtures shared by the store-specific tests."""

from __future__ import annotations

import pytest

from ..conftest import _ready
from ..kits.sql import PLAIN_KITS, SQLKit


@pytest.fixture(params=PLAIN_KITS, ids=[k.name for k in PLAIN_KITS])
def sql_kit(request: pytest.FixtureRequest) -> SQLKit:
    """SQLite, PostgreSQL and MariaDB in turn (the kits without listeners)."""
    kit = _ready(request.param)
    assert isinstance(kit, SQLKit)
    return kit

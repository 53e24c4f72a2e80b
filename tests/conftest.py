"""Fixtures shared by every test: the store kits, the event-loop portal and the harness."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from .kits import all_kits
from .kits.base import IN_CI, StoreKit
from .support import Harness, Portal

if TYPE_CHECKING:
    from collections.abc import Iterator

KITS = all_kits()
_started: set[str] = set()


@pytest.fixture(scope="session")
def portal() -> Iterator[Portal]:
    p = Portal()
    yield p
    p.close()


def _ready(kit: StoreKit) -> StoreKit:
    reason = kit.unavailable_reason()
    if reason is not None:
        message = f"{kit.name} store unavailable: {reason}"
        if IN_CI:
            pytest.fail(message + " (CI=true: an unreachable store fails the run)")
        pytest.skip(message)
    if kit.name not in _started:
        kit.start()
        _started.add(kit.name)
    return kit


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for kit in KITS:
        if kit.name in _started:
            kit.stop()


def new_namespace() -> str:
    return "t" + uuid.uuid4().hex[:16]


@pytest.fixture(params=KITS, ids=[k.name for k in KITS])
def kit(request: pytest.FixtureRequest) -> StoreKit:
    return _ready(request.param)


@pytest.fixture(params=["sync", "async"])
def harness(kit: StoreKit, request: pytest.FixtureRequest, portal: Portal) -> Iterator[Harness]:
    h = Harness(kit, request.param, portal, new_namespace())
    yield h
    h.close()


@pytest.fixture
def cp(harness: Harness) -> Any:
    """A checkpointer of the parametrized store and mode, in a fresh namespace."""
    return harness.make()

"""Fixtures shared by every test: the store kits, the event-loop portal and the harness."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import pytest

from .kits import all_kits
from .kits.base import IN_CI, StoreKit
from .kits.dynamodb import DynamoDBKit, fresh_tables
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
    inner = getattr(kit, "inner", None)  # an encrypted twin of one of the suite's kits
    if isinstance(inner, StoreKit) and not getattr(kit, "own_server", False):
        _ready(inner)
    if kit.name not in _started:
        kit.start()
        _started.add(kit.name)
    if isinstance(kit, DynamoDBKit):
        kit.used = True
    return kit


_current_module = [""]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each test module starts on empty DynamoDB tables (see `DynamoDBKit.fresh_table`).

    This runs before the item's fixtures are set up, and after the previous module's
    module-scoped fixtures were torn down, so no fixture holds a table that goes away.
    """
    module = item.nodeid.split("::", 1)[0]
    if module != _current_module[0]:
        _current_module[0] = module
        fresh_tables()


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


@pytest.fixture
def otel() -> Iterator[Any]:
    """The library's spans and metrics, recorded by the OpenTelemetry SDK for one test."""
    from .telemetry_support import recording

    with recording() as recorder:
        yield recorder


# --- a per-store summary of the contract suite at the end of the run ---------------------------

_CONTRACT: dict[str, tuple[str, str]] = {}
_OUTCOMES: dict[tuple[str, str], dict[str, int]] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "/contract/" not in item.nodeid.replace("\\", "/") or callspec is None:
            continue
        kit = callspec.params.get("kit")
        mode = callspec.params.get("harness")
        if isinstance(kit, StoreKit) and isinstance(mode, str):
            _CONTRACT[item.nodeid] = (kit.name, mode)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    key = _CONTRACT.get(report.nodeid)
    if key is None or (report.when != "call" and not (report.skipped or report.failed)):
        return
    counts = _OUTCOMES.setdefault(key, {"passed": 0, "failed": 0, "skipped": 0})
    counts[report.outcome] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _OUTCOMES:
        return
    terminalreporter.section("contract suite by store")
    names = list(dict.fromkeys(name for name, _ in _OUTCOMES))
    width = max(14, *(len(name) + 1 for name in names))
    for kit in names:
        cells = []
        for mode in ("sync", "async"):
            counts = _OUTCOMES.get((kit, mode))
            if counts:
                cells.append(
                    f"{mode}: {counts['passed']} passed, {counts['failed']} failed"
                    + (f", {counts['skipped']} skipped" if counts["skipped"] else "")
                )
        terminalreporter.write_line(f"{kit:<{width}} " + " | ".join(cells))

"""The telemetry switch, retry counting, logging, context propagation, and life without OTel."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from agents_persistence import (
    AgentStateSnapshot,
    AsyncMemoryCheckpointer,
    MemoryCheckpointer,
    StateTooLargeError,
    telemetry,
)

from .telemetry_support import P, Recorder

if TYPE_CHECKING:
    from pathlib import Path

    from agents_persistence._core import Record, WriteRequest

SECRET = "s3cr3t-value-never-logged"


class _Contended(MemoryCheckpointer[AgentStateSnapshot]):
    """A memory store whose writes retry twice, as a store under contention does."""

    def _write(self, request: WriteRequest) -> Record:
        for attempt in (1, 2):
            telemetry.note_retry("memory", "test contention", attempt, request.thread_id)
        return super()._write(request)


def test_retries_are_counted_on_the_span_and_logged(
    otel: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agents_persistence")
    _Contended().save_state("t", AgentStateSnapshot(scratchpad={"k": SECRET}))

    (span,) = otel.spans()
    assert span.attributes[P + "retries"] == 2
    (point,) = [p for _, p in otel.points(P + "retries")]
    assert point.value == 2
    retries = [r for r in caplog.records if "retry after attempt" in r.getMessage()]
    assert [r.levelno for r in retries] == [logging.DEBUG, logging.DEBUG]
    assert "'t'" in retries[0].getMessage()


def test_refused_input_is_logged_without_state_content(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agents_persistence")
    cp = MemoryCheckpointer(max_state_bytes=10)
    with pytest.raises(StateTooLargeError):
        cp.save_state("thread-9", AgentStateSnapshot(scratchpad={"k": SECRET}))

    (record,) = [r for r in caplog.records if r.name == "agents_persistence"]
    assert record.levelno == logging.DEBUG
    assert "save_state refused" in record.getMessage()
    assert "thread-9" in record.getMessage()
    assert "StateTooLargeError" in record.getMessage()
    assert SECRET not in caplog.text


def test_disable_stops_spans_and_enable_resumes(otel: Recorder) -> None:
    cp = MemoryCheckpointer()
    telemetry.disable()
    assert not telemetry.is_enabled()
    cp.save_state("t", AgentStateSnapshot())
    assert otel.spans() == []
    telemetry.enable(tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider)
    cp.load_state("t")
    assert [s.name for s in otel.spans()] == ["load_state"]


def test_async_call_span_is_a_child_of_the_callers_span(otel: Recorder) -> None:
    tracer = otel.tracer_provider.get_tracer("app")

    async def main() -> None:
        cp = AsyncMemoryCheckpointer()
        with tracer.start_as_current_span("agent turn"):
            await cp.save_state("t", AgentStateSnapshot())
            await cp.load_state("t")

    asyncio.run(main())
    save, load, turn = otel.spans()
    assert turn.name == "agent turn"
    assert save.parent is not None
    assert save.parent.span_id == turn.context.span_id
    assert load.parent is not None
    assert load.parent.span_id == turn.context.span_id


_WITHOUT_OTEL = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Block())

import asyncio
from agents_persistence import (
    AgentStateSnapshot, AsyncMemoryCheckpointer, ConflictError, ConfigurationError,
    SQLCheckpointer, MemoryCheckpointer, telemetry,
)

assert not telemetry.is_enabled()
with MemoryCheckpointer() as cp, SQLCheckpointer.from_url(
    "sqlite:///" + sys.argv[1], auto_migrate=True
) as sql:
    for store in (cp, sql):
        info = store.save_state("t", AgentStateSnapshot(scratchpad={"n": 1}))
        assert store.load_state("t").scratchpad == {"n": 1}
        try:
            store.save_state("t", AgentStateSnapshot(), expected_version=info.version + 1)
        except ConflictError:
            pass
        assert [t.thread_id for t in store.iter_threads()] == ["t"]
        assert store.delete_thread("t")

async def main():
    acp = AsyncMemoryCheckpointer()
    await acp.save_state("t", AgentStateSnapshot())
    assert await acp.load_state("t") is not None

asyncio.run(main())
try:
    telemetry.enable()
except ConfigurationError as exc:
    assert "agents-persistence[otel]" in str(exc)
else:
    raise AssertionError("enable() without opentelemetry must raise")
leaked = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not leaked, leaked
print("ok")
"""


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_everything_works_without_opentelemetry_and_nothing_imports_it(tmp_path: Path) -> None:
    assert _python(_WITHOUT_OTEL, str(tmp_path / "db.sqlite3")).strip() == "ok"


@pytest.mark.parametrize(
    "env",
    [
        {"AGENTS_PERSISTENCE_TELEMETRY": "off"},
        {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "redis, agents-persistence"},
    ],
)
def test_environment_switch_keeps_opentelemetry_unimported(env: dict[str, str]) -> None:
    code = """
    import sys
    from agents_persistence import AgentStateSnapshot, MemoryCheckpointer, telemetry
    MemoryCheckpointer().save_state("t", AgentStateSnapshot())
    print(telemetry.is_enabled(), any(m.startswith("opentelemetry") for m in sys.modules))
    """
    assert _python(code, env=env).split() == ["False", "False"]
    assert _python(code, env={"AGENTS_PERSISTENCE_TELEMETRY": ""}).split() == ["True", "True"]


def test_global_sdk_installed_later_is_picked_up() -> None:
    code = """
    import time
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from agents_persistence import AgentStateSnapshot, MemoryCheckpointer, telemetry

    cp = MemoryCheckpointer()
    cp.save_state("t", AgentStateSnapshot())  # no SDK yet: nothing to record
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    time.sleep(1.1)  # a missing SDK is looked for again after a second
    cp.load_state("t")
    print(telemetry.is_enabled(), [s.name for s in exporter.get_finished_spans()])
    """
    assert _python(code).split() == ["True", "['load_state']"]

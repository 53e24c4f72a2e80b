"""OpenTelemetry spans and metrics for every public call, and the library's logger.

Instrumentation is on by default when ``opentelemetry-api`` is importable (the ``otel`` extra):
the API is a no-op until the application installs an SDK, which is how OpenTelemetry expects
libraries to instrument themselves. Without the package nothing imports it and a call pays one
``is None`` check. `disable` turns it off at run time, and so does the environment, read once at
import: ``AGENTS_PERSISTENCE_TELEMETRY=off`` or ``agents_persistence`` listed in
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` (then opentelemetry is not even imported).

Spans, attributes and metrics are listed in ``docs/observability.md``. Nothing a span, a metric
or a log line carries is state content: thread ids, sizes, versions and exception types only,
never a payload, a state value or an exception message (a decoding error quotes the input).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

from agents_persistence.contract import Checkpoint, CheckpointInfo, ThreadPage
from agents_persistence.errors import (
    ConfigurationError,
    ConflictError,
    InvalidArgumentError,
    InvalidStateError,
    StateTooLargeError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["disable", "enable", "is_enabled", "logger", "note_recovery", "note_retry"]

P = ParamSpec("P")
T = TypeVar("T")

logger: Final = logging.getLogger("agents_persistence")
"""The library's logger. It has no handler: the application's logging configuration decides."""

PREFIX: Final = "agents_persistence."
"""Prefix of the library's own span attributes and metric names."""

_ENV_SWITCH = "AGENTS_PERSISTENCE_TELEMETRY"
_OFF = frozenset({"0", "off", "false", "no", "none"})
_REFUSED = (InvalidArgumentError, InvalidStateError, StateTooLargeError)
_THREAD_OPS = frozenset(
    {"save_state", "restore_checkpoint", "load_state", "load_checkpoint", "delete_thread"}
)
_WRITE_OPS = frozenset({"save_state", "restore_checkpoint"})
_SYSTEMS = {"memory": "memory", "redis": "redis", "dynamodb": "aws.dynamodb"}
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_SIZE_BUCKETS = tuple(float(4**k * 256) for k in range(9))  # 256 B to 16 MiB

_retries: ContextVar[list[int] | None] = ContextVar("agents_persistence_retries", default=None)


def note_retry(
    store: str, reason: str, attempt: int, thread_id: str | None = None, *, level: int = 10
) -> None:
    """Log one retry of the call in progress and count it on its span.

    Args:
        store: The store retrying (``sql``, ``redis``, ``dynamodb``).
        reason: Why, in a few words (never state content).
        attempt: The attempt that failed, from 1.
        thread_id: The thread concerned, when the retry point knows it.
        level: Logging level: DEBUG (the default) for contention, WARNING for a server fault.
    """
    if logger.isEnabledFor(level):
        where = "" if thread_id is None else f" (thread {thread_id!r:.80})"
        logger.log(level, "%s: retry after attempt %d: %s%s", store, attempt, reason, where)
    counter = _retries.get()
    if counter is not None:
        counter[0] += 1


def note_recovery(store: str, what: str, thread_id: str | None = None) -> None:
    """Log, at INFO, a fault the store recovered from without the caller seeing an error."""
    where = "" if thread_id is None else f" (thread {thread_id!r:.80})"
    logger.info("%s: recovered: %s%s", store, what, where)


def _log_refused(cp: Any, operation: str, args: tuple[Any, ...], exc: BaseException) -> None:
    if logger.isEnabledFor(logging.DEBUG):
        thread_id = args[0] if operation in _THREAD_OPS and args else None
        where = f" (thread {thread_id!r:.80})" if isinstance(thread_id, str) else ""
        logger.debug(
            "%s refused in namespace %r%s: %s", operation, cp.namespace, where, type(exc).__name__
        )


def store_attributes(cp: Any) -> dict[str, Any]:
    """Database attributes of a checkpointer, per the OpenTelemetry database conventions.

    Computed once per checkpointer, except that a MySQL-dialect engine tells MariaDB from
    MySQL only once it has connected: until then they are computed again on each call.
    """
    cached: dict[str, Any] | None = cp.__dict__.get("_otel_attributes")
    if cached is not None:
        return cached
    store = getattr(cp, "_otel_store", "custom")
    attrs: dict[str, Any] = {PREFIX + "store": store, PREFIX + "namespace": cp.namespace}
    engine = getattr(cp, "engine", None) if store == "sql" else None
    if engine is not None:
        dialect, url = engine.dialect, engine.url
        system = "mariadb" if getattr(dialect, "is_mariadb", False) else dialect.name
        attrs["db.system.name"] = system
        if system != "sqlite":
            if url.database:
                attrs["db.namespace"] = url.database
            if url.host:
                attrs["server.address"] = url.host
            if url.port:
                attrs["server.port"] = url.port
    else:
        attrs["db.system.name"] = _SYSTEMS.get(store, store)
    table = getattr(cp, "table_name", None)
    if isinstance(table, str):
        attrs["db.collection.name"] = table
        if store == "dynamodb":
            attrs["aws.dynamodb.table_names"] = (table,)
    if engine is None or engine.dialect.server_version_info is not None:
        cp.__dict__["_otel_attributes"] = attrs
    return attrs


class _Instruments:
    """The tracer and metric instruments, built once by `enable`."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import metrics, trace

        version = _version()
        self.tracer = trace.get_tracer("agents_persistence", version, tracer_provider)
        meter = metrics.get_meter("agents_persistence", version or "", meter_provider)
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of agents-persistence calls",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.payload = meter.create_histogram(
            PREFIX + "payload.size",
            unit="By",
            description="Encoded state size written by saves and read by loads",
            explicit_bucket_boundaries_advisory=_SIZE_BUCKETS,
        )
        self.conflicts = meter.create_counter(
            PREFIX + "conflicts", unit="{conflict}", description="Saves refused by ConflictError"
        )
        self.errors = meter.create_counter(
            PREFIX + "errors", unit="{error}", description="Calls that raised, by error.type"
        )
        self.retries = meter.create_counter(
            PREFIX + "retries", unit="{retry}", description="Retries inside calls"
        )
        self.use_span = trace.use_span
        self.status_error = trace.StatusCode.ERROR
        self.client, self.internal = trace.SpanKind.CLIENT, trace.SpanKind.INTERNAL


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agents-persistence")
    except PackageNotFoundError:
        return None


_active: _Instruments | None = None


def enable(
    *, tracer_provider: TracerProvider | None = None, meter_provider: MeterProvider | None = None
) -> None:
    """Turn spans and metrics on, with the global providers or the ones given.

    Args:
        tracer_provider: Where spans go; the global one (set by the application) by default.
        meter_provider: Where metrics go; the global one by default.

    Raises:
        ConfigurationError: ``opentelemetry-api`` is not installed (the ``otel`` extra).
    """
    global _active
    try:
        instruments = _Instruments(tracer_provider, meter_provider)
    except ImportError as exc:
        raise ConfigurationError(
            "OpenTelemetry is not installed: pip install 'agents-persistence[otel]'"
        ) from exc
    _active = instruments


def disable() -> None:
    """Turn spans and metrics off: calls then pay one ``is None`` check. Logging stays."""
    global _active
    _active = None


def is_enabled() -> bool:
    """Whether calls currently record spans and metrics."""
    return _active is not None


class _Call:
    """One public call being recorded: its span, attributes and metric points."""

    __slots__ = ("attrs", "counter", "cp", "instruments", "operation", "span", "started", "token")

    def __init__(self, instruments: _Instruments, cp: Any, operation: str, args: tuple[Any, ...]):
        self.instruments = instruments
        self.cp = cp
        self.operation = operation
        attrs = {**store_attributes(cp), "db.operation.name": operation}
        self.attrs = attrs
        span_attrs = dict(attrs)
        if operation in _THREAD_OPS and args and isinstance(args[0], str):
            span_attrs[PREFIX + "thread_id"] = args[0]
        if operation in _WRITE_OPS and isinstance(args[-1], int):
            span_attrs[PREFIX + "expected_version"] = args[-1]
        table = attrs.get("db.collection.name")
        self.span: Span = instruments.tracer.start_span(
            operation if table is None else f"{operation} {table}",
            kind=instruments.internal
            if attrs["db.system.name"] == "memory"
            else instruments.client,
            attributes=span_attrs,
        )
        self.counter = [0]
        self.token = _retries.set(self.counter)
        self.started = time.perf_counter()

    def succeeded(self, result: object) -> None:
        span, prefix = self.span, PREFIX
        if self.operation in _WRITE_OPS:
            span.set_attribute(prefix + "conflict", False)
        info = result.info if isinstance(result, Checkpoint) else result
        if isinstance(info, CheckpointInfo):
            span.set_attribute(prefix + "version", info.version)
            span.set_attribute(prefix + "payload.size", info.size)
            self.instruments.payload.record(info.size, self._metric_attrs())
        if self.operation in ("load_state", "load_checkpoint", "delete_thread"):
            span.set_attribute(prefix + "found", result is not None and result is not False)
        elif isinstance(result, ThreadPage):
            span.set_attribute(prefix + "threads", len(result.threads))
        elif self.operation == "purge_expired" and isinstance(result, int):
            span.set_attribute(prefix + "purged", result)
        self._finish(None)

    def failed(self, exc: BaseException) -> None:
        span, prefix, kind = self.span, PREFIX, type(exc).__qualname__
        if isinstance(exc, ConflictError):
            span.set_attribute(prefix + "conflict", True)
            if exc.actual is not None:
                span.set_attribute(prefix + "actual_version", exc.actual)
            span.add_event(
                prefix + "conflict",
                {
                    prefix + "expected_version": exc.expected,
                    prefix + "actual_version": exc.actual or 0,
                },
            )
            self.instruments.conflicts.add(1, self._metric_attrs())
        elif isinstance(exc, StateTooLargeError):
            span.set_attribute(prefix + "payload.size", exc.size)
        # The message stays out: a decoding error quotes the stored input.
        span.add_event("exception", {"exception.type": f"{type(exc).__module__}.{kind}"})
        span.set_status(self.instruments.status_error, kind)
        span.set_attribute("error.type", kind)
        self._finish(kind)

    def _metric_attrs(self, error: str | None = None) -> dict[str, Any]:
        attrs = {k: v for k, v in self.attrs.items() if k in _METRIC_KEYS}
        if error is not None:
            attrs["error.type"] = error
        return attrs

    def _finish(self, error: str | None) -> None:
        elapsed = time.perf_counter() - self.started
        _retries.reset(self.token)
        instruments, span = self.instruments, self.span
        if self.attrs["db.system.name"] == "mysql":  # MariaDB is told apart once connected
            system = store_attributes(self.cp)["db.system.name"]
            self.attrs["db.system.name"] = system
            span.set_attribute("db.system.name", system)
        retries = self.counter[0]
        if retries or self.operation in _WRITE_OPS:
            span.set_attribute(PREFIX + "retries", retries)
        metric_attrs = self._metric_attrs(error)
        instruments.duration.record(elapsed, metric_attrs)
        if retries:
            instruments.retries.add(retries, metric_attrs)
        if error is not None:
            instruments.errors.add(1, metric_attrs)
        span.end()


_METRIC_KEYS = frozenset(
    {"db.system.name", "db.operation.name", "db.collection.name", PREFIX + "store"}
)


def run(cp: Any, operation: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call ``fn`` as the public ``operation`` of ``cp``: in a span when enabled."""
    instruments = _active
    if instruments is None:
        try:
            return fn(*args, **kwargs)
        except _REFUSED as exc:
            _log_refused(cp, operation, args, exc)
            raise
    call = _Call(instruments, cp, operation, args)
    with instruments.use_span(
        call.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, _REFUSED):
                _log_refused(cp, operation, args, exc)
            call.failed(exc)
            raise
    call.succeeded(result)
    return result


async def arun(
    cp: Any, operation: str, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
) -> T:
    """The asyncio twin of `run`."""
    instruments = _active
    if instruments is None:
        try:
            return await fn(*args, **kwargs)
        except _REFUSED as exc:
            _log_refused(cp, operation, args, exc)
            raise
    call = _Call(instruments, cp, operation, args)
    with instruments.use_span(
        call.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    ):
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, _REFUSED):
                _log_refused(cp, operation, args, exc)
            call.failed(exc)
            raise
    call.succeeded(result)
    return result


def _switched_off() -> bool:
    if os.environ.get(_ENV_SWITCH, "").strip().lower() in _OFF:
        return True
    listed = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    names = {name.strip().replace("-", "_") for name in listed.split(",")}
    return "agents_persistence" in names


if not _switched_off():
    with contextlib.suppress(ConfigurationError):  # not installed: off, and nothing to import
        enable()

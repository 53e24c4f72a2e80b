"""OpenTelemetry spans and metrics for every public call, and the library's logger.

Instrumentation is on by default when ``opentelemetry-api`` is importable (the ``otel`` extra):
the API is a no-op until the application installs an SDK, which is how OpenTelemetry expects
libraries to instrument themselves, and until an SDK is installed a call skips the work (it looks
for one at most once a second). Without the package nothing imports it and a call pays one
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
    from opentelemetry.trace import TracerProvider

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
    {
        "save_state",
        "restore_checkpoint",
        "load_state",
        "load_checkpoint",
        "delete_thread",
        "refresh_thread",
    }
)
_WRITE_OPS = frozenset({"save_state", "restore_checkpoint"})
_SYSTEMS = {"memory": "memory", "redis": "redis", "dynamodb": "aws.dynamodb"}
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)
_SIZE_BUCKETS = tuple(float(4**k * 256) for k in range(9))  # 256 B to 16 MiB

_retries: ContextVar[list[int] | None] = ContextVar("agents_persistence_retries", default=None)
"""The call in progress's [retries, bytes written]."""


def note_retry(
    store: str,
    reason: str,
    attempt: int,
    thread_id: str | None = None,
    *,
    level: int = logging.DEBUG,
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


def note_written(size: int) -> None:
    """Record the bytes the save in progress sent to its store (before compression)."""
    counter = _retries.get()
    if counter is not None:
        counter[1] = size


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


def _sql_system(engine: Any) -> str:
    dialect = engine.dialect
    return "mariadb" if getattr(dialect, "is_mariadb", False) else str(dialect.name)


def store_attributes(cp: Any) -> dict[str, Any]:
    """Database attributes of a checkpointer, per the OpenTelemetry database conventions."""
    store = getattr(cp, "_otel_store", "custom")
    attrs: dict[str, Any] = {PREFIX + "store": store, PREFIX + "namespace": cp.namespace}
    engine = getattr(cp, "engine", None) if store == "sql" else None
    if engine is not None:
        url = engine.url
        system = attrs["db.system.name"] = _sql_system(engine)
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
    return attrs


class _Store:
    """What every span and metric point of one checkpointer shares, computed once per operation.

    A MySQL-dialect engine tells MariaDB from MySQL only once it has connected: until then
    nothing is kept and each call computes the attributes again.
    """

    __slots__ = ("final", "internal", "metric", "span", "system")

    def __init__(self, cp: Any) -> None:
        attrs = store_attributes(cp)
        engine = getattr(cp, "engine", None) if attrs[PREFIX + "store"] == "sql" else None
        self.final = engine is None or engine.dialect.server_version_info is not None
        self.system: str = attrs["db.system.name"]
        self.internal = self.system == "memory"
        table = attrs.get("db.collection.name")
        self.span: dict[str, tuple[str, dict[str, Any]]] = {}
        self.metric: dict[str, dict[str, Any]] = {}
        common = {k: v for k, v in attrs.items() if k in _METRIC_KEYS}
        for op in _OPERATIONS:
            name = op if table is None else f"{op} {table}"
            self.span[op] = (name, {**attrs, "db.operation.name": op})
            self.metric[op] = {**common, "db.operation.name": op}

    @staticmethod
    def of(cp: Any) -> _Store:
        found: _Store | None = cp.__dict__.get("_otel_store_info")
        if found is None:
            found = _Store(cp)
            if found.final:
                cp.__dict__["_otel_store_info"] = found
        return found


_OPERATIONS = (*_THREAD_OPS, "list_threads", "iter_threads", "purge_expired")
_METRIC_KEYS = frozenset(
    {"db.system.name", "db.operation.name", "db.collection.name", PREFIX + "store"}
)


class _Instruments:
    """The tracer and metric instruments, built once by `enable`."""

    def __init__(self, tracer_provider: Any, meter_provider: Any) -> None:
        from opentelemetry import context, metrics, trace

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
        self.written = meter.create_histogram(
            PREFIX + "write.size",
            unit="By",
            description="Bytes a save sent to its store: the head and the pieces that changed",
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
        self.attach, self.detach = context.attach, context.detach
        self.in_context = trace.set_span_in_context
        self.status_error = trace.StatusCode.ERROR
        self.client, self.internal = trace.SpanKind.CLIENT, trace.SpanKind.INTERNAL
        self._noop_tracers = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
        self._providers = (trace.get_tracer_provider, metrics.get_meter_provider)
        self.live = tracer_provider is not None or meter_provider is not None
        self._next_check = 0.0

    def check_live(self) -> bool:
        """Whether an SDK receives what is recorded; until one is installed, nothing is.

        Without an SDK the API hands out no-op providers (proxies until one is set), and a
        provider, once set, stays: the answer is kept as soon as it is yes. Asking costs
        microseconds, so a no is trusted for a second.
        """
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + 1.0
        get_tracer_provider, get_meter_provider = self._providers
        if not isinstance(get_tracer_provider(), self._noop_tracers) or not type(
            get_meter_provider()
        ).__module__.startswith("opentelemetry.metrics"):
            self.live = True
        return self.live


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

    With the global providers, nothing is recorded (and calls skip the work) until the
    application installs the OpenTelemetry SDK's providers.

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
    """One public call being recorded: its span, context, retry counter and metric points."""

    __slots__ = (
        "context",
        "counter",
        "cp",
        "instruments",
        "metric",
        "operation",
        "retries_token",
        "span",
        "started",
        "store",
    )

    def __init__(self, instruments: _Instruments, cp: Any, operation: str, args: tuple[Any, ...]):
        self.instruments, self.cp, self.operation = instruments, cp, operation
        store = self.store = _Store.of(cp)
        name, attrs = store.span[operation]
        if operation in _THREAD_OPS and args and isinstance(args[0], str):
            attrs = {**attrs, PREFIX + "thread_id": args[0]}
            if operation in _WRITE_OPS and isinstance(args[-1], int):
                attrs[PREFIX + "expected_version"] = args[-1]
        self.metric = store.metric[operation]
        kind = instruments.internal if store.internal else instruments.client
        span = self.span = instruments.tracer.start_span(name, kind=kind, attributes=attrs)
        self.context = instruments.attach(instruments.in_context(span))
        self.counter = [0, 0]
        self.retries_token = _retries.set(self.counter)
        self.started = time.perf_counter()

    def succeeded(self, result: object) -> None:
        prefix, operation = PREFIX, self.operation
        attrs: dict[str, Any] = {}
        if operation in _WRITE_OPS:
            attrs[prefix + "conflict"] = False
        info = result.info if isinstance(result, Checkpoint) else result
        if isinstance(info, CheckpointInfo):
            attrs[prefix + "version"] = info.version
            attrs[prefix + "payload.size"] = info.size
            self.instruments.payload.record(info.size, self.metric)
        written = self.counter[1]
        if written:
            attrs[prefix + "write.size"] = written
            self.instruments.written.record(written, self.metric)
        if operation in ("load_state", "load_checkpoint", "delete_thread"):
            attrs[prefix + "found"] = result is not None and result is not False
        elif isinstance(result, ThreadPage):
            attrs[prefix + "threads"] = len(result.threads)
        elif operation == "purge_expired" and isinstance(result, int):
            attrs[prefix + "purged"] = result
        self._finish(attrs, None)

    def failed(self, exc: BaseException, args: tuple[Any, ...]) -> None:
        span, prefix, kind = self.span, PREFIX, type(exc).__qualname__
        if isinstance(exc, _REFUSED):
            _log_refused(self.cp, self.operation, args, exc)
        attrs: dict[str, Any] = {"error.type": kind}
        if isinstance(exc, ConflictError):
            attrs[prefix + "conflict"] = True
            if exc.actual is not None:
                attrs[prefix + "actual_version"] = exc.actual
            event = {prefix + "expected_version": exc.expected}
            event[prefix + "actual_version"] = exc.actual or 0
            span.add_event(prefix + "conflict", event)
            self.instruments.conflicts.add(1, self.metric)
        elif isinstance(exc, StateTooLargeError):
            attrs[prefix + "payload.size"] = exc.size
        # The message stays out: a decoding error quotes the stored input.
        span.add_event("exception", {"exception.type": f"{type(exc).__module__}.{kind}"})
        span.set_status(self.instruments.status_error, kind)
        self._finish(attrs, kind)

    def _finish(self, attrs: dict[str, Any], error: str | None) -> None:
        elapsed = time.perf_counter() - self.started
        _retries.reset(self.retries_token)
        instruments, span, metric = self.instruments, self.span, self.metric
        instruments.detach(self.context)
        if not self.store.final:  # MariaDB is told apart from MySQL once connected
            metric = _Store.of(self.cp).metric[self.operation]
            attrs["db.system.name"] = metric["db.system.name"]
        retries = self.counter[0]
        if retries or self.operation in _WRITE_OPS:
            attrs[PREFIX + "retries"] = retries
        span.set_attributes(attrs)
        if error is not None:
            metric = {**metric, "error.type": error}
            instruments.errors.add(1, metric)
        instruments.duration.record(elapsed, metric)
        if retries:
            instruments.retries.add(retries, metric)
        span.end()


def run(cp: Any, operation: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Call ``fn`` as the public ``operation`` of ``cp``: in a span when enabled."""
    instruments = _active
    if instruments is None or not (instruments.live or instruments.check_live()):
        try:
            return fn(*args, **kwargs)
        except _REFUSED as exc:
            _log_refused(cp, operation, args, exc)
            raise
    call = _Call(instruments, cp, operation, args)
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        call.failed(exc, args)
        raise
    call.succeeded(result)
    return result


async def arun(
    cp: Any, operation: str, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
) -> T:
    """The asyncio twin of `run`."""
    instruments = _active
    if instruments is None or not (instruments.live or instruments.check_live()):
        try:
            return await fn(*args, **kwargs)
        except _REFUSED as exc:
            _log_refused(cp, operation, args, exc)
            raise
    call = _Call(instruments, cp, operation, args)
    try:
        result = await fn(*args, **kwargs)
    except BaseException as exc:
        call.failed(exc, args)
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

"""OpenTelemetry SDK in-memory exporters wired into the library for one test."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents_persistence import telemetry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.sdk.trace import ReadableSpan

P = "agents_persistence."


class Recorder:
    """Spans and metric points recorded by the library while it is installed."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def spans(self, namespace: str | None = None) -> list[ReadableSpan]:
        """Finished spans, oldest first, optionally only those of one namespace."""
        found = list(self.exporter.get_finished_spans())
        if namespace is None:
            return found
        return [s for s in found if (s.attributes or {}).get(P + "namespace") == namespace]

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, data point) of every point of the metric ``name``."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        found += [(dict(p.attributes or {}), p) for p in metric.data.data_points]
        return found


@contextmanager
def recording() -> Iterator[Recorder]:
    """Route the library's spans and metrics to a fresh `Recorder`, then restore the default."""
    was_enabled = telemetry.is_enabled()
    recorder = Recorder()
    telemetry.enable(
        tracer_provider=recorder.tracer_provider, meter_provider=recorder.meter_provider
    )
    try:
        yield recorder
    finally:
        if was_enabled:
            telemetry.enable()
        else:
            telemetry.disable()
        recorder.tracer_provider.shutdown()
        recorder.meter_provider.shutdown()

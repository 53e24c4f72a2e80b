"""``python -m bench.telemetry [--quick]``: what tracing costs per save and load (10 KB).

Three modes, interleaved run by run on the same checkpointer so they share the noise:

- ``off``: `telemetry.disable()`, the same code path as without opentelemetry installed;
- ``api``: on, with no SDK installed (OpenTelemetry's no-op API: what a library user who has
  the API but never configured OpenTelemetry pays);
- ``sdk``: on, with the SDK: every span sampled and batched to an exporter that drops it, and
  every metric aggregated in memory.

Figures are the median over runs of each run's p50, in microseconds; the overhead is that median
minus the ``off`` one. Written to ``bench/results/telemetry.md``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from agents_persistence import MemoryCheckpointer, SQLCheckpointer, telemetry
from bench.common import KB, make_state, percentile, settle

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from opentelemetry.sdk.trace import ReadableSpan

RESULTS = Path(__file__).parent / "results" / "telemetry.md"
MODES = ("off", "api", "sdk")


class _Drop(SpanExporter):
    """An exporter that drops every span: the SDK's own cost, not a backend's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _switch(mode: str, sdk: tuple[TracerProvider, MeterProvider]) -> None:
    if mode == "off":
        telemetry.disable()
    elif mode == "api":
        telemetry.enable()  # the global providers: no-op, since nothing installed an SDK
    else:
        telemetry.enable(tracer_provider=sdk[0], meter_provider=sdk[1])


def _p50_us(fn: Callable[[int], Any], ops: int) -> float:
    samples = []
    for i in range(ops):
        start = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - start) / 1e3)
    return percentile(samples, 50)


def measure(cp: Any, reps: int, ops: int) -> dict[str, dict[str, float]]:
    """{op: {mode: median p50 µs}} for save_state and load_state of a 10 KB state."""
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    sdk = (tracer_provider, meter_provider)
    state = make_state(10 * KB)
    threads = [f"t{i}" for i in range(16)]
    for thread in threads:
        cp.save_state(thread, state)
    ops_of: dict[str, Callable[[int], Any]] = {
        "save_state": lambda i: cp.save_state(threads[i % 16], state),
        "load_state": lambda i: cp.load_state(threads[i % 16]),
    }
    runs: dict[str, dict[str, list[float]]] = {op: {m: [] for m in MODES} for op in ops_of}
    for rep in range(reps + 1):
        order = MODES[rep % 3 :] + MODES[: rep % 3]
        for mode in order:
            _switch(mode, sdk)
            for op, fn in ops_of.items():
                settle()
                p50 = _p50_us(fn, ops)
                if rep:  # the first round warms caches and connections
                    runs[op][mode].append(p50)
    telemetry.enable()
    tracer_provider.shutdown()
    meter_provider.shutdown()
    return {op: {m: statistics.median(v) for m, v in by.items()} for op, by in runs.items()}


def main() -> None:
    """Measure on memory and SQLite, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and operations")
    args = parser.parse_args()
    reps, ops = (3, 300) if args.quick else (7, 1000)
    was_enabled = telemetry.is_enabled()
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        with MemoryCheckpointer() as memory:
            results["memory"] = measure(memory, reps, ops)
        url = f"sqlite:///{tmp}/bench.sqlite3"
        with SQLCheckpointer.from_url(url, auto_migrate=True) as sqlite:
            results["sqlite"] = measure(sqlite, reps, ops)
    if not was_enabled:
        telemetry.disable()
    lines = [
        "# Telemetry overhead (10 KB state, p50 in µs, median of runs)",
        "",
        f"`python -m bench.telemetry{' --quick' if args.quick else ''}`: {reps} runs of {ops}"
        " operations per mode. off = disabled (the path taken without opentelemetry);"
        " api = enabled, no SDK (no-op API); sdk = enabled, SDK sampling every span to a"
        " batch processor whose exporter drops it, metrics aggregated in memory.",
        "",
        "| store | operation | off | api | sdk | api overhead | sdk overhead |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for store, by_op in results.items():
        for op, p in by_op.items():
            lines.append(
                f"| {store} | {op} | {p['off']:.1f} | {p['api']:.1f} | {p['sdk']:.1f}"
                f" | {p['api'] - p['off']:+.1f} ({(p['api'] / p['off'] - 1) * 100:+.1f}%)"
                f" | {p['sdk'] - p['off']:+.1f} ({(p['sdk'] / p['off'] - 1) * 100:+.1f}%) |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

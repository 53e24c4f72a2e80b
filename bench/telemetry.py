"""``python -m bench.telemetry [--quick]``: what tracing costs per save and load (10 KB).

Three modes, interleaved run by run on the same checkpointer so they share the noise:

- ``off``: `telemetry.disable()`, the same code path as without opentelemetry installed;
- ``api``: on, with no SDK installed (OpenTelemetry's no-op API: what a library user who has
  the API but never configured OpenTelemetry pays);
- ``sdk``: on, with the SDK: every span sampled and handed synchronously to an exporter that
  drops it (``SimpleSpanProcessor``), every metric aggregated in memory: the instrumentation's
  own cost;
- ``batch``: the same with the ``BatchSpanProcessor`` production setups use, whose export
  thread competes for the GIL.

Figures are the median over runs of each run's p50, in microseconds; the overhead is that median
minus the ``off`` one. The CPU time of the calling thread per call is reported beside the
wall-clock p50: it is what the instrumentation itself costs, and barely moves with other load on
the machine. Written to ``bench/results/telemetry.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

from agents_persistence import MemoryCheckpointer, SQLCheckpointer, telemetry
from bench.common import KB, make_state, percentile, settle

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from opentelemetry.sdk.trace import ReadableSpan

RESULTS = Path(__file__).parent / "results" / "telemetry.md"
MODES = ("off", "api", "sdk", "batch")


class _Drop(SpanExporter):
    """An exporter that drops every span: the SDK's own cost, not a backend's."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _switch(mode: str, tracers: dict[str, TracerProvider], meter: MeterProvider) -> None:
    if mode == "off":
        telemetry.disable()
    elif mode == "api":
        telemetry.enable()  # the global providers: no-op, since nothing installed an SDK
    else:
        telemetry.enable(tracer_provider=tracers[mode], meter_provider=meter)


def _timed(fn: Callable[[int], Any], ops: int) -> tuple[float, float]:
    """Wall-clock p50 and mean CPU time of this thread per call, in µs."""
    samples = []
    cpu = time.thread_time_ns()
    for i in range(ops):
        start = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - start) / 1e3)
    return percentile(samples, 50), (time.thread_time_ns() - cpu) / 1e3 / ops


Figures = dict[str, dict[str, tuple[float, float]]]
Results = dict[str, Figures]


def measure(cp: Any, reps: int, ops: int) -> Figures:
    """{op: {mode: (wall p50, CPU mean)}}, medians over runs, for 10 KB saves and loads."""
    tracers = {"sdk": TracerProvider(), "batch": TracerProvider()}
    tracers["sdk"].add_span_processor(SimpleSpanProcessor(_Drop()))
    tracers["batch"].add_span_processor(BatchSpanProcessor(_Drop()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    state = make_state(10 * KB)
    threads = [f"t{i}" for i in range(16)]
    for thread in threads:
        cp.save_state(thread, state)
    ops_of: dict[str, Callable[[int], Any]] = {
        "save_state": lambda i: cp.save_state(threads[i % 16], state),
        "load_state": lambda i: cp.load_state(threads[i % 16]),
    }
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {
        op: {m: [] for m in MODES} for op in ops_of
    }
    for rep in range(reps + 1):
        shift = rep % len(MODES)
        for mode in MODES[shift:] + MODES[:shift]:
            _switch(mode, tracers, meter_provider)
            for op, fn in ops_of.items():
                settle()
                figures = _timed(fn, ops)
                if rep:  # the first round warms caches and connections
                    runs[op][mode].append(figures)
    telemetry.enable()
    for provider in tracers.values():
        provider.shutdown()
    meter_provider.shutdown()
    return {
        op: {
            m: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v))
            for m, v in by.items()
        }
        for op, by in runs.items()
    }


def _table(results: Results, which: int) -> list[str]:
    lines = [
        "| store | operation | off | api | sdk | batch | api overhead | sdk overhead"
        " | batch overhead |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for store, by_op in results.items():
        for op, figures in by_op.items():
            p = {m: figures[m][which] for m in MODES}
            cells = [f"{p[m]:.1f}" for m in MODES]
            cells += [
                f"{p[m] - p['off']:+.1f} ({(p[m] / p['off'] - 1) * 100:+.0f}%)" for m in MODES[1:]
            ]
            lines.append(f"| {store} | {op} | " + " | ".join(cells) + " |")
    return lines


def run(quick: bool) -> Results:
    """Measure on memory and SQLite: {store: {op: {mode: (wall p50, CPU mean)}}}."""
    reps, ops = (3, 300) if quick else (7, 1000)
    was_enabled = telemetry.is_enabled()
    results: Results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with MemoryCheckpointer() as memory:
                results["memory"] = measure(memory, reps, ops)
            url = f"sqlite:///{tmp}/bench.sqlite3"
            with SQLCheckpointer.from_url(url, auto_migrate=True) as sqlite:
                results["sqlite"] = measure(sqlite, reps, ops)
    finally:
        if not was_enabled:
            telemetry.disable()
    return results


def markdown(results: Results, command: str, quick: bool) -> str:
    """The tables of ``telemetry.md``: CPU time per call, then wall-clock p50."""
    reps, ops = (3, 300) if quick else (7, 1000)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# Telemetry overhead (10 KB state, µs per call, median of runs)",
        "",
        f"`{command}`: {reps} runs of {ops}"
        f" calls per mode and operation; {os.cpu_count()} cores, load average {load} at the"
        " end. off = disabled (the path taken without opentelemetry installed); api = enabled,"
        " no SDK (the no-op API); sdk = enabled, the SDK sampling every span into a simple"
        " processor whose exporter drops it, metrics aggregated in memory; batch = the same"
        " with a batch span processor. Overheads are against off.",
        "",
        "CPU time of the calling thread per call (mean): what the instrumentation costs,"
        " least disturbed by other load on the machine.",
        "",
        *_table(results, 1),
        "",
        "Wall-clock p50 per call (includes waiting: disk syncs, the GIL, other processes).",
        "",
        *_table(results, 0),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure on memory and SQLite, print and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs and operations")
    args = parser.parse_args()
    command = f"python -m bench.telemetry{' --quick' if args.quick else ''}"
    text = markdown(run(args.quick), command, args.quick)
    print(text)
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()

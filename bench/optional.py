"""Optional dependencies of the benchmark: which parts need which, and what to say when absent.

The ``bench`` extra brings matplotlib, pyinstrument, LangGraph with its SQLite and PostgreSQL
savers, and boto3; the OpenTelemetry SDK comes with the development tools. Without one of them
the part that needs it is skipped, and the reason is printed and written into the results.
"""

from __future__ import annotations

import importlib

_INSTALL = {
    "matplotlib": "matplotlib (pip install -e '.[bench]')",
    "pyinstrument": "pyinstrument (pip install -e '.[bench]')",
    "opentelemetry.sdk": "opentelemetry-sdk (pip install opentelemetry-sdk)",
    "cryptography": "cryptography (pip install -e '.[encryption]')",
    "langgraph.checkpoint.memory": "langgraph-checkpoint (pip install -e '.[bench]')",
    "langgraph.checkpoint.sqlite": "langgraph-checkpoint-sqlite (pip install -e '.[bench]')",
    "langgraph.checkpoint.postgres": "langgraph-checkpoint-postgres (pip install -e '.[bench]')",
}

SECTION_NEEDS = {
    "profile": "pyinstrument",
    "telemetry": "opentelemetry.sdk",
    "encryption": "cryptography",
}
"""Sections that cannot run at all without a module."""

SECTION_PARTS = {"scale": ("pyinstrument", "first-page profiles")}
"""Sections that run without a module, leaving out the part named."""


def missing(module: str) -> str | None:
    """``None`` if ``module`` imports, else why not and how to install it."""
    try:
        importlib.import_module(module)
    except ImportError as exc:
        return f"{_INSTALL.get(module, module)} not installed ({exc})"
    return None

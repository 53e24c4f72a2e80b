"""Imported first by the LangGraph savers: without the ``langgraph`` extra, `MissingExtraError`."""

from __future__ import annotations

from agents_persistence._extras import require

require("sqlite", "the LangGraph SQL savers")
require("langgraph", "the LangGraph SQL savers")

"""Imported first by ``demo --langgraph``: without ``deepagents``, `MissingExtraError`."""

from __future__ import annotations

from agents_persistence._extras import require

require("deepagents", "demo --langgraph")

"""Imported first by the SQL store: without the ``sqlite`` extra, `MissingExtraError`."""

from __future__ import annotations

from agents_persistence._extras import require

require("sqlite", "the SQL store")

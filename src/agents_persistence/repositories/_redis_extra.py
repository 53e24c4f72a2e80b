"""Imported first by the Redis store: without the ``redis`` extra, `MissingExtraError`."""

from __future__ import annotations

from agents_persistence._extras import require

require("redis", "the Redis store")

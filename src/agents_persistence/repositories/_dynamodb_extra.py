"""Imported first by the DynamoDB store: without the ``dynamodb`` extra, `MissingExtraError`."""

from __future__ import annotations

from agents_persistence._extras import require

require("dynamodb", "the DynamoDB store")

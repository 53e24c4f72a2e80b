"""Registry of store kits: every module listed here that exists contributes its ``KITS``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import StoreKit

_MODULES = ["memory", "sql", "redis", "dynamodb"]


def all_kits() -> list[StoreKit]:
    """Every registered kit, in a stable order."""
    kits: list[StoreKit] = []
    for name in _MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # that store has no kit yet
            raise
        kits.extend(module.KITS)
    return kits

"""Which extra installs which driver, and the error that names it when a driver is missing.

Each store module imports its guard (``repositories/_sql_extra.py`` and its Redis and DynamoDB
siblings) before any driver, so importing a store without its extra raises `MissingExtraError`
naming the extra, whether through ``from agents_persistence import SQLCheckpointer``, a direct
import of the store module or `open_checkpointer`.
"""

from __future__ import annotations

import importlib

from agents_persistence.errors import MissingExtraError

__all__ = ["DRIVER_EXTRAS", "STORE_PACKAGES", "missing_extra", "require"]

STORE_PACKAGES: dict[str, tuple[str, ...]] = {
    "sqlite": ("sqlalchemy", "alembic", "zstandard"),
    "redis": ("redis", "redis_om", "zstandard"),
    "dynamodb": ("pynamodb", "zstandard"),
    "langgraph": ("langgraph.checkpoint.base",),
    "deepagents": ("langgraph.checkpoint.base", "deepagents"),
}
"""Packages a store module imports, by the extra that installs them."""

DRIVER_EXTRAS: dict[str, str] = {
    "psycopg": "postgres",
    "pymysql": "mysql",
    "aiomysql": "mysql",
    "aiosqlite": "sqlite",
}
"""SQL drivers the library's ``from_url`` picks, by the extra that installs them."""


def missing_extra(what: str, extra: str, module: str | None) -> MissingExtraError:
    """The error for ``what`` (a store, a URL) lacking ``module``, which ``extra`` installs."""
    return MissingExtraError(
        f"{what} needs {module or 'its driver'}: pip install 'agents-persistence[{extra}]'",
        extra=extra,
        name=module,
    )


def require(extra: str, what: str) -> None:
    """Import the packages of ``extra``; raise `MissingExtraError` if one is not installed."""
    for package in STORE_PACKAGES[extra]:
        try:
            importlib.import_module(package)
        except ModuleNotFoundError as exc:
            raise missing_extra(what, extra, exc.name) from exc

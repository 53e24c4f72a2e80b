"""The DynamoDB table's schema, read from the PynamoDB model: keys, index, projection, TTL.

Every attribute and index name the store sends comes from the model through PynamoDB's public
API (``get_attributes()``, each attribute's ``attr_name``/``attr_type``/``is_hash_key``, the
index's ``Meta.index_name``, ``Meta.attributes`` and ``Meta.projection``). `TableSchema` turns
them into what the table's requests need: the ``CreateTable`` arguments, the key description
PynamoDB's `TableConnection` works from (so it never has to describe the table first), and the
check of an existing table's description. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pynamodb.attributes import TTLAttribute
from pynamodb.connection.base import MetaTable
from pynamodb.constants import (
    ATTR_DEFINITIONS,
    ATTR_NAME,
    ATTR_TYPE,
    GLOBAL_SECONDARY_INDEXES,
    INDEX_NAME,
    KEY_SCHEMA,
    KEY_TYPE,
    NON_KEY_ATTRIBUTES,
    PROJECTION_TYPE,
    TABLE_NAME,
)
from pynamodb.types import HASH, RANGE

from agents_persistence.errors import ConfigurationError, SchemaNotReadyError

if TYPE_CHECKING:
    from pynamodb.attributes import Attribute

    from agents_persistence.models.dynamodb import CheckpointItem

__all__ = ["TableSchema"]


def _key_of(attributes: dict[str, Attribute[Any]], kind: str) -> Attribute[Any]:
    found = [a for a in attributes.values() if (a.is_hash_key if kind == HASH else a.is_range_key)]
    if len(found) != 1:
        raise ConfigurationError(f"the model must have exactly one {kind} key, found {len(found)}")
    return found[0]


@dataclass(frozen=True, slots=True)
class TableSchema:
    """Names and types of a checkpoint table, as its model declares them.

    Attributes:
        hash_key: The table's hash key attribute.
        range_key: The table's range key attribute (``None``: the table has none).
        index_name: The listing index.
        index_hash_key: The index's hash key attribute.
        index_range_key: The index's range key attribute.
        projection: The non-key attributes the index holds.
        ttl_attribute: The attribute the table's Time to Live reads.
        key_types: DynamoDB type (``S``, ``N``...) of each key attribute, table and index.
    """

    hash_key: str
    range_key: str | None
    index_name: str
    index_hash_key: str
    index_range_key: str
    projection: tuple[str, ...]
    ttl_attribute: str
    key_types: dict[str, str]

    @classmethod
    def of(cls, model: type[CheckpointItem]) -> TableSchema:
        """Read the schema from ``model``; `ConfigurationError` if the model is inconsistent."""
        attributes = model.get_attributes()
        by_name = {attribute.attr_name: attribute for attribute in attributes.values()}
        index = model.by_updated.Meta
        index_hash = _key_of(index.attributes, HASH)
        index_range = _key_of(index.attributes, RANGE)
        for key in (index_hash, index_range):
            if key.attr_name not in by_name:
                raise ConfigurationError(
                    f"index key {key.attr_name!r} is not an attribute of {model.__name__}"
                )
        projected = []
        for name in index.projection.non_key_attributes:
            if name not in attributes:
                raise ConfigurationError(
                    f"the listing index projects {name!r}, not an attribute of {model.__name__}"
                )
            projected.append(attributes[name].attr_name)
        ttl = [a.attr_name for a in attributes.values() if isinstance(a, TTLAttribute)]
        if len(ttl) != 1:
            raise ConfigurationError(f"{model.__name__} must have one TTLAttribute")
        hash_key = _key_of(attributes, HASH)
        ranges = [a for a in attributes.values() if a.is_range_key]
        keys = (hash_key, *ranges, index_hash, index_range)
        return cls(
            hash_key=hash_key.attr_name,
            range_key=ranges[0].attr_name if ranges else None,
            index_name=index.index_name,
            index_hash_key=index_hash.attr_name,
            index_range_key=index_range.attr_name,
            projection=tuple(projected),
            ttl_attribute=ttl[0],
            key_types={key.attr_name: key.attr_type for key in keys},
        )

    def _key_schema(self, *keys: tuple[str, str]) -> list[dict[str, str]]:
        return [{ATTR_NAME: name, KEY_TYPE: kind} for name, kind in keys]

    def _table_keys(self) -> list[dict[str, str]]:
        if self.range_key is None:
            return self._key_schema((self.hash_key, HASH))
        return self._key_schema((self.hash_key, HASH), (self.range_key, RANGE))

    def key_set(self) -> set[tuple[str, str]]:
        """The table's key schema as (attribute, HASH/RANGE) pairs."""
        return {(k[ATTR_NAME], k[KEY_TYPE]) for k in self._table_keys()}

    def _definitions(self) -> list[dict[str, str]]:
        return [{ATTR_NAME: name, ATTR_TYPE: kind} for name, kind in self.key_types.items()]

    def create_table_arguments(self) -> dict[str, Any]:
        """Keyword arguments of `TableConnection.create_table` for this schema."""
        return {
            "attribute_definitions": self._definitions(),
            "key_schema": self._table_keys(),
            "global_secondary_indexes": [
                {
                    "index_name": self.index_name,
                    "key_schema": self._key_schema(
                        (self.index_hash_key, HASH), (self.index_range_key, RANGE)
                    ),
                    "projection": {
                        PROJECTION_TYPE: "INCLUDE",
                        NON_KEY_ATTRIBUTES: list(self.projection),
                    },
                }
            ],
        }

    def meta_table(self, table_name: str) -> MetaTable:
        """The table description PynamoDB's `TableConnection` builds its requests from."""
        return MetaTable(
            {
                TABLE_NAME: table_name,
                KEY_SCHEMA: self._table_keys(),
                ATTR_DEFINITIONS: self._definitions(),
                GLOBAL_SECONDARY_INDEXES: [
                    {
                        INDEX_NAME: self.index_name,
                        KEY_SCHEMA: self._key_schema(
                            (self.index_hash_key, HASH), (self.index_range_key, RANGE)
                        ),
                    }
                ],
            }
        )

    def check(self, table_name: str, description: dict[str, Any]) -> None:
        """Raise `SchemaNotReadyError` unless an existing table has this schema's keys and index."""
        keys = {(k[ATTR_NAME], k[KEY_TYPE]) for k in description.get(KEY_SCHEMA, [])}
        if keys != self.key_set():
            ranged = "no range key" if self.range_key is None else f"range key {self.range_key!r}"
            raise SchemaNotReadyError(
                f"DynamoDB table {table_name!r} exists with another key schema {sorted(keys)};"
                f" the store needs hash key {self.hash_key!r}"
                f" ({self.key_types[self.hash_key]}) and {ranged}"
            )
        wanted = {(self.index_hash_key, HASH), (self.index_range_key, RANGE)}
        for index in description.get(GLOBAL_SECONDARY_INDEXES) or []:
            if index.get(INDEX_NAME) == self.index_name:
                found = {(k[ATTR_NAME], k[KEY_TYPE]) for k in index.get(KEY_SCHEMA, [])}
                if found == wanted:
                    return
        raise SchemaNotReadyError(
            f"DynamoDB table {table_name!r} exists without the {self.index_name!r} index"
            f" (hash {self.index_hash_key!r}, range {self.index_range_key!r}); add it, or use"
            " another table"
        )

    def check_ttl(self, table_name: str, attribute: object) -> None:
        """Raise `SchemaNotReadyError` if the table's enabled TTL reads another attribute."""
        if attribute != self.ttl_attribute:
            raise SchemaNotReadyError(
                f"DynamoDB table {table_name!r} expires items by {attribute!r};"
                f" the store needs Time to Live on {self.ttl_attribute!r}"
            )

"""DynamoDB's capacity arithmetic, over items as the wire carries them (typed JSON).

Sizes follow the developer guide's "Item sizes and formats": a name's UTF-8 bytes plus its
value's (strings their UTF-8 bytes, numbers a byte per two significant digits plus one, binary
its bytes, booleans and nulls one, lists and maps 3 bytes plus a byte per element). Units follow
"Read/write capacity mode": a write is 1 unit per KB (rounded up, the larger of the item before
and after), a transactional write twice that; a read is 1 unit per 4 KB strongly consistent,
half of it eventually consistent. A global secondary index is written, at the projected item's
size, only when the write adds, removes or changes what it projects (two writes when its key
changes); transactions reach indexes by propagation after they commit, so an index write costs
1 unit per KB whatever wrote the table.

The table's keys and each index's keys and projection are read from the table as described
(built from template.yaml), never assumed.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096
# Each of DynamoDB's partitions serves at most this many units a second (the developer guide's
# "Burst and adaptive capacity"); a partition key never spans partitions.
PARTITION_WCU_PER_S = 1000
PARTITION_RCU_PER_S = 3000
TABLE = "table"  # what the base table is called beside its indexes

Item = Mapping[str, Any]  # an item in DynamoDB's typed JSON: {"name": {"S": "..."}}


def item_size(item: Item) -> int:
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def value_size(typed: Mapping[str, Any]) -> int:
    ((tag, value),) = typed.items()
    if tag == "S":
        return len(str(value).encode())
    if tag == "N":
        return number_size(str(value))
    if tag == "B":
        return _binary_size(value)
    if tag in ("BOOL", "NULL"):
        return 1
    if tag == "SS":
        return sum(len(str(member).encode()) for member in value)
    if tag == "NS":
        return sum(number_size(str(member)) for member in value)
    if tag == "BS":
        return sum(_binary_size(member) for member in value)
    if tag == "L":
        return 3 + sum(value_size(member) + 1 for member in value)
    if tag == "M":
        return 3 + sum(len(name.encode()) + value_size(member) + 1 for name, member in value.items())
    raise ValueError(f"not a DynamoDB type: {tag!r}")


def number_size(text: str) -> int:
    digits = Decimal(text).normalize().as_tuple().digits
    return (len(digits) + 1) // 2 + 1


def _binary_size(value: Any) -> int:
    # botocore hands bytes; a JSON request body carries them base64-encoded.
    return len(value) if isinstance(value, bytes | bytearray) else len(base64.b64decode(value))


def write_units(size: int, *, transactional: bool = False) -> int:
    return max(1, math.ceil(size / WRITE_UNIT_BYTES)) * (2 if transactional else 1)


def read_units(size: int, *, consistent: bool, transactional: bool = False) -> float:
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return units * (2.0 if transactional else 1.0 if consistent else 0.5)


def query_units(size: int, *, consistent: bool) -> float:
    """A query's units as they grow with what it reads: its items' bytes in 4 KB units, not
    rounded up per request (a sweep of many due jobs reads pages of them; an empty query's
    minimum unit is a cost per sweep, not per job)."""
    return size / READ_UNIT_BYTES * (1.0 if consistent else 0.5)


def partition_value(typed: Mapping[str, Any]) -> str:
    ((_, value),) = typed.items()
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Index:
    name: str
    hash_key: str
    range_key: str | None
    projection: str  # ALL, KEYS_ONLY or INCLUDE
    included: frozenset[str]

    def project(self, item: Item | None, table_keys: tuple[str, ...]) -> dict[str, Any] | None:
        """The item as this index holds it, or None when the index does not hold it (sparse)."""
        keys = (self.hash_key, *((self.range_key,) if self.range_key else ()))
        if item is None or any(key not in item for key in keys):
            return None
        if self.projection == "ALL":
            return dict(item)
        kept = {*table_keys, *keys, *(self.included if self.projection == "INCLUDE" else ())}
        return {name: value for name, value in item.items() if name in kept}

    def key_of(self, projected: Item) -> tuple[str, ...]:
        keys = (self.hash_key, *((self.range_key,) if self.range_key else ()))
        return tuple(partition_value(projected[key]) for key in keys)


@dataclass(frozen=True)
class Schema:
    table: str
    hash_key: str
    range_key: str | None
    indexes: tuple[Index, ...]

    @classmethod
    def described(cls, table: Mapping[str, Any]) -> Schema:
        """From DescribeTable's `Table`."""
        hash_key, range_key = _keys(table["KeySchema"])
        indexes = []
        for index in table.get("GlobalSecondaryIndexes", []):
            index_hash, index_range = _keys(index["KeySchema"])
            projection = index.get("Projection", {})
            indexes.append(
                Index(
                    name=index["IndexName"],
                    hash_key=index_hash,
                    range_key=index_range,
                    projection=projection.get("ProjectionType", "ALL"),
                    included=frozenset(projection.get("NonKeyAttributes", [])),
                )
            )
        return cls(table["TableName"], hash_key, range_key, tuple(indexes))

    @property
    def table_keys(self) -> tuple[str, ...]:
        return (self.hash_key, *((self.range_key,) if self.range_key else ()))

    def index(self, name: str) -> Index:
        return next(index for index in self.indexes if index.name == name)

    def index_writes(self, index: Index, old: Item | None, new: Item | None) -> list[tuple[str, int]]:
        """The index's writes (partition key value, projected bytes) when `old` becomes `new`."""
        before = index.project(old, self.table_keys)
        after = index.project(new, self.table_keys)
        if before is not None and after is not None and index.key_of(before) == index.key_of(after):
            if before == after:
                return []
            size = max(item_size(before), item_size(after))
            return [(partition_value(after[index.hash_key]), size)]
        writes = []
        if before is not None:
            writes.append((partition_value(before[index.hash_key]), item_size(before)))
        if after is not None:
            writes.append((partition_value(after[index.hash_key]), item_size(after)))
        return writes


def _keys(schema: list[Mapping[str, str]]) -> tuple[str, str | None]:
    hash_key = next(key["AttributeName"] for key in schema if key["KeyType"] == "HASH")
    range_key = next((key["AttributeName"] for key in schema if key["KeyType"] == "RANGE"), None)
    return hash_key, range_key

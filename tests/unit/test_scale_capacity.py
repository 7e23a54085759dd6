"""`make scale`'s DynamoDB arithmetic: item sizes, units, and when an index is written."""

from __future__ import annotations

from typing import Any

from klingflow_dev.scale.capacity import (
    Index,
    Schema,
    item_size,
    query_units,
    read_units,
    write_units,
)

SCHEMA = Schema(
    table="jobs",
    hash_key="pk",
    range_key=None,
    indexes=(
        Index("by-shard", "shard", "due", "ALL", frozenset()),
        Index("keys-only", "group", None, "KEYS_ONLY", frozenset()),
    ),
)


def job(**attributes: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"pk": {"S": "JOB#1"}}
    for name, value in attributes.items():
        item[name] = {"N": str(value)} if isinstance(value, int) else {"S": value}
    return item


def test_sizes_follow_dynamodbs_rules_for_names_strings_numbers_and_documents() -> None:
    # "pk" + "JOB#1": 2 + 5; "n" + 12345 (3 bytes for 5 digits + 1): 1 + 4
    assert item_size({"pk": {"S": "JOB#1"}, "n": {"N": "12345"}}) == 12
    # trailing zeros and the exponent are not significant digits
    assert item_size({"n": {"N": "1000000"}}) == item_size({"n": {"N": "1"}}) == 1 + 2
    # a map: 3 bytes, plus each member's name, value and 1 byte; a list likewise without names
    assert item_size({"m": {"M": {"a": {"S": "xy"}}}}) == 1 + 3 + (1 + 2 + 1)
    assert item_size({"l": {"L": [{"BOOL": True}, {"NULL": True}]}}) == 1 + 3 + 2 * (1 + 1)
    # binary counts its bytes, whether as bytes or as the base64 a request body carries
    assert item_size({"b": {"B": b"\x00\x01\x02"}}) == item_size({"b": {"B": "AAEC"}}) == 4
    assert item_size({"s": {"S": "é"}}) == 1 + 2  # UTF-8 bytes, not characters


def test_units_round_up_per_kb_written_and_per_4_kb_read() -> None:
    assert [write_units(size) for size in (0, 1024, 1025, 3000)] == [1, 1, 2, 3]
    assert write_units(1025, transactional=True) == 4
    assert read_units(4096, consistent=True) == 1
    assert read_units(4097, consistent=False) == 1.0  # two units, halved
    assert read_units(10, consistent=False, transactional=True) == 2
    # a query's units grow with its bytes; nothing read costs nothing per job
    assert query_units(0, consistent=False) == 0
    assert query_units(4096, consistent=False) == 0.5


def test_an_index_is_written_when_its_item_appears_changes_moves_or_leaves() -> None:
    due = SCHEMA.index("by-shard")
    new = job(shard="1", due=100, status="QUEUED")

    # appears: one write at the projected size
    assert SCHEMA.index_writes(due, None, new) == [("1", item_size(new))]
    # a projected attribute changes, keys the same: one write
    changed = {**new, "status": {"S": "SUBMITTED"}}
    assert SCHEMA.index_writes(due, new, changed) == [("1", item_size(changed))]
    # nothing it projects changes: no write
    assert SCHEMA.index_writes(due, new, dict(new)) == []
    # its key changes (a new due time): a delete and a put
    later = {**new, "due": {"N": "160"}}
    assert SCHEMA.index_writes(due, new, later) == [("1", item_size(new)), ("1", item_size(later))]
    # its key attribute removed (sparse): one delete; an item it never held: nothing
    ended = {k: v for k, v in new.items() if k not in ("shard", "due")}
    assert SCHEMA.index_writes(due, new, ended) == [("1", item_size(new))]
    assert SCHEMA.index_writes(due, ended, {**ended, "status": {"S": "ARCHIVED"}}) == []


def test_a_keys_only_index_ignores_changes_to_what_it_does_not_project() -> None:
    index = SCHEMA.index("keys-only")
    listed = job(group="G", status="QUEUED", note="a")
    projected = {"pk": listed["pk"], "group": listed["group"]}

    assert SCHEMA.index_writes(index, None, listed) == [("G", item_size(projected))]
    assert SCHEMA.index_writes(index, listed, {**listed, "status": {"S": "ARCHIVED"}}) == []


def test_the_schema_is_read_from_the_table_as_described() -> None:
    described = {
        "TableName": "t",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "i",
                "KeySchema": [
                    {"AttributeName": "a", "KeyType": "HASH"},
                    {"AttributeName": "b", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["c"]},
            }
        ],
    }
    schema = Schema.described(described)
    assert (schema.table, schema.table_keys) == ("t", ("pk",))
    assert schema.indexes == (Index("i", "a", "b", "INCLUDE", frozenset({"c"})),)

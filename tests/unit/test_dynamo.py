"""The DynamoDB table wrapper over the low-level client, against moto's table built from
template.yaml: plain values round-trip as a boto3 resource table would give them back (binary
as bytes, which a resource wraps in `Binary`), values are typed by boto3's own rules, and
errors are botocore's own."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

import boto3
import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from klingflow.infra.dynamo import Table, from_dynamo, to_dynamo, unstorable
from klingflow.jobs.writes import to_dynamo as store_form

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

VALUES: dict[str, Any] = {
    "text": "héllo",
    "empty_text": "",
    "whole": Decimal(7),
    "fraction": Decimal("0.350001"),
    "negative": Decimal("-12.5"),
    "huge": Decimal("123456789012345678901234567890"),
    "yes": True,
    "no": False,
    "nothing": None,
    "blob": b"\x00\xffbytes",
    "words": {"a", "b"},
    "numbers": {Decimal(1), Decimal("2.5")},
    "list": ["x", Decimal(1), None, True, {"deep": [Decimal("0.1"), {"deeper": "y"}]}],
    "empty_list": [],
    "map": {"nested": {"twice": {"n": Decimal(3)}}, "s": "t"},
    "empty_map": {},
}


def _code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return str(error.value.response["Error"]["Code"])


def test_every_kind_of_value_round_trips(table: Table) -> None:
    table.put_item(Item={"pk": "ROUND#1", **VALUES})
    item = table.get_item(Key={"pk": "ROUND#1"}, ConsistentRead=True)["Item"]
    assert item == {"pk": "ROUND#1", **VALUES}
    assert type(item["blob"]) is bytes
    assert isinstance(item["whole"], Decimal) and isinstance(item["list"][4]["deep"][0], Decimal)


def test_it_reads_exactly_what_a_resource_table_reads(table: Table) -> None:
    table.put_item(Item={"pk": "ROUND#2", **VALUES})
    resource = boto3.Session(region_name="us-east-1").resource("dynamodb").Table(table.name)
    assert resource.get_item(Key={"pk": "ROUND#2"})["Item"] == table.get_item(Key={"pk": "ROUND#2"})["Item"]
    resource.put_item(Item={"pk": "ROUND#3", **VALUES})
    assert table.get_item(Key={"pk": "ROUND#3"})["Item"] == table.get_item(Key={"pk": "ROUND#2"})["Item"] | {
        "pk": "ROUND#3"
    }


def test_a_missing_item_has_no_item(table: Table) -> None:
    assert "Item" not in table.get_item(Key={"pk": "NOPE"})


def test_floats_are_refused_as_the_resource_refuses_them(table: Table) -> None:
    with pytest.raises(TypeError):
        table.put_item(Item={"pk": "F", "x": 0.1})


def test_projection_and_update_return_plain_values(table: Table) -> None:
    table.put_item(Item={"pk": "U#1", "n": Decimal(1), "keep": {"a": ["b"]}})
    answer = table.update_item(
        Key={"pk": "U#1"},
        UpdateExpression="SET n = n + :one, tags = :tags",
        ExpressionAttributeValues={":one": 1, ":tags": {"x"}},
        ReturnValues="ALL_NEW",
    )
    assert answer["Attributes"] == {"pk": "U#1", "n": Decimal(2), "keep": {"a": ["b"]}, "tags": {"x"}}
    assert table.get_item(Key={"pk": "U#1"}, ProjectionExpression="n")["Item"] == {"n": Decimal(2)}
    assert "Attributes" not in table.update_item(
        Key={"pk": "U#1"}, UpdateExpression="SET n = :n", ExpressionAttributeValues={":n": 5}
    )


def test_a_refused_condition_is_the_clients_own_error_with_the_old_item_plain(table: Table) -> None:
    table.put_item(Item={"pk": "C#1", "status": "RUNNING", "cost": {"usd": Decimal("0.5")}})
    with pytest.raises(ClientError) as refused:
        table.put_item(Item={"pk": "C#1"}, ConditionExpression="attribute_not_exists(pk)")
    assert _code(refused) == "ConditionalCheckFailedException"
    with pytest.raises(ClientError) as refused:
        table.update_item(
            Key={"pk": "C#1"},
            UpdateExpression="SET #s = :to",
            ConditionExpression="#s = :from",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":to": "SUCCEEDED", ":from": "SUBMITTED"},
            ReturnValuesOnConditionCheckFailure="ALL_OLD",
        )
    assert _code(refused) == "ConditionalCheckFailedException"
    assert refused.value.response["Item"] == {  # type: ignore[typeddict-item]
        "pk": "C#1",
        "status": "RUNNING",
        "cost": {"usd": Decimal("0.5")},
    }


def test_other_errors_pass_through_unchanged(table: Table) -> None:
    with pytest.raises(ClientError) as refused:
        table.update_item(Key={"pk": "E#1"}, UpdateExpression="SET :bad")
    assert _code(refused) == "ValidationException"
    missing = Table(table.client, "no-such-table")
    with pytest.raises(ClientError) as refused:
        missing.get_item(Key={"pk": "E#1"})
    assert _code(refused) == "ResourceNotFoundException"


def test_a_transaction_writes_put_update_and_condition_check_on_this_table(table: Table) -> None:
    table.put_item(Item={"pk": "T#guard", "open": True})
    table.transact_write_items(
        TransactItems=[
            {"Put": {"Item": {"pk": "T#1", "usd": Decimal("0.25"), "history": [{"by": "x"}]}}},
            {
                "Update": {
                    "TableName": table.name,
                    "Key": {"pk": "T#2"},
                    "UpdateExpression": "ADD reserved :d SET kinds = :k",
                    "ExpressionAttributeValues": {":d": Decimal("0.25"), ":k": {"a": Decimal(1)}},
                }
            },
            {
                "ConditionCheck": {
                    "Key": {"pk": "T#guard"},
                    "ConditionExpression": "#o = :yes",
                    "ExpressionAttributeNames": {"#o": "open"},
                    "ExpressionAttributeValues": {":yes": True},
                }
            },
        ]
    )
    assert table.get_item(Key={"pk": "T#1"})["Item"] == {
        "pk": "T#1",
        "usd": Decimal("0.25"),
        "history": [{"by": "x"}],
    }
    assert table.get_item(Key={"pk": "T#2"})["Item"] == {
        "pk": "T#2",
        "reserved": Decimal("0.25"),
        "kinds": {"a": Decimal(1)},
    }


def test_a_cancelled_transaction_names_each_reason_and_writes_nothing(table: Table) -> None:
    table.put_item(Item={"pk": "T#guard", "open": False})
    with pytest.raises(ClientError) as refused:
        table.transact_write_items(
            TransactItems=[
                {"Put": {"Item": {"pk": "T#3"}}},
                {
                    "ConditionCheck": {
                        "Key": {"pk": "T#guard"},
                        "ConditionExpression": "#o = :yes",
                        "ExpressionAttributeNames": {"#o": "open"},
                        "ExpressionAttributeValues": {":yes": True},
                        "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                    }
                },
            ]
        )
    assert _code(refused) == "TransactionCanceledException"
    reasons = refused.value.response["CancellationReasons"]
    assert [reason.get("Code") for reason in reasons] == ["None", "ConditionalCheckFailed"]
    assert reasons[1]["Item"] == {"pk": "T#guard", "open": False}
    assert "Item" not in table.get_item(Key={"pk": "T#3"})


def test_a_transaction_refuses_what_is_not_an_operation(table: Table) -> None:
    with pytest.raises(ValueError, match="Scan"):
        table.transact_write_items(TransactItems=[{"Scan": {}}])


def test_query_pages_with_plain_keys(table: Table) -> None:
    for i in range(5):
        table.put_item(Item={"pk": f"JOB#{i}", "list_pk": "Q", "job_id": f"0{i}", "n": Decimal(i)})
    seen: list[dict[str, Any]] = []
    request: dict[str, Any] = {
        "IndexName": "list-index",
        "KeyConditionExpression": "list_pk = :pk",
        "ExpressionAttributeValues": {":pk": "Q"},
        "ScanIndexForward": False,
        "Limit": 2,
    }
    pages = 0
    while True:
        page = table.query(**request)
        pages += 1
        seen.extend(page["Items"])
        last = page.get("LastEvaluatedKey")
        if last is None:
            break
        assert last.keys() == {"pk", "list_pk", "job_id"} and all(isinstance(v, str) for v in last.values())
        request["ExclusiveStartKey"] = last
    assert pages >= 3
    assert [item["n"] for item in seen] == [Decimal(i) for i in (4, 3, 2, 1, 0)]


# Every value DynamoDB holds, nested, and a few it refuses (floats, numbers past 38 digits).
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.decimals(allow_nan=True, allow_infinity=True, places=None),
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.frozensets(st.one_of(st.integers(), st.decimals(allow_nan=False, allow_infinity=False)), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=3),
    st.frozensets(st.binary(max_size=3), max_size=3),
    st.frozensets(st.one_of(st.text(max_size=2), st.integers()), max_size=3),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


def _outcome(call: Any, value: Any) -> Any:
    try:
        return call(value)
    except Exception as error:  # the refusal's type is the outcome
        return type(error)


def _numbers(typed: Any) -> Iterator[str]:
    """Every number a typed value holds."""
    [(kind, held)] = typed.items()
    if kind == "N":
        yield held
    elif kind == "NS":
        yield from held
    elif kind in ("L", "M"):
        for member in held if kind == "L" else held.values():
            yield from _numbers(member)


@given(_VALUES)
def test_a_value_is_typed_as_boto3_types_it_or_refused_as_boto3_refuses_it(value: Any) -> None:
    ours = _outcome(lambda v: to_dynamo({"v": v})["v"], value)
    theirs = _outcome(TypeSerializer().serialize, value)
    if isinstance(theirs, dict) and not all(Decimal(n).is_finite() for n in _numbers(theirs)):
        theirs = TypeError  # boto3 sends "-Infinity" and "-NaN" on; they are refused here
    assert ours == theirs
    if isinstance(ours, dict):  # typed: it reads back as boto3 reads it, binary as bytes
        assert from_dynamo({"v": ours})["v"] == TypeDeserializer().deserialize(
            cast("AttributeValueTypeDef", ours)
        )


def test_the_conversions_name_their_types() -> None:
    typed = to_dynamo({"n": Decimal("1.5"), "s": "x", "m": {"l": [True, None]}, "b": b"z", "ns": {1}})
    assert typed == {
        "n": {"N": "1.5"},
        "s": {"S": "x"},
        "m": {"M": {"l": {"L": [{"BOOL": True}, {"NULL": True}]}}},
        "b": {"B": b"z"},
        "ns": {"NS": ["1"]},
    }
    assert from_dynamo(typed) == {
        "n": Decimal("1.5"),
        "s": "x",
        "m": {"l": [True, None]},
        "b": b"z",
        "ns": {1},
    }
    with pytest.raises(TypeError, match="Float types are not supported"):
        to_dynamo({"f": 1.5})
    # 38 digits, 40 characters: read back exactly (Powertools before 3.36 cut it to 38 characters)
    longest = Decimal("-1234567890123456789012345678901234567.8")
    assert from_dynamo(to_dynamo({"n": longest})) == {"n": longest}


# ---- what DynamoDB cannot hold is refused by its path, before anything is written --------------


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("value", "path", "rule"),
    [
        (10**40 + 7, ("v",), "number_digits"),  # 41 digits
        (10**40, ("v",), "number_digits"),  # as boto3: an int is typed digit by digit
        (Decimal("1E-131"), ("v",), "number_magnitude"),
        (Decimal("1E+126"), ("v",), "number_magnitude"),
        (-(10**130), ("v",), "number_magnitude"),
        (1e-200, ("v",), "number_magnitude"),  # a float, as the store sends it: Decimal("1e-200")
        (float("nan"), ("v",), "number_finite"),
        (Decimal("-Infinity"), ("v",), "number_finite"),
        ({"a": {"b": [1, 10**40 + 7]}}, ("v", "a", "b", 1), "number_digits"),
        ({"a": {"": "x"}}, ("v", "a"), "map_key"),
        (_nested(33), ("v", *([0] * 32)), "nesting"),
        (_nested(5000), ("v", *([0] * 32)), "nesting"),  # past Python's recursion limit
        ("\ud800", ("v",), "utf8"),
        (frozenset(), ("v",), "set"),
        (object(), ("v",), "type"),
    ],
    ids=lambda value: str(value)[:20],
)
def test_a_value_dynamodb_cannot_hold_is_named_by_its_path(
    value: Any, path: tuple[Any, ...], rule: str
) -> None:
    [problem] = unstorable({"pk": "JOB#1", "v": value})
    assert (problem.path, problem.rule) == (path, rule)
    assert problem.message


@pytest.mark.parametrize(
    "value",
    [
        10**38 - 1,  # 38 digits
        Decimal("9.9999999999999999999999999999999999999E+125"),
        Decimal("-1E-130"),
        0,
        0.0,
        _nested(32),
        {"k": ""},
        "",
    ],
    ids=str,
)
def test_the_edges_of_what_dynamodb_holds_are_kept(value: Any) -> None:
    assert unstorable({"pk": "JOB#1", "v": value}) == []


def test_an_item_past_its_size_names_its_largest_value() -> None:
    item = {"pk": "JOB#1", "request": {"prompt": "p" * 500_000, "name": "small"}}
    [problem] = unstorable(item)
    assert (problem.path, problem.rule) == (("request", "prompt"), "item_size")
    assert unstorable(item, max_bytes=100) != []
    # Two values as large, one in a list and one in a map: one of them is named
    [tied] = unstorable({"pk": "JOB#1", "a": ["x" * 300_000], "b": {"c": "y" * 300_000}})
    assert tied.path in (("a", 0), ("b", "c"))
    assert unstorable({"pk": "JOB#1", "request": {"prompt": "p" * 1000}}, max_bytes=2048) == []


_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**60), max_value=10**60),
        st.floats(),  # NaN and infinity included: Python's json reads them
        st.text(max_size=5),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=10,
)


def _at(item: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        item = item[step]
    return item


@given(_JSON)
def test_any_json_value_is_either_typed_within_dynamodbs_limits_or_refused_by_its_path(value: Any) -> None:
    # As the store writes a job: floats become Decimal(str(x)), then the check, then the typing
    item = store_form({"pk": "JOB#1", "v": value})
    problems = unstorable(item)
    if problems:
        for problem in problems:
            _at(item, problem.path)  # names a value the item holds
            assert problem.path[0] == "v" and problem.rule and problem.message
        return
    typed = to_dynamo(item)  # never raises once the check has passed
    for number in (n for member in typed.values() for n in _numbers(member)):
        held = Decimal(number)
        assert len(held.as_tuple().digits) <= 38
        assert held == 0 or Decimal("1E-130") <= abs(held) <= Decimal(
            "9.9999999999999999999999999999999999999E+125"
        )

"""The jobs table over the low-level DynamoDB client: plain Python values in and out.

`boto3.resource("dynamodb")` costs a cold start about 100 ms (its resource model is loaded and
its classes made on first use) to do what this module does in a few lines: turn Python values
into DynamoDB's typed form ({"S": ...}, {"N": ...}) on the way in, and back on the way out.

Nothing here imports boto3: its package brings s3transfer and its S3 client injections with it
(40-90 ms of every cold start, runtime.py makes botocore's clients directly). Values go in by
boto3's TypeSerializer's rules, re-stated in `typed_value` (numbers as int or `Decimal` within
DynamoDB's 38 digits, floats refused, sets typed by their members), and come back through
Powertools' version of boto3's TypeDeserializer: numbers as `Decimal`, sets as `set`; binary
as `bytes` (boto3 wraps it in `Binary`). tests/unit/test_dynamo.py holds both sides against
boto3's own.

`Table` offers the calls klingflow makes, with the resource's keyword names, and nothing else.
Errors are botocore's own `ClientError`s, unchanged but for one thing a resource does not do:
an item DynamoDB returns with a refused condition (`ReturnValuesOnConditionCheckFailure`, on
`ConditionalCheckFailedException` as `Item` and on `TransactionCanceledException` as each
reason's `Item`) is made plain too. A refusal that passes (a transaction conflict, throttling
that outlasted botocore's own tries) is retried here, for calls safe to repeat: `dynamoretry`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from decimal import Decimal, DecimalException
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.shared.dynamodb_deserializer import DYNAMODB_CONTEXT, TypeDeserializer
from botocore.exceptions import ClientError

from .dynamoretry import RetryPolicy

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.client import DynamoDBClient

_DESERIALIZER = TypeDeserializer()
# The parts of a request (and of each TransactItems operation) that hold values or keys.
_VALUE_MAPS = ("Key", "Item", "ExpressionAttributeValues", "ExclusiveStartKey")
_OPERATIONS = ("Put", "Update", "Delete", "ConditionCheck")


def to_dynamo(item: Mapping[str, Any]) -> dict[str, Any]:
    """A plain item (or key, or expression values) in DynamoDB's typed form."""
    return {name: typed_value(value) for name, value in item.items()}


def typed_value(value: Any) -> dict[str, Any]:
    """One value in DynamoDB's typed form, by boto3's TypeSerializer's rules (the order of the
    checks is theirs: a bool is not a number, an empty set is a number set), but for numbers
    that are not finite, which are all refused here."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if _is_number(value):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, bytes | bytearray):
        return {"B": value}
    if isinstance(value, Set):
        if all(_is_number(each) for each in value):
            return {"NS": [_number(each) for each in value]}
        if all(isinstance(each, str) for each in value):
            return {"SS": list(value)}
        if all(isinstance(each, bytes | bytearray) for each in value):
            return {"BS": list(value)}
    if isinstance(value, Mapping):
        return {"M": {key: typed_value(member) for key, member in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [typed_value(member) for member in value]}
    raise TypeError(f'Unsupported type "{type(value)}" for value "{value}"')


def _is_number(value: Any) -> bool:
    # As boto3's: a bool counts here (bools are ints), which only a set of them ever reaches.
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    return isinstance(value, int | Decimal)


def _number(value: int | Decimal) -> str:
    # DynamoDB's 38 digits: a value that would be rounded is refused (decimal.Inexact/Rounded).
    number = DYNAMODB_CONTEXT.create_decimal(value)
    if not number.is_finite():
        # boto3 refuses only "Infinity" and "NaN" and sends "-Infinity" or "-NaN" on, for
        # DynamoDB to refuse; none of them is a number DynamoDB holds.
        raise TypeError("Infinity and NaN not supported")
    return str(number)


# What DynamoDB holds (its developer guide, "Quotas ... attributes"): numbers of at most 38
# significant digits whose magnitude is 0 or within this range, documents nested at most 32
# levels deep, items of at most 400 KB, attribute names (a map's keys too) of at least 1 byte.
NUMBER_MAGNITUDE = (Decimal("1E-130"), Decimal("9.9999999999999999999999999999999999999E+125"))
NESTING_MAX = 32
ITEM_MAX_BYTES = 400 * 1024
# A partition key is at most 2,048 bytes; klingflow's prefixes (JOB#, ELEMENT#) take a few.
KEY_MAX_BYTES = 2048
_PREFIX_ROOM = 16


def key_fits(identifier: str) -> bool:
    """Whether an id taken from a request path can be a key at all (a longer one is refused by
    DynamoDB with a ValidationException, which would be a 500, not the 404 it deserves)."""
    return len(identifier.encode("utf-8", "surrogatepass")) <= KEY_MAX_BYTES - _PREFIX_ROOM


@dataclass(frozen=True)
class Unstorable:
    """One value of an item DynamoDB cannot hold: where it is, the rule, and why."""

    path: tuple[str | int, ...]
    rule: str
    message: str

    @property
    def field(self) -> str:
        return ".".join(str(part) for part in self.path) or "(item)"


def unstorable(item: Mapping[str, Any], *, max_bytes: int = ITEM_MAX_BYTES) -> list[Unstorable]:
    """Every value of a plain item that `to_dynamo` cannot type or DynamoDB would refuse, by its
    path; and the item itself when it would pass `max_bytes`. Empty: the item can be written.

    Floats are judged as the store sends them (`Decimal(str(x))`). Walked without recursion, so
    a value nested past Python's own limit is refused, not a `RecursionError`."""
    found: list[Unstorable] = []
    size = 0
    for path, depth, value in _walk(item):
        size += len(str(path[-1]).encode("utf-8", "replace")) if path and isinstance(path[-1], str) else 1
        problem, value_size = _judge(value, depth)
        size += value_size
        if problem is not None:
            found.append(Unstorable(path, *problem))
    if size > max_bytes and not found:
        found.append(
            Unstorable(
                _largest(item),
                "item_size",
                f"the item would be about {size // 1024} KB; at most {max_bytes // 1024} KB are stored "
                "(this is its largest value: shorten it)",
            )
        )
    return found


def _walk(item: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], int, Any]]:
    """(path, depth, value) for every value, parents first; depth 1 is an attribute's value."""
    stack: list[tuple[tuple[str | int, ...], int, Any]] = [((name,), 1, v) for name, v in item.items()]
    stack.reverse()
    while stack:
        path, depth, value = stack.pop()
        yield path, depth, value
        if depth > NESTING_MAX or isinstance(value, str | bytes | bytearray):
            continue
        if isinstance(value, Mapping):
            stack.extend(reversed([((*path, key), depth + 1, v) for key, v in value.items()]))
        elif isinstance(value, list | tuple):
            stack.extend(reversed([((*path, i), depth + 1, v) for i, v in enumerate(value)]))


def _judge(value: Any, depth: int) -> tuple[tuple[str, str] | None, int]:
    """What is wrong with one value on its own (its members are judged apart), and its size."""
    if value is None or isinstance(value, bool):
        return None, 1
    if isinstance(value, int | float | Decimal):
        return _judge_number(value)
    if isinstance(value, str):
        try:
            return None, len(value.encode("utf-8"))
        except UnicodeEncodeError:
            return ("utf8", "not valid Unicode text (it holds a lone surrogate): send UTF-8 text"), len(value)
    if isinstance(value, bytes | bytearray):
        return None, len(value)
    if isinstance(value, Mapping | list | tuple):
        if depth > NESTING_MAX:
            return (
                "nesting",
                f"nested more than {NESTING_MAX} levels deep, more than can be stored: flatten it",
            ), 3
        bad = (
            [key for key in value if not isinstance(key, str) or not key]
            if isinstance(value, Mapping)
            else []
        )
        if bad:
            return ("map_key", f"a map key must be a non-empty string (found {str(bad[0])[:40]!r})"), 3
        return None, 3
    if isinstance(value, Set):
        try:
            typed_value(value)
        except (TypeError, DecimalException):
            return ("set", "a set of mixed or unsupported members cannot be stored"), 3
        if not value:
            return ("set", "an empty set cannot be stored"), 3
        return None, sum(len(str(member)) for member in value)
    return ("type", f"a {type(value).__name__} cannot be stored"), 1


def _judge_number(value: int | float | Decimal) -> tuple[tuple[str, str] | None, int]:
    number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    if not number.is_finite():
        return ("number_finite", "NaN and infinity cannot be stored: give a finite number"), 1
    low, high = NUMBER_MAGNITUDE
    magnitude = number.copy_abs()  # abs() would round to the context's 28 digits
    if number and not low <= magnitude <= high:
        return (
            "number_magnitude",
            f"a number {'too large' if magnitude > high else 'too close to zero'} to store: give 0 or "
            "a magnitude from 1E-130 to 9.99...E+125",
        ), 21
    try:
        _number(number)
    except DecimalException:
        return ("number_digits", "more than the 38 significant digits that can be stored: round it"), 21
    return None, len(number.as_tuple().digits) // 2 + 2


def _largest(item: Mapping[str, Any]) -> tuple[str | int, ...]:
    """The path of the longest text or bytes in the item (what to shorten)."""
    sized = [
        (len(v.encode("utf-8", "replace")) if isinstance(v, str) else len(v), path)
        for path, _, v in _walk(item)
        if isinstance(v, str | bytes | bytearray)
    ]
    return max(sized, key=lambda pair: pair[0], default=(0, ()))[1]  # paths mix str and int


def from_dynamo(item: Mapping[str, Any]) -> dict[str, Any]:
    """A typed item as plain Python values."""
    return {name: _DESERIALIZER.deserialize(value) for name, value in item.items()}


def _typed(request: Mapping[str, Any]) -> dict[str, Any]:
    return {k: to_dynamo(v) if k in _VALUE_MAPS and v is not None else v for k, v in request.items()}


class Table:
    """One DynamoDB table, spoken to with plain values (a typed subset of the resource's Table)."""

    def __init__(self, client: DynamoDBClient, name: str, retry: RetryPolicy | None = None) -> None:
        self.client = client
        self.name = name
        self.retry = retry or RetryPolicy()

    def get_item(self, **request: Any) -> dict[str, Any]:
        """GetItem; the answer's `Item` (when there is one) plain."""
        answer = self._call("GetItem", self.client.get_item, request)
        return _plain_answer(answer, "Item")

    def put_item(self, **request: Any) -> dict[str, Any]:
        """PutItem; `Attributes` (ReturnValues=ALL_OLD) plain."""
        return _plain_answer(self._call("PutItem", self.client.put_item, request), "Attributes")

    def update_item(self, **request: Any) -> dict[str, Any]:
        """UpdateItem; `Attributes` (per ReturnValues) plain."""
        return _plain_answer(self._call("UpdateItem", self.client.update_item, request), "Attributes")

    def delete_item(self, **request: Any) -> dict[str, Any]:
        """DeleteItem; `Attributes` (ReturnValues=ALL_OLD) plain."""
        return _plain_answer(self._call("DeleteItem", self.client.delete_item, request), "Attributes")

    def query(self, **request: Any) -> dict[str, Any]:
        """One Query page: `Items` and `LastEvaluatedKey` plain; pass that key back as
        `ExclusiveStartKey` (plain too) for the next page."""
        answer = self._call("Query", self.client.query, request)
        answer["Items"] = [from_dynamo(item) for item in answer.get("Items", [])]
        return _plain_answer(answer, "LastEvaluatedKey")

    def transact_write_items(
        self, TransactItems: Sequence[Mapping[str, Any]], **request: Any
    ) -> dict[str, Any]:
        """TransactWriteItems with plain values. An operation that names no `TableName` is on
        this table; the refusal's `CancellationReasons[].Item` come back plain."""
        typed = []
        for entry in TransactItems:
            [(operation, body)] = entry.items()
            if operation not in _OPERATIONS:
                raise ValueError(f"not a TransactItems operation: {operation!r}")
            typed.append({operation: {"TableName": self.name, **_typed(body)}})
        try:
            return self.retry.run(
                "TransactWriteItems",
                {"TransactItems": TransactItems},
                lambda: dict(self.client.transact_write_items(TransactItems=typed, **request)),  # type: ignore[arg-type]
            )
        except ClientError as error:
            response = cast("dict[str, Any]", error.response)
            for reason in response.get("CancellationReasons") or []:
                if isinstance(reason, dict) and reason.get("Item"):
                    reason["Item"] = from_dynamo(reason["Item"])
            raise

    def _call(self, operation: str, method: Any, request: Mapping[str, Any]) -> dict[str, Any]:
        typed = _typed(request)
        try:
            return self.retry.run(operation, request, lambda: dict(method(TableName=self.name, **typed)))
        except ClientError as error:
            response = cast("dict[str, Any]", error.response)
            item = response.get("Item")
            if isinstance(item, dict) and item:
                response["Item"] = from_dynamo(item)
            raise


def _plain_answer(answer: dict[str, Any], key: str) -> dict[str, Any]:
    if answer.get(key):
        answer[key] = from_dynamo(answer[key])
    return answer

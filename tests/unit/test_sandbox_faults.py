"""The sandbox's DynamoDB faults (tools/klingflow_dev/sandbox/faults.py): what a busy DynamoDB
answers, to the functions' calls only, reproducibly under a seed; overlapping transactions
conflict as DynamoDB's do."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from klingflow_dev.sandbox import faults
from klingflow_dev.sandbox.faults import DynamoFaults

SPEND = {"pk": {"S": "SPEND#2026-12-08"}}


def transaction(*keys: str) -> dict[str, Any]:
    return {
        "TransactItems": [
            {"Update": {"TableName": "jobs", "Key": {"pk": {"S": key}}, "UpdateExpression": "SET a = :a"}}
            for key in keys
        ]
    }


def update(key: str) -> dict[str, Any]:
    return {"TableName": "jobs", "Key": {"pk": {"S": key}}, "UpdateExpression": "SET a = :a"}


class Moto:
    """The app behind the middleware: answers 200 and counts what reached it; `hold` keeps the
    next call in flight until released."""

    def __init__(self) -> None:
        self.reached: list[str] = []
        self.hold: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.reached.append(str(environ["HTTP_X_AMZ_TARGET"]).partition(".")[2])
        hold, self.hold = self.hold, None
        if hold is not None:
            self.entered.set()
            hold.wait(5)
        start_response("200 OK", [])
        return [b"{}"]


def call(
    app: Callable[..., Iterable[bytes]],
    operation: str,
    request: dict[str, Any],
    *,
    caller: str | None = "SubmitFunction",
) -> tuple[str, dict[str, Any]]:
    body = json.dumps(request).encode()
    environ: dict[str, Any] = {
        "HTTP_X_AMZ_TARGET": f"DynamoDB_20120810.{operation}",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    if caller:
        environ["HTTP_X_SANDBOX_CALLER"] = caller
    status: list[str] = []
    answer = b"".join(app(environ, lambda s, _headers: status.append(s)))
    return status[0], json.loads(answer)


def test_a_conflicted_transaction_is_cancelled_naming_the_item_as_dynamodb_does() -> None:
    moto = Moto()
    app = DynamoFaults.of({"transaction_conflict": 1.0}).wrap(moto)

    status, answer = call(app, "TransactWriteItems", transaction("JOB#1", "SPEND#d"))

    assert status == "400 Bad Request"
    assert answer["__type"] == "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"
    codes = [reason["Code"] for reason in answer["CancellationReasons"]]
    assert sorted(codes) == ["None", "TransactionConflict"]
    reasons = ", ".join(codes)
    assert answer["Message"] == (
        f"Transaction cancelled, please refer cancellation reasons for specific reasons [{reasons}]"
    )
    assert moto.reached == []


def test_a_single_write_conflicts_only_on_an_item_a_transaction_has_written() -> None:
    moto = Moto()
    dynamo = DynamoFaults(conflict=0.0, overlaps=True)
    app = dynamo.wrap(moto)
    assert call(app, "TransactWriteItems", transaction("JOB#1"))[0] == "200 OK"
    dynamo.conflict = 1.0

    status, answer = call(app, "UpdateItem", update("JOB#1"))
    assert (status, answer["__type"]) == (
        "400 Bad Request",
        "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
    )
    # An item no transaction touches (a breaker's) never meets one
    assert call(app, "UpdateItem", update("HEALTH#gateway"))[0] == "200 OK"


def test_throttling_refuses_reads_and_writes() -> None:
    app = DynamoFaults.of({"throttling": 1.0}).wrap(Moto())
    for operation, request in [("GetItem", {"TableName": "jobs", "Key": SPEND}), ("UpdateItem", update("X"))]:
        _, answer = call(app, operation, request)
        assert answer["__type"].endswith("#ProvisionedThroughputExceededException"), operation
    _, answer = call(app, "TransactWriteItems", transaction("JOB#1"))
    assert [reason["Code"] for reason in answer["CancellationReasons"]] == ["ThrottlingError"]


def test_only_the_functions_calls_are_refused() -> None:
    moto = Moto()
    app = DynamoFaults.of({"transaction_conflict": 1.0, "throttling": 1.0}).wrap(moto)
    assert call(app, "TransactWriteItems", transaction("JOB#1"), caller=None)[0] == "200 OK"
    assert call(app, "GetItem", {"TableName": "jobs", "Key": SPEND}, caller=None)[0] == "200 OK"
    assert moto.reached == ["TransactWriteItems", "GetItem"]


def test_overlapping_transactions_conflict_while_one_is_in_flight() -> None:
    moto = Moto()
    dynamo = DynamoFaults.of({"transaction_conflict": 0})
    app = dynamo.wrap(moto)
    release = threading.Event()
    moto.hold = release
    first = threading.Thread(target=call, args=(app, "TransactWriteItems", transaction("JOB#1", "SPEND#d")))
    first.start()
    assert moto.entered.wait(5)

    # While the first is in flight, a transaction on one of its items is cancelled on that item
    _, answer = call(app, "TransactWriteItems", transaction("JOB#2", "SPEND#d"))
    assert [reason["Code"] for reason in answer["CancellationReasons"]] == ["None", "TransactionConflict"]
    # a single write to it refused; a transaction on other items goes through
    assert call(app, "UpdateItem", update("SPEND#d"))[1]["__type"].endswith("#TransactionConflictException")
    assert call(app, "TransactWriteItems", transaction("JOB#3"))[0] == "200 OK"

    release.set()
    first.join(5)
    # Once it has ended, the item is free again
    assert call(app, "TransactWriteItems", transaction("JOB#2", "SPEND#d"))[0] == "200 OK"
    assert dynamo.injected == {
        "TransactionCanceledException/TransactionConflict": 1,
        "TransactionConflictException": 1,
    }


def outcomes(seed: int) -> list[str]:
    app = DynamoFaults.of({"transaction_conflict": 0.3, "throttling": 0.2, "seed": seed}).wrap(Moto())
    return [call(app, "TransactWriteItems", transaction(f"JOB#{i % 7}"))[0] for i in range(60)]


def test_the_same_seed_refuses_the_same_calls_and_a_share_near_the_one_asked() -> None:
    first = outcomes(seed=1)
    assert outcomes(seed=1) == first
    assert outcomes(seed=2) != first
    refused = first.count("400 Bad Request") / len(first)
    assert 0.3 <= refused <= 0.65  # 1 - 0.7 x 0.8 = 0.44 expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("conflicts=0.2", "unknown fault 'conflicts': use transaction_conflict, throttling, seed"),
        ("throttling=1.5", "throttling is a share of calls from 0 to 1 (got 1.5)"),
        ("throttling", "'throttling' is not name=value"),
        ("throttling=lots", "throttling='lots' is not a number"),
        ("seed=1.5", "seed must be a whole number"),
    ],
)
def test_bad_faults_are_refused_naming_the_field_and_the_rule(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        faults.parse(text)


def test_faults_parse_from_the_command_line_form() -> None:
    assert faults.parse("transaction_conflict=0.2, throttling=0.1,seed=7") == {
        "transaction_conflict": 0.2,
        "throttling": 0.1,
        "seed": 7.0,
    }
    assert faults.parse("") == {}

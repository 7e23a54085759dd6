"""The table retries DynamoDB's passing refusals (a transaction conflict, throttling that outlasted
botocore's own tries) for calls safe to repeat, with full jitter, within a number of tries and a
total time; a refusal that is the answer (a failed condition) is never retried."""

from __future__ import annotations

import logging
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from klingflow.infra.dynamo import Table
from klingflow.infra.dynamoretry import Retried, RetryPolicy, passing_reason, safe_to_repeat


def refusal(code: str, *reasons: str, operation: str = "TransactWriteItems") -> ClientError:
    response: dict[str, Any] = {"Error": {"Code": code, "Message": "refused"}}
    if reasons:
        response["CancellationReasons"] = [{"Code": reason} for reason in reasons]
    return ClientError(response, operation)  # type: ignore[arg-type]


def conflict() -> ClientError:
    return refusal("TransactionCanceledException", "None", "TransactionConflict")


class Scripted:
    """A DynamoDB client whose answers are given in advance: an answer, or a refusal to raise."""

    def __init__(self, *outcomes: dict[str, Any] | ClientError) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[str] = []

    def _answer(self, operation: str) -> dict[str, Any]:
        self.calls.append(operation)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, ClientError):
            raise outcome
        return outcome

    def transact_write_items(self, **_: Any) -> dict[str, Any]:
        return self._answer("TransactWriteItems")

    def update_item(self, **_: Any) -> dict[str, Any]:
        return self._answer("UpdateItem")

    def get_item(self, **_: Any) -> dict[str, Any]:
        return self._answer("GetItem")


class Waits:
    """The policy's sleep and clock: waiting moves the clock, nothing really waits."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []
        self.retried: list[Retried] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def policy(self, **fields: Any) -> RetryPolicy:
        return RetryPolicy(sleep=self.sleep, clock=lambda: self.now, on_retry=self.retried.append, **fields)


def table(client: Scripted, policy: RetryPolicy) -> Table:
    return Table(cast("Any", client), "jobs", retry=policy)


CLAIM = [
    {"Update": {"Key": {"pk": "JOB#1"}, "UpdateExpression": "SET #s = :s", "ConditionExpression": "#s = :q"}},
    {
        "Update": {
            "Key": {"pk": "SPEND#d"},
            "UpdateExpression": "ADD reserved :x",
            "ConditionExpression": "c < :m",
        }
    },
]


def test_a_transaction_conflict_is_retried_with_full_jitter_until_it_succeeds() -> None:
    waits = Waits()
    client = Scripted(conflict(), conflict(), {"ok": True})
    policy = waits.policy(base_s=0.05, cap_s=0.08, random=lambda: 0.999)

    assert table(client, policy).transact_write_items(TransactItems=CLAIM) == {"ok": True}

    assert client.calls == ["TransactWriteItems"] * 3
    # Each wait is random up to min(cap, base x 2^(try - 1)): 0.05, then capped at 0.08
    assert waits.slept == pytest.approx([0.05 * 0.999, 0.08 * 0.999])
    assert [(r.reason, r.attempt) for r in waits.retried] == [
        ("TransactionConflict", 1),
        ("TransactionConflict", 2),
    ]


def test_a_failed_condition_is_the_answer_and_is_not_retried() -> None:
    waits = Waits()
    failed = refusal("ConditionalCheckFailedException", operation="UpdateItem")
    client = Scripted(failed)

    with pytest.raises(ClientError) as raised:
        table(client, waits.policy()).update_item(
            Key={"pk": "JOB#1"}, UpdateExpression="SET a = :a", ConditionExpression="b = :b"
        )

    assert raised.value is failed
    assert client.calls == ["UpdateItem"]
    assert waits.slept == []


def test_a_transaction_cancelled_by_a_condition_is_not_a_conflict() -> None:
    waits = Waits()
    cancelled = refusal("TransactionCanceledException", "ConditionalCheckFailed", "TransactionConflict")
    client = Scripted(cancelled)

    with pytest.raises(ClientError) as raised:
        table(client, waits.policy()).transact_write_items(TransactItems=CLAIM)

    assert raised.value is cancelled
    assert client.calls == ["TransactWriteItems"]


def test_it_gives_up_after_its_tries_with_the_last_refusal_unchanged() -> None:
    waits = Waits()
    refusals = [conflict() for _ in range(4)]
    client = Scripted(*refusals)

    with pytest.raises(ClientError) as raised:
        table(client, waits.policy(attempts=4)).transact_write_items(TransactItems=CLAIM)

    assert raised.value is refusals[-1]
    assert raised.value.response["CancellationReasons"] == [{"Code": "None"}, {"Code": "TransactionConflict"}]
    assert len(client.calls) == 4
    assert len(waits.slept) == 3


def test_it_gives_up_when_the_next_wait_would_pass_its_total_time() -> None:
    waits = Waits()
    client = Scripted(*(conflict() for _ in range(10)))
    # Waits of 0.1, 0.2, 0.4 ...: the third would end 0.7 s after the first try, past 0.5
    policy = waits.policy(attempts=10, base_s=0.1, cap_s=10, total_s=0.5, random=lambda: 1.0)

    with pytest.raises(ClientError):
        table(client, policy).transact_write_items(TransactItems=CLAIM)

    assert waits.slept == pytest.approx([0.1, 0.2])
    assert len(client.calls) == 3


def test_throttling_that_outlasted_botocore_is_retried_for_reads_and_conditional_writes() -> None:
    waits = Waits()
    throttled = refusal("ProvisionedThroughputExceededException", operation="GetItem")
    client = Scripted(throttled, {"Item": {"pk": {"S": "JOB#1"}}})
    assert table(client, waits.policy()).get_item(Key={"pk": "JOB#1"})["Item"] == {"pk": "JOB#1"}

    racing = refusal("TransactionConflictException", operation="UpdateItem")
    client = Scripted(racing, {})
    table(client, waits.policy()).update_item(
        Key={"pk": "JOB#1"}, UpdateExpression="ADD n :one", ConditionExpression="attribute_exists(pk)"
    )
    assert client.calls == ["UpdateItem", "UpdateItem"]
    assert [r.reason for r in waits.retried] == [
        "ProvisionedThroughputExceededException",
        "TransactionConflictException",
    ]


@pytest.mark.parametrize(
    "expression",
    ["ADD failures :one", "SET n = n + :one", "SET a = list_append(a, :x)", "SET w = :w REMOVE t ADD c :one"],
)
def test_an_unconditional_write_that_adds_is_never_repeated(expression: str) -> None:
    # botocore may have sent it already (a first try that timed out after DynamoDB applied it).
    waits = Waits()
    throttled = refusal("ProvisionedThroughputExceededException", operation="UpdateItem")
    client = Scripted(throttled)

    with pytest.raises(ClientError) as raised:
        table(client, waits.policy()).update_item(Key={"pk": "HEALTH#x"}, UpdateExpression=expression)

    assert raised.value is throttled
    assert client.calls == ["UpdateItem"]


def test_what_is_safe_to_repeat() -> None:
    assert safe_to_repeat("Query", {})
    assert safe_to_repeat("PutItem", {"Item": {}})
    assert safe_to_repeat("DeleteItem", {"Key": {}})
    assert safe_to_repeat("UpdateItem", {"UpdateExpression": "SET a = :a REMOVE b"})
    assert not safe_to_repeat("UpdateItem", {"UpdateExpression": "SET a = a - :a"})
    assert safe_to_repeat("TransactWriteItems", {"TransactItems": CLAIM})
    # A settlement: the job's move guards the day's unconditional sum
    settle = [CLAIM[0], {"Update": {"Key": {}, "UpdateExpression": "ADD settled :x"}}]
    assert safe_to_repeat("TransactWriteItems", {"TransactItems": settle})
    unguarded = [{"Update": {"Key": {}, "UpdateExpression": "SET a = :a"}}, settle[1]]
    assert not safe_to_repeat("TransactWriteItems", {"TransactItems": unguarded})
    assert safe_to_repeat("TransactWriteItems", {"TransactItems": [unguarded[0], {"Delete": {"Key": {}}}]})


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (refusal("TransactionCanceledException", "None", "TransactionConflict"), "TransactionConflict"),
        (refusal("TransactionCanceledException", "ThrottlingError", "None"), "ThrottlingError"),
        (refusal("TransactionCanceledException", "None", "ValidationError"), None),
        (refusal("TransactionCanceledException"), None),  # no reasons: cannot tell
        (refusal("TransactionConflictException"), "TransactionConflictException"),
        (refusal("ThrottlingException"), "ThrottlingException"),
        (refusal("ConditionalCheckFailedException"), None),
        (refusal("ValidationException"), None),
    ],
)
def test_which_refusals_pass(error: ClientError, reason: str | None) -> None:
    assert passing_reason(error) == reason


def test_each_retry_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    client = Scripted(conflict(), {})
    policy = RetryPolicy(sleep=lambda _: None, random=lambda: 0.5)
    with caplog.at_level(logging.WARNING, logger="klingflow.dynamo"):
        table(client, policy).transact_write_items(TransactItems=CLAIM)

    [record] = caplog.records
    assert record.getMessage() == "dynamodb retry"
    assert (record.__dict__["reason"], record.__dict__["attempt"]) == ("TransactionConflict", 1)


def test_a_policy_needs_one_try_at_least() -> None:
    with pytest.raises(ValueError, match=r"RetryPolicy\.attempts must be at least 1"):
        RetryPolicy(attempts=0)

"""An SQS batch: each record handled on its own, only the failed ones handed back to SQS."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from klingflow.infra.queue import BatchFailed, JobMessage, Received, RetryLater, handle_batch
from tests.conftest import sample_event


def _batch(*bodies: str) -> dict[str, Any]:
    """The sample archive event, with one record per body (ids m-0, m-1, ...)."""
    event = sample_event("sqs_archive.json")
    template = event["Records"][0]
    event["Records"] = []
    for number, body in enumerate(bodies):
        record = copy.deepcopy(template)
        record.update(messageId=f"m-{number}", body=body)
        event["Records"].append(record)
    return event


def test_the_sample_record_reads_as_a_job_message_with_its_receive_count() -> None:
    # Given the sample archive event
    seen: list[Received] = []
    # When its batch is handled
    answer = handle_batch(sample_event("sqs_archive.json"), seen.append)
    # Then the record arrives whole and nothing is handed back
    [record] = seen
    assert JobMessage.from_json(record.body).job_id
    assert record.receive_count >= 1 and record.receipt_handle
    assert answer == {"batchItemFailures": []}


def test_only_the_records_that_failed_are_handed_back() -> None:
    # Given a batch where the middle record cannot be handled
    def handle(record: Received) -> None:
        if record.body == "bad":
            raise ValueError("cannot handle")

    # When it is handled
    answer = handle_batch(_batch("good", "bad", "good"), handle)
    # Then SQS gets back that record alone, and the others were still handled
    assert answer == {"batchItemFailures": [{"itemIdentifier": "m-1"}]}


def test_a_batch_whose_every_record_failed_fails_the_invocation() -> None:
    # Given a batch where nothing can be handled
    def handle(_: Received) -> None:
        raise ValueError("cannot handle")

    # When it is handled, Then the invocation fails (the function's Errors alarm counts it)
    with pytest.raises(BatchFailed, match="all 2 records failed"):
        handle_batch(_batch("a", "b"), handle)


def test_a_record_without_attributes_counts_as_its_first_delivery() -> None:
    record = Received.from_record({"messageId": "m", "body": "{}"})
    assert (record.receive_count, record.receipt_handle) == (1, "")


def test_a_record_handed_back_on_purpose_is_not_an_error_of_the_invocation() -> None:
    # Given a batch of one whose record asks to be tried again later (a webhook receiver failed)
    def handle(record: Received) -> None:
        raise RetryLater("the receiver answered HTTP 503")

    # When it is handled, then it is handed back without failing the invocation (no Errors alarm)
    assert handle_batch(_batch("a"), handle) == {"batchItemFailures": [{"itemIdentifier": "m-0"}]}

    # while a record that fails unplanned still fails a batch of its own
    def broken(record: Received) -> None:
        raise ValueError("a bug")

    with pytest.raises(BatchFailed):
        handle_batch(_batch("a"), broken)

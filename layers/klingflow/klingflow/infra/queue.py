"""Job queues: the archive queue (callback and sweeper hand jobs to archive) and the submit
queue (POST /jobs hands accepted jobs to submit). A message is a job id and why it was sent.

The receiving side too: `handle_batch` runs a function's handler on each record of an SQS batch
and reports the ones that failed, so SQS redelivers only those (every event source mapping sets
ReportBatchItemFailures). It replaces Powertools' BatchProcessor, which loads asyncio and every
event data class Powertools has (150-200 ms of each cold start) for what is one loop here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient

logger = Logger(child=True)


@dataclass(frozen=True)
class JobMessage:
    job_id: str
    reason: str

    def to_json(self) -> str:
        return json.dumps({"job_id": self.job_id, "reason": self.reason})

    @classmethod
    def from_json(cls, body: str) -> JobMessage:
        data = json.loads(body)
        return cls(job_id=str(data["job_id"]), reason=str(data.get("reason", "")))


class JobQueue:
    def __init__(self, client: SQSClient, url: str) -> None:
        self._client = client
        self._url = url

    def enqueue(self, job_id: str, reason: str) -> None:
        self._client.send_message(QueueUrl=self._url, MessageBody=JobMessage(job_id, reason).to_json())


@dataclass(frozen=True)
class Received:
    """One SQS record as Lambda hands it over."""

    message_id: str
    body: str
    receipt_handle: str
    receive_count: int  # 1 on the first delivery

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Received:
        attributes = record.get("attributes") or {}
        return cls(
            message_id=str(record["messageId"]),
            body=str(record["body"]),
            receipt_handle=str(record.get("receiptHandle", "")),
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
        )


class RetryLater(Exception):
    """The record goes back to the queue on purpose, its next try already arranged (the webhook
    function's backoff): a batch item failure, but not an error of the invocation, so an
    expected retry never counts in the function's Errors alarm."""


class BatchFailed(Exception):
    """Every record of the batch failed: the invocation fails, so it counts in the function's
    Errors alarm and Lambda hands the whole batch back (as Powertools does)."""


def handle_batch(event: Mapping[str, Any], handle: Callable[[Received], object]) -> dict[str, Any]:
    """Each record handled on its own; the ones that raised are answered as batchItemFailures
    (a record that raised RetryLater too, without counting as an error)."""
    records = list(event.get("Records") or [])
    failures: list[dict[str, str]] = []
    errors = 0
    for raw in records:
        record = Received.from_record(raw)
        try:
            handle(record)
        except RetryLater:
            failures.append({"itemIdentifier": record.message_id})
        except Exception:
            # Logged here, with its trace, because the exception itself goes nowhere else.
            logger.exception("record failed", extra={"message_id": record.message_id})
            failures.append({"itemIdentifier": record.message_id})
            errors += 1
    if records and errors == len(records):
        raise BatchFailed(f"all {len(records)} records failed")
    return {"batchItemFailures": failures}

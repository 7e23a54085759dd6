"""Job queues: the archive queue (callback and sweeper hand jobs to archive) and the submit
queue (POST /jobs hands accepted jobs to submit). A message is a job id and why it was sent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient


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

"""Outcome events on the klingflow bus (source `klingflow`); schemas in docs/events/."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from .models import DetailType, EventCost, EventOutput, Job, JobEventDetail

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

SOURCE = "klingflow"
logger = Logger(child=True)


def detail_for(job: Job) -> JobEventDetail:
    return JobEventDetail(
        job_id=job.job_id,
        kind=job.kind,
        status=job.status.value,
        provider=job.provider,
        metadata=job.metadata,
        outputs=[
            EventOutput(s3_uri=o.s3_uri, bytes=o.bytes, sha256=o.sha256, duration_s=o.duration_s)
            for o in job.outputs
        ],
        cost=EventCost(estimated=job.cost.estimated_usd, billed=job.cost.billed_usd),
        error=job.error,
        source=job.source,
    )


class EventPublisher:
    def __init__(self, client: EventBridgeClient, bus: str) -> None:
        self._client = client
        self._bus = bus

    def publish(self, detail_type: DetailType, detail: JobEventDetail) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": detail_type.value,
            "Detail": json.dumps(detail.model_dump(mode="json")),
            "EventBusName": self._bus,
        }
        answer = self._client.put_events(Entries=[entry])  # type: ignore[list-item]
        if answer.get("FailedEntryCount"):
            # The job's state is already written; a lost event must not undo it, but it must show.
            logger.error(
                "event not accepted", extra={"detail_type": detail_type.value, "answer": answer["Entries"]}
            )
            raise RuntimeError(f"EventBridge refused {detail_type.value}: {answer['Entries']}")

    def job(self, detail_type: DetailType, job: Job) -> None:
        self.publish(detail_type, detail_for(job))

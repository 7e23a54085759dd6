"""Outcome events on the klingflow bus (source `klingflow`); schemas in docs/events/."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import BotoCoreError, ClientError

from klingflow.core.models import DetailType, EventCost, EventOutput, Job, JobEventDetail

if TYPE_CHECKING:
    from mypy_boto3_events import EventBridgeClient

SOURCE = "klingflow"
PUT_ATTEMPTS = 3
logger = Logger(child=True)
metrics = Metrics()


def detail_for(job: Job) -> JobEventDetail:
    return JobEventDetail(
        job_id=job.job_id,
        kind=job.kind,
        status=job.status.value,
        provider=job.provider,
        metadata=job.metadata,
        outputs=[
            EventOutput(role=o.role, s3_uri=o.s3_uri, bytes=o.bytes, sha256=o.sha256, duration_s=o.duration_s)
            for o in job.outputs
        ],
        cost=EventCost(
            estimated=job.cost.estimated_usd,
            billed=job.cost.billed_usd,
            billed_source=job.cost.billed_source,
            possibly_billed=job.cost.possibly_billed,
        ),
        error=job.error,
        source=job.source,
        element_id=job.element_id,
        late=job.late,
    )


class EventPublisher:
    def __init__(self, client: EventBridgeClient, bus: str) -> None:
        self._client = client
        self._bus = bus

    def publish(self, detail_type: DetailType, detail: JobEventDetail) -> bool:
        """Put one event, retrying refused entries (throttling) a few times; True once it is in.

        Never raises: the job's state is already written, and a failed invocation would not
        bring the event back. A job's outbox (`pending_event`) keeps what was not published so
        the sweeper publishes it later; each miss is logged and counted (EventsDelayed).
        """
        entry = {
            "Source": SOURCE,
            "DetailType": detail_type.value,
            "Detail": json.dumps(detail.model_dump(mode="json")),
            "EventBusName": self._bus,
        }
        problem: object = None
        for _ in range(PUT_ATTEMPTS):
            try:
                answer = self._client.put_events(Entries=[entry])  # type: ignore[list-item]
            except (ClientError, BotoCoreError) as error:
                problem = error
                continue
            if not answer.get("FailedEntryCount"):
                return True
            problem = answer["Entries"]
        metrics.add_metric(name="EventsDelayed", unit=MetricUnit.Count, value=1)  # alarmed in template.yaml
        logger.error(
            "event not published; the job's outbox keeps it for the sweeper",
            extra={"detail_type": detail_type.value, "job_id": detail.job_id, "problem": str(problem)},
        )
        return False

    def job(self, detail_type: DetailType, job: Job) -> bool:
        return self.publish(detail_type, detail_for(job))

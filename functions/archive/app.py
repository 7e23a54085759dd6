"""archive: SQS batches of jobs to confirm and copy into S3, with partial batch failures."""

from __future__ import annotations

import klingflow.infra.coldstart  # noqa: F401 (first: the collector waits while the function loads)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from klingflow import runtime, services
from klingflow.flows.archive import Archiver
from klingflow.infra.outcomemetrics import OutcomeMetrics
from klingflow.infra.queue import JobMessage, Received, handle_batch
from klingflow.settings import ArchiveSettings

settings = ArchiveSettings.from_env()
service: runtime.Lazy[Archiver] = runtime.Lazy(lambda: services.build_archiver(settings))
logger = Logger()
metrics = Metrics()
# What it did with each piece of work: the Outcomes metric, by function and outcome.
counted = OutcomeMetrics(
    "archive",
    namespace=settings.powertools_metrics_namespace,
    enabled=not settings.powertools_metrics_disabled,
)


def archive_one(record: Received) -> str:
    message = JobMessage.from_json(record.body)
    logger.append_keys(job_id=message.job_id)
    done = service.get().archive(message.job_id)
    logger.info("archive", extra={"outcome": done.outcome, "detail": done.detail, "reason": message.reason})
    counted.count(done.outcome)
    return str(done)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_batch(event, archive_one)

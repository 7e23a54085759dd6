"""webhook: POST each job outcome to the job's own webhook, signed (Standard Webhooks).

Fed from the outcome bus through the webhook queue, one message per invocation (BatchSize 1 in
template.yaml): each delivery has its own wall-clock limit, well inside the function's timeout,
so a slow receiver can only spend its own message's time and never makes the rest of a batch
time out and be sent again. A receiver that does not take a message gets it again later: the
message's visibility is set to an exponential, jittered backoff, and after the queue's
maxReceiveCount (more than a day of tries) it goes to the dead-letter queue.
"""

from __future__ import annotations

import klingflow.infra.coldstart  # noqa: F401 (first: the collector waits while the function loads)

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from klingflow import runtime, services
from klingflow.core.outcomes import WebhookOutcome
from klingflow.flows.webhook import DeliveryFailed, WebhookSender
from klingflow.infra.outcomemetrics import OutcomeMetrics
from klingflow.infra.queue import Received, RetryLater, handle_batch
from klingflow.settings import WebhookSettings

settings = WebhookSettings.from_env()  # cold start fails fast on missing configuration
service: runtime.Lazy[WebhookSender] = runtime.Lazy(lambda: services.build_webhooks(settings))
logger = Logger()
metrics = Metrics()
# What it did with each piece of work: the Outcomes metric, by function and outcome.
counted = OutcomeMetrics(
    "webhook",
    namespace=settings.powertools_metrics_namespace,
    enabled=not settings.powertools_metrics_disabled,
)


def deliver_one(record: Received) -> str:
    event = json.loads(record.body)
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    logger.append_keys(job_id=detail.get("job_id"), event_id=event.get("id"))
    try:
        done = service.get().deliver(event, attempt=record.receive_count)
    except DeliveryFailed as failed:
        runtime.client("sqs").change_message_visibility(
            QueueUrl=settings.webhook_queue_url,
            ReceiptHandle=record.receipt_handle,
            VisibilityTimeout=failed.retry_in_s,
        )
        logger.warning(
            "webhook not delivered", extra={"attempt": record.receive_count, "next_in_s": failed.retry_in_s}
        )
        counted.count(WebhookOutcome.RETRYING)
        # A receiver's failure is the receiver's: handed back, not an error of this function.
        raise RetryLater(failed.message) from failed
    logger.info("webhook", extra={"outcome": done.outcome, "detail": done.detail})
    counted.count(done.outcome)
    return str(done)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_batch(event, deliver_one)

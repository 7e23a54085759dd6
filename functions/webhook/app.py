"""webhook: POST each job outcome to the job's own webhook, signed (Standard Webhooks).

Fed from the bus through the webhook queue. A receiver that does not take a message gets it
again later: the message's visibility is set to an exponential, jittered backoff, and after the
queue's maxReceiveCount (more than a day of tries) it goes to the dead-letter queue.
"""

from __future__ import annotations

import klingflow.coldstart  # noqa: F401 (first: the collector waits while the function loads)

import json
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from klingflow import runtime
from klingflow.outcomes import WebhookOutcome
from klingflow.queue import Received, handle_batch
from klingflow.settings import WebhookSettings
from klingflow.webhooks import DeliveryFailed, WebhookSender, retry_delay_s

settings = WebhookSettings.from_env()  # cold start fails fast on missing configuration
service: runtime.Lazy[WebhookSender] = runtime.Lazy(lambda: runtime.build_webhooks(settings))
logger = Logger()
metrics = Metrics()


def deliver_one(record: Received) -> str:
    event = json.loads(record.body)
    logger.append_keys(job_id=(event.get("detail") or {}).get("job_id"), event_id=event.get("id"))
    try:
        done = service.get().deliver(event)
    except DeliveryFailed:
        attempt = record.receive_count
        delay = retry_delay_s(attempt)
        runtime.client("sqs").change_message_visibility(
            QueueUrl=settings.webhook_queue_url, ReceiptHandle=record.receipt_handle, VisibilityTimeout=delay
        )
        logger.warning("webhook not delivered", extra={"attempt": attempt, "next_in_s": delay})
        metrics.add_metric(name=WebhookOutcome.RETRYING.value, unit=MetricUnit.Count, value=1)
        raise
    logger.info("webhook", extra={"outcome": done.outcome, "detail": done.detail})
    metrics.add_metric(name=done.outcome.value, unit=MetricUnit.Count, value=1)
    return str(done)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle_batch(event, deliver_one)

"""callback: POST /callbacks/{job_id}/{token} from providers (public, token-protected).

Answers fast and never downloads: the work is `CallbackReceiver.receive`.
"""

from __future__ import annotations

import klingflow.infra.coldstart  # noqa: F401 (first: the collector waits while the function loads)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from klingflow import runtime, services
from klingflow.core.errors import RequestRejected
from klingflow.flows.callback import CallbackReceiver
from klingflow.infra.http import json_body, json_response, resolver
from klingflow.infra.outcomemetrics import OutcomeMetrics
from klingflow.settings import CallbackSettings

settings = CallbackSettings.from_env()
service: runtime.Lazy[CallbackReceiver] = runtime.Lazy(lambda: services.build_receiver(settings))
logger = Logger()
metrics = Metrics()
# What it did with each piece of work: the Outcomes metric, by function and outcome.
counted = OutcomeMetrics(
    "callback",
    namespace=settings.powertools_metrics_namespace,
    enabled=not settings.powertools_metrics_disabled,
)
api = resolver()


@api.post("/callbacks/{job_id}/{token}")
def provider_callback(job_id: str, token: str) -> Any:
    logger.append_keys(job_id=job_id)
    done = service.get().receive(job_id, token, _body)
    logger.info("callback", extra={"outcome": done.outcome, "detail": done.detail})
    counted.count(done.outcome)
    return json_response(200, {"ok": True})


def _body() -> Any:
    try:
        return json_body(api.current_event)
    except RequestRejected:
        return None  # still a hint that something happened; archive asks the provider


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.resolve(event, context)

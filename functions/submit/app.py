"""submit: POST /jobs, S3 manifests under incoming/ and EventBridge `Job Requested` (each
accepted job handed to the submit queue, whose consumer alone calls providers), POST
/jobs/quote, POST /jobs/{job_id}/cancel, and the element routes that reach a provider
(GET /elements/presets, GET /elements/custom, DELETE /elements/{element_id}).

Parse the trigger, hand it to `Intake` (or `Canceller`), shape the answer.
"""

from __future__ import annotations

import klingflow.infra.coldstart  # noqa: F401 (first: the collector waits while the function loads)

from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from klingflow import runtime, services
from klingflow.core.errors import Refused
from klingflow.core.models import Source
from klingflow.flows.submit import Intake
from klingflow.infra.http import json_body, json_response, resolver
from klingflow.infra.outcomemetrics import OutcomeMetrics
from klingflow.infra.queue import JobMessage, Received, handle_batch
from klingflow.settings import SubmitSettings

if TYPE_CHECKING:  # loaded by their builders, on the first cancel or element request
    from klingflow.flows.cancel import Canceller
    from klingflow.jobs.elements import ElementAdmin

settings = SubmitSettings.from_env()  # cold start fails fast on missing configuration
service: runtime.Lazy[Intake] = runtime.Lazy(lambda: services.build_intake(settings))
canceller: runtime.Lazy[Canceller] = runtime.Lazy(lambda: services.build_canceller(settings))
element_admin: runtime.Lazy[ElementAdmin] = runtime.Lazy(lambda: services.build_element_admin(settings))
logger = Logger()
metrics = Metrics()
# What it did with each piece of work: the Outcomes metric, by function and outcome.
counted = OutcomeMetrics(
    "submit",
    namespace=settings.powertools_metrics_namespace,
    enabled=not settings.powertools_metrics_disabled,
)
api = resolver()


@api.post("/jobs")
def post_job() -> Any:
    request = api.current_event
    # Validated, priced and stored now; sent to a provider from the submit queue.
    job = service.get().accept(
        json_body(request),
        Source(type="api", ref=request.request_id),
        idempotency_key=request.headers.get("idempotency-key"),
    )
    counted.count("JobsAccepted")
    return json_response(
        202, {"job_id": job.job_id, "status": job.status.value, "job": job.model_dump(mode="json")}
    )


@api.post("/jobs/quote")
def quote_job() -> Any:
    # Validated and priced like POST /jobs, media probed; nothing is stored or spent.
    return json_response(200, service.get().quote(json_body(api.current_event)))


@api.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str) -> Any:
    job = canceller.get().cancel(job_id)
    counted.count("JobsCancelled")
    return json_response(
        200, {"job_id": job.job_id, "status": job.status.value, "job": job.model_dump(mode="json")}
    )


@api.get("/elements/presets")
def list_presets() -> Any:
    return _provider_elements(presets=True)


@api.get("/elements/custom")
def list_custom_elements() -> Any:
    return _provider_elements(presets=False)


def _provider_elements(*, presets: bool) -> Any:
    query = api.current_event.query_string_parameters or {}
    page = element_admin.get().provider_elements(
        query.get("provider"),
        presets=presets,
        page_num=query.get("page_num"),
        page_size=query.get("page_size"),
    )
    return json_response(200, page)


@api.delete("/elements/{element_id}")
def delete_element(element_id: str) -> Any:
    query = api.current_event.query_string_parameters or {}
    return json_response(200, element_admin.get().delete(element_id, query.get("provider")))


def _from_s3(event: dict[str, Any]) -> dict[str, Any]:
    accepted = []
    for record in event["Records"]:
        s3 = record["s3"]["object"]
        key = unquote_plus(s3["key"])  # S3 events carry keys URL-encoded ("my job.json" -> "my+job.json")
        delivery = s3.get("versionId") or s3.get("sequencer") or s3.get("eTag")
        job = service.get().accept_manifest(key, delivery=str(delivery))
        accepted.append({"key": key, "job_id": job.job_id if job else None})
        counted.count("JobsAccepted" if job else "ManifestsRejected")
    return {"manifests": accepted}


def _from_eventbridge(event: dict[str, Any]) -> dict[str, Any]:
    event_id = str(event["id"])
    try:
        job = service.get().accept(
            event.get("detail"), Source(type="event", ref=event_id), idempotency_key=f"event:{event_id}"
        )
    except Refused as rejection:
        # Announced once as `Job Rejected`; raising would only make Lambda retry it twice more.
        counted.count("EventsRejected")
        return {"rejected": rejection.body()}
    counted.count("JobsAccepted")
    return {"job_id": job.job_id, "status": job.status.value}


def submit_one(record: Received) -> str:
    message = JobMessage.from_json(record.body)
    logger.append_keys(job_id=message.job_id)
    done = service.get().submit_queued(message.job_id)
    logger.info("submitted from queue", extra={"outcome": done.outcome, "detail": done.detail})
    counted.count(done.outcome)
    return str(done)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "requestContext" in event:
        return api.resolve(event, context)
    if event.get("Records", [{}])[0].get("eventSource") == "aws:sqs":
        return handle_batch(event, submit_one)
    if event.get("Records", [{}])[0].get("eventSource") == "aws:s3":
        return _from_s3(event)
    if event.get("detail-type") == "Job Requested":
        return _from_eventbridge(event)
    raise ValueError("submit got an event it does not handle")

"""jobs: the read API, GET /jobs/{job_id}, GET /jobs, GET /spend and GET /elements (IAM-authorised)."""

from __future__ import annotations

import klingflow.infra.coldstart  # noqa: F401 (first: the collector waits while the function loads)

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from klingflow import runtime, services
from klingflow.flows.jobs import JobQueries
from klingflow.infra.http import json_response, resolver
from klingflow.settings import JobsSettings

settings = JobsSettings.from_env()
service: runtime.Lazy[JobQueries] = runtime.Lazy(lambda: services.build_queries(settings))
logger = Logger()
api = resolver()


@api.get("/jobs/{job_id}")
def get_job(job_id: str) -> Any:
    return json_response(200, service.get().get(job_id))


@api.get("/jobs")
def list_jobs() -> Any:
    query = api.current_event.query_string_parameters or {}
    return json_response(
        200,
        service.get().list(
            limit=query.get("limit"), next_token=query.get("next_token"), status=query.get("status")
        ),
    )


@api.get("/elements")
def list_elements() -> Any:
    query = api.current_event.query_string_parameters or {}
    return json_response(
        200, service.get().elements(limit=query.get("limit"), next_token=query.get("next_token"))
    )


@api.get("/spend")
def get_spend() -> Any:
    query = api.current_event.query_string_parameters or {}
    return json_response(200, service.get().spend(query.get("day")))


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return api.resolve(event, context)

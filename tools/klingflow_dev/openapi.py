"""docs/openapi.json, the OpenAPI 3.1 description of the HTTP API, generated from the code.

The routes (path, method, which function, whether IAM signs them) come from template.yaml,
what API Gateway really serves; request and response bodies from the pydantic models the
handlers use (the job request union, the job record, elements). A test fails when the file is
stale (`klingflow openapi` rewrites it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from klingflow.core.codes import JobErrorCode
from klingflow.core.kinds import REQUEST_ADAPTER
from klingflow.core.models import Job
from klingflow.core.payload import BASE64_MAX_BYTES, BODY_MAX_BYTES
from klingflow.jobs.elements import ElementPage

from .sandbox import template

REPO = Path(__file__).resolve().parents[2]
PATH = REPO / "docs" / "openapi.json"
REF = "#/components/schemas/{model}"

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"$ref": REF.format(model="JobErrorCode")},
                "message": {"type": "string"},
                "details": {
                    "type": "array",
                    "description": "each broken rule, naming its field",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": "string"},
                            "rule": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
        }
    },
}
ACCEPTED = {
    "type": "object",
    "required": ["job_id", "status", "job"],
    "properties": {
        "job_id": {"type": "string"},
        "status": {"type": "string"},
        "job": {"$ref": REF.format(model="Job")},
    },
}
OBJECT: dict[str, Any] = {"type": "object"}
# Lambda's 6 MB synchronous payload bounds every body (core/payload.py has the figures).
TOO_LARGE = {
    "description": f"too large to reach the function whole: a body of at most {BODY_MAX_BYTES:,} bytes "
    f"as the event carries it, base64 images of at most {BASE64_MAX_BYTES:,} bytes together "
    f"(code {JobErrorCode.REQUEST_TOO_LARGE}, naming the field); upload images under incoming/ "
    "and pass their keys",
    "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
}

# What each route is for, what it answers and the query it takes, by the template's event name.
OPERATIONS: dict[str, dict[str, Any]] = {
    "PostJob": {
        "summary": "Submit a job",
        "body": "JobRequest",
        "answers": {202: ACCEPTED},
        "headers": ["Idempotency-Key"],
    },
    "QuoteJob": {
        "summary": "Price a job at every provider; creates nothing",
        "body": "JobRequest",
        "answers": {200: OBJECT},
    },
    "CancelJob": {"summary": "Cancel a job not yet at a provider", "answers": {200: ACCEPTED}},
    "GetJob": {
        "summary": "A job: status, history, cost, progress, output links",
        "answers": {200: {"$ref": REF.format(model="Job")}},
    },
    "ListJobs": {
        "summary": "Jobs, newest first",
        "answers": {200: OBJECT},
        "query": ["limit", "next_token", "status"],
    },
    "GetSpend": {"summary": "A UTC day's budget and spend", "answers": {200: OBJECT}, "query": ["day"]},
    "ListElements": {
        "summary": "Elements klingflow made, newest first",
        "answers": {200: {"$ref": REF.format(model="ElementPage")}},
        "query": ["limit", "next_token"],
    },
    "ListPresetElements": {
        "summary": "A provider's preset elements",
        "answers": {200: OBJECT},
        "query": ["provider", "page_num", "page_size"],
    },
    "ListCustomElements": {
        "summary": "A provider account's own elements",
        "answers": {200: OBJECT},
        "query": ["provider", "page_num", "page_size"],
    },
    "DeleteElement": {
        "summary": "Delete an element at its provider and mark it",
        "answers": {200: OBJECT},
        "query": ["provider"],
    },
    "ProviderCallback": {
        "summary": "A provider's task callback (token-checked, unsigned)",
        "body": "any",
        "answers": {200: OBJECT},
    },
}
QUERY: dict[str, dict[str, Any]] = {
    "limit": {"type": "integer", "minimum": 1},
    "next_token": {"type": "string"},
    "status": {"type": "string"},
    "day": {"type": "string", "format": "date"},
    "provider": {"type": "string"},
    "page_num": {"type": "integer", "minimum": 1, "maximum": 1000},
    "page_size": {"type": "integer", "minimum": 1, "maximum": 500},
}


def _schemas() -> dict[str, Any]:
    found: dict[str, Any] = {"Error": ERROR}
    request = REQUEST_ADAPTER.json_schema(ref_template=REF)
    found.update(request.pop("$defs", {}))
    found["JobRequest"] = request
    for model in (Job, ElementPage):
        schema = model.model_json_schema(ref_template=REF)
        found.update(schema.pop("$defs", {}))
        found[model.__name__] = schema
    return found


def _routes() -> list[tuple[str, str, str, bool]]:
    """(path, method, event name, signed) of every HttpApi event in the template."""
    document = template.load(REPO / "template.yaml")
    routes = []
    for resource in document["Resources"].values():
        for name, event in resource.get("Properties", {}).get("Events", {}).items():
            if event.get("Type") != "HttpApi":
                continue
            props = event["Properties"]
            signed = props.get("Auth", {}).get("Authorizer") != "NONE"
            routes.append((props["Path"], props["Method"].lower(), name, signed))
    return sorted(routes)


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, method, name, signed in _routes():
        spec = OPERATIONS.get(name, {"summary": name, "answers": {200: OBJECT}})
        parameters = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
            for p in re.findall(r"{(\w+)}", path)
        ]
        parameters += [
            {"name": q, "in": "query", "required": False, "schema": QUERY[q]} for q in spec.get("query", [])
        ]
        parameters += [
            {"name": h, "in": "header", "required": False, "schema": {"type": "string"}}
            for h in spec.get("headers", [])
        ]
        operation: dict[str, Any] = {
            "operationId": name,
            "summary": spec["summary"],
            "responses": {
                **{
                    str(status): {"description": "OK", "content": {"application/json": {"schema": schema}}}
                    for status, schema in spec["answers"].items()
                },
                "4XX": {
                    "description": "refused, naming the field and the rule",
                    "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
                },
            },
        }
        if parameters:
            operation["parameters"] = parameters
        if "body" in spec:
            schema = OBJECT if spec["body"] == "any" else {"$ref": REF.format(model=spec["body"])}
            operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
            operation["responses"]["413"] = TOO_LARGE
        operation["security"] = [{"sigv4": []}] if signed else []
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "klingflow",
            "version": "1",
            "description": "Kling video generation on AWS: submit, quote, follow and cancel jobs; "
            "elements; spend. Every route but the provider callback is IAM-authorised: sign with "
            "SigV4 (service execute-api).",
        },
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {
                "sigv4": {
                    "type": "apiKey",
                    "name": "Authorization",
                    "in": "header",
                    "x-amazon-apigateway-authtype": "awsSigv4",
                }
            },
        },
    }


def render(spec: dict[str, Any]) -> str:
    return json.dumps(spec, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write(path: Path = PATH) -> Path:
    path.write_text(render(document()))
    return path

"""Each API function answers exactly the routes the template sends it: the router dispatches
on the `routeKey` API Gateway matched, so a route in one place and not the other is a 404."""

from __future__ import annotations

import re

from klingflow.infra.http import Router, json_response
from klingflow_dev.sandbox import template
from tests.conftest import REPO, sample_event


def _template_routes() -> dict[str, set[str]]:
    document = template.load(REPO / "template.yaml")
    routes: dict[str, set[str]] = {}
    for resource in document["Resources"].values():
        if resource["Type"] != "AWS::Serverless::Function":
            continue
        for source in resource["Properties"].get("Events", {}).values():
            if source["Type"] == "HttpApi":
                folder = resource["Properties"]["CodeUri"].strip("/").split("/")[-1]
                props = source["Properties"]
                routes.setdefault(folder, set()).add(f"{props['Method'].upper()} {props['Path']}")
    return routes


def _handler_routes(folder: str) -> set[str]:
    source = (REPO / "functions" / folder / "app.py").read_text()
    return {f"{m.upper()} {p}" for m, p in re.findall(r'@api\.(get|post|delete)\("([^"]+)"\)', source)}


def test_every_function_routes_exactly_what_the_template_sends_it() -> None:
    expected = _template_routes()
    assert set(expected) == {"submit", "jobs", "callback"}
    for folder, keys in expected.items():
        assert _handler_routes(folder) == keys, folder


def test_the_router_passes_path_parameters_and_maps_errors_to_json() -> None:
    # given a router with one route that reads the request and one that fails unexpectedly
    api = Router()

    @api.post("/callbacks/{job_id}/{token}")
    def hello(job_id: str, token: str) -> dict[str, object]:
        return json_response(
            200, {"job_id": job_id, "token": token, "ua": api.current_event.headers["user-agent"]}
        )

    @api.get("/jobs")
    def broken() -> dict[str, object]:
        raise RuntimeError("boom")

    # when the sample callback event arrives, then the route gets its decoded path parameters
    answer = api.resolve(sample_event("api_callback.json"))
    assert answer["statusCode"] == 200
    assert answer["headers"] == {"Content-Type": "application/json"}
    assert '"token": "TOKEN"' in answer["body"] and '"ua": "sample"' in answer["body"]

    # and an unexpected error is a JSON 500 that says nothing of its cause
    failed = api.resolve(sample_event("api_list_jobs.json"))
    assert failed["statusCode"] == 500 and "boom" not in failed["body"]

    # and a route this function does not have is a 404
    assert api.resolve({"routeKey": "GET /nowhere"})["statusCode"] == 404

"""docs/openapi.json is what the code generates now, and describes every route the template serves."""

from __future__ import annotations

from klingflow_dev import openapi


def test_docs_openapi_json_is_current() -> None:
    assert openapi.PATH.read_text() == openapi.render(openapi.document()), (
        "docs/openapi.json is stale: run `klingflow schemas`"
    )


def test_every_route_is_described_and_only_the_callback_is_unsigned() -> None:
    spec = openapi.document()
    operations = {
        (path, method): op for path, methods in spec["paths"].items() for method, op in methods.items()
    }
    assert ("/jobs", "post") in operations and ("/jobs/quote", "post") in operations
    unsigned = [key for key, op in operations.items() if not op["security"]]
    assert unsigned == [("/callbacks/{job_id}/{token}", "post")]
    assert all(op["operationId"] in openapi.OPERATIONS for op in operations.values())

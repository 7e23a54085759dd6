"""The HTTP API from its own OpenAPI description (schemathesis): no request it generates gets a 5xx."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import requests
import schemathesis
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, settings

from klingflow_dev import openapi
from tests.integration.conftest import Stack
from tests.reliability.conftest import CHAOS

SCHEMA = schemathesis.openapi.from_dict(openapi.document())
COUNTS: Counter[str] = Counter()


class SigV4(requests.auth.AuthBase):
    """Signs like an IAM caller (the sandbox takes any credentials)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        signed = AWSRequest(
            method=request.method, url=request.url, data=request.body or b"", headers=dict(request.headers)
        )
        SigV4Auth(Credentials("sandbox", "sandbox", "sandbox"), "execute-api", "us-east-1").add_auth(signed)
        request.headers.update(dict(signed.headers.items()))
        return request


@pytest.fixture(scope="module")
def api(shared_stack: Stack) -> Stack:
    return shared_stack


@SCHEMA.parametrize()
@settings(max_examples=200 if CHAOS else 8, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_generated_request_gets_a_5xx(case: Any, api: Stack) -> None:
    response = case.call(base_url=api.api.base_url, auth=SigV4(), timeout=30)
    COUNTS[f"{case.method} {case.path} {response.status_code // 100}xx"] += 1
    assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:500])

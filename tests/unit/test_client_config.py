"""Every function's AWS clients give up well inside the function's own timeout: botocore's
standard retry mode, few tries, and connect and read timeouts chosen per function
(settings.py's `AWS_CALL_ATTEMPTS`, `AWS_CONNECT_TIMEOUT_S`, `AWS_READ_TIMEOUT_S`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from klingflow import runtime
from klingflow import settings as settings_module
from klingflow.settings import AwsCalls
from klingflow_dev.sandbox import template
from tests.conftest import REPO

TEMPLATE = template.load(REPO / "template.yaml")
FUNCTIONS = {
    logical: resource["Properties"]
    for logical, resource in TEMPLATE["Resources"].items()
    if resource["Type"] == "AWS::Serverless::Function"
}
# botocore's standard mode waits up to min(2^(try-1), 20) s after a throttled try (its
# ExponentialBackoff with the throttling base scale of 1), the largest of its waits.
MAX_BACKOFF_S = 20


def worst_case_s(calls: AwsCalls) -> float:
    """The longest one call can take: every try connecting and reading to its timeout, and every
    wait between tries at its ceiling."""
    waits = sum(min(2.0 ** (attempt - 1), MAX_BACKOFF_S) for attempt in range(1, calls.attempts))
    return calls.attempts * (calls.connect_timeout_s + calls.read_timeout_s) + waits


def function_calls(logical: str) -> tuple[AwsCalls, float]:
    """The AwsCalls a function's settings give it as deployed, and its Timeout."""
    props = FUNCTIONS[logical]
    app = (REPO / props["CodeUri"] / "app.py").read_text()
    [name] = set(re.findall(r"(\w+Settings)\.from_env\(", app))
    fields = getattr(settings_module, name).model_fields
    environment = {
        **TEMPLATE["Globals"]["Function"]["Environment"]["Variables"],
        **props.get("Environment", {}).get("Variables", {}),
    }

    def value(field: str) -> Any:
        return environment.get(field.upper(), fields[field].default)

    calls = AwsCalls(
        int(value("aws_call_attempts")),
        float(value("aws_connect_timeout_s")),
        float(value("aws_read_timeout_s")),
    )
    return calls, float(props.get("Timeout", TEMPLATE["Globals"]["Function"]["Timeout"]))


@pytest.mark.parametrize("logical", sorted(FUNCTIONS))
def test_each_functions_aws_calls_give_up_within_half_its_timeout(logical: str) -> None:
    calls, timeout_s = function_calls(logical)
    assert calls.attempts <= 3, (logical, calls)
    assert worst_case_s(calls) <= timeout_s / 2, (logical, calls, worst_case_s(calls), timeout_s)


def test_the_callback_function_fails_fast() -> None:
    # A provider's callback function has 10 s: two tries of 2 s and one wait of at most 1 s.
    calls, timeout_s = function_calls("CallbackFunction")
    assert (calls, timeout_s) == (AwsCalls(2, 0.5, 1.5), 10)
    assert worst_case_s(calls) == 5


@pytest.fixture
def fresh(aws_env: None) -> Iterator[None]:
    runtime.reset()
    yield
    runtime.reset()


def test_a_client_is_made_with_its_functions_retry_mode_tries_and_timeouts(fresh: None) -> None:
    calls = AwsCalls(2, 0.5, 1.5)
    made = runtime.client("dynamodb", calls)
    config = made.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    assert (config.connect_timeout, config.read_timeout) == (0.5, 1.5)
    # Another function's settings make another client; the same settings, the same one
    assert runtime.client("dynamodb", AwsCalls()) is not made
    assert runtime.client("dynamodb", AwsCalls(2, 0.5, 1.5)) is made
    # S3's presigned links stay SigV4, its pool as large as every client's
    s3 = runtime.client("s3", calls).meta.config
    pool = runtime._POOLED.max_pool_connections  # type: ignore[attr-defined]
    assert (s3.signature_version, s3.retries["mode"], s3.max_pool_connections) == ("s3v4", "standard", pool)

"""The circuit breaker per provider, shared through the jobs table."""

from __future__ import annotations

from typing import Any

import pytest

from klingflow.core.codes import ProviderErrorClass
from klingflow.providers.health import Breakers
from klingflow_dev.clock import ManualClock

DOWN = ProviderErrorClass.PROVIDER_DOWN


@pytest.fixture
def breakers(table: Any, clock: ManualClock) -> Breakers:
    return Breakers(table, clock, failure_threshold=3, cool_down_s=60)


def test_it_opens_after_consecutive_failures_only(breakers: Breakers) -> None:
    breakers.record_failure("kling", DOWN)
    breakers.record_failure("kling", DOWN)
    breakers.record_success("kling")  # not consecutive any more
    breakers.record_failure("kling", DOWN)
    breakers.record_failure("kling", DOWN)
    assert breakers.allows("kling")
    breakers.record_failure("kling", DOWN)
    assert breakers.state("kling")["state"] == "open"
    assert not breakers.allows("kling")


def test_a_rejected_request_says_nothing_about_the_provider(breakers: Breakers) -> None:
    for _ in range(5):
        breakers.record_failure("kling", ProviderErrorClass.INVALID_REQUEST)
        breakers.record_failure("kling", ProviderErrorClass.CONTENT_POLICY)
    assert breakers.state("kling") == {"state": "closed", "failures": 0}


def test_after_the_cool_down_exactly_one_probe_goes_through(breakers: Breakers, clock: ManualClock) -> None:
    for _ in range(3):
        breakers.record_failure("gateway", DOWN)
    clock.advance(59)
    assert not breakers.allows("gateway")
    clock.advance(2)
    assert breakers.allows("gateway")  # this caller probes
    assert not breakers.allows("gateway")  # every other container waits for its answer
    assert breakers.allows("evolink")  # other providers are unaffected


def test_a_successful_probe_closes_it_and_a_failed_one_cools_down_again(
    breakers: Breakers, clock: ManualClock
) -> None:
    for _ in range(3):
        breakers.record_failure("gateway", DOWN)
        breakers.record_failure("apimaster", DOWN)
    clock.advance(61)
    assert breakers.allows("gateway") and breakers.allows("apimaster")
    breakers.record_success("gateway")
    breakers.record_failure("apimaster", DOWN)
    assert breakers.state("gateway") == {"state": "closed", "failures": 0}
    assert breakers.allows("gateway")
    assert not breakers.allows("apimaster")
    clock.advance(61)
    assert breakers.allows("apimaster")

"""The circuit breaker per provider, shared through the jobs table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from klingflow.core.codes import ProviderErrorClass
from klingflow.providers.health import Breakers
from klingflow.providers.telemetry import ProviderMetrics
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


def _emitted(out: str) -> list[dict[str, Any]]:
    """The EMF documents Powertools printed (CloudWatch reads them from the function's log)."""
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_a_breaker_that_opens_is_counted_per_provider_and_in_all(
    table: Any, clock: ManualClock, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given breakers that publish metrics
    breakers = Breakers(
        table, clock, failure_threshold=3, cool_down_s=60, metrics=ProviderMetrics(namespace="klingflow")
    )
    # When two failures leave it closed, and the third opens it
    breakers.record_failure("kling", DOWN)
    breakers.record_failure("kling", DOWN)
    assert _emitted(capsys.readouterr().out) == []
    breakers.record_failure("kling", DOWN)
    # Then BreakersOpened is counted once for the provider and once for the alarm (service only)
    opened = _emitted(capsys.readouterr().out)
    assert [m["BreakersOpened"] for m in opened] == [[1.0], [1.0]]
    dimensions = [set(m["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]) for m in opened]
    assert dimensions == [{"provider", "service"}, {"service"}]
    assert (opened[0]["provider"], opened[1]["service"]) == ("kling", "klingflow")
    # And a probe that fails after the cool-down opens it, and counts it, again
    clock.advance(61)
    assert breakers.allows("kling")
    breakers.record_failure("kling", DOWN)
    assert len(_emitted(capsys.readouterr().out)) == 2

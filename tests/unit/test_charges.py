"""What a finished job cost: the provider's own figure where its answer carries one, else the rule."""

from __future__ import annotations

from typing import Any

import pytest

from klingflow.core.models import BilledSource, Job, MediaFacts
from klingflow.core.states import JobStatus
from klingflow.money.pricing import charged, provider_reserved_usd
from klingflow.providers.base import Submission, TaskReport, Usage, UsageUnit
from klingflow.providers.registry import Registry, load_configs
from tests.unit.test_store import _job

# Prices stated here rather than production's defaults: these tests are about how a charge is
# figured, so a change of price list leaves them standing.
PRICES: dict[str, dict[str, Any]] = {
    "kling": {"unit_price": 0.2, "price_per_second": {"std": 0.1}},
    "apimaster": {"price_per_second": {"std": 0.12}},
    "evolink": {"unit_price": 0.01},
    "gateway": {"base_url": "https://gw.example", "price_per_second": {"std": 0.5}},
}
USD_PER_CNY = 0.14


def _priced(changes: dict[str, dict[str, Any]] | None = None) -> Registry:
    overrides = {name: {**fields, **(changes or {}).get(name, {})} for name, fields in PRICES.items()}
    return Registry(load_configs(overrides), lambda _: {}, usd_per_cny=USD_PER_CNY)


REGISTRY = _priced()


def _motion(provider: str, seconds: float = 5.0) -> Job:
    return _job(
        provider=provider,
        request={"image": "a.png", "video": "b.mp4", "character_orientation": "image", "mode": "std"},
        inputs={"video": MediaFacts(source="s3://b/v.mp4", duration_s=seconds)},
    )


def _report(usage: Usage | None) -> TaskReport:
    return TaskReport(task_id="t", status=JobStatus.SUCCEEDED, provider_status="done", usage=usage)


def test_kling_units_are_priced_at_the_unit_price() -> None:
    charge = charged(REGISTRY, _motion("kling"), _report(Usage(3.0, UsageUnit.UNITS)))
    assert (charge.usd, charge.source, charge.provider_amount) == (0.6, BilledSource.PROVIDER, 0.6)


def test_evolink_credits_are_priced_per_credit() -> None:
    charge = charged(REGISTRY, _motion("evolink"), _report(Usage(40.8, UsageUnit.UNITS)))
    assert (charge.usd, charge.source) == (round(40.8 * 0.01, 5), BilledSource.PROVIDER)


@pytest.mark.parametrize(("reported", "seconds"), [(5.0, 5), (5.041667, 5), (5.2, 6), (4.0, 4)])
def test_gateway_seconds_bill_whole_seconds_and_a_frame_over_is_not_one_more(
    reported: float, seconds: int
) -> None:
    charge = charged(REGISTRY, _motion("gateway"), _report(Usage(reported, UsageUnit.SECONDS)))
    assert (charge.seconds, charge.currency, charge.source) == (seconds, "CNY", BilledSource.PROVIDER)
    assert charge.provider_amount == 0.5 * seconds
    assert charge.usd == round(0.5 * seconds * USD_PER_CNY, 5)


def test_without_a_figure_of_its_own_the_rule_bills_the_measured_reference_video() -> None:
    charge = charged(REGISTRY, _motion("apimaster", seconds=4.2), _report(None))
    assert (charge.seconds, charge.usd, charge.source) == (5, round(5 * 0.12, 5), BilledSource.RULE)


def test_units_without_a_unit_price_fall_back_to_the_rule() -> None:
    registry = _priced({"kling": {"unit_price": None}})
    charge = charged(registry, _motion("kling"), _report(Usage(99.0, UsageUnit.UNITS)))
    assert (charge.usd, charge.source) == (round(5 * 0.1, 5), BilledSource.RULE)


def test_what_a_provider_reserved_is_priced_as_its_charge_would_be() -> None:
    reserved = Submission(task_id="t", reserved=Usage(40.8, UsageUnit.UNITS))
    assert provider_reserved_usd(REGISTRY, "evolink", reserved) == round(40.8 * 0.01, 5)
    # No figure, or one that cannot be priced: the estimate stays what is reserved
    assert provider_reserved_usd(REGISTRY, "evolink", Submission(task_id="t")) is None
    unpriced = _priced({"evolink": {"unit_price": None}})
    assert provider_reserved_usd(unpriced, "evolink", reserved) is None

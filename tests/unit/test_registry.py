"""Provider configuration, prices and the choice of provider."""

from __future__ import annotations

import pytest

from klingflow.errors import NoProviderAvailable, RequestRejected
from klingflow.models import JobKind, Mode, Orientation
from klingflow.pricing import estimate
from klingflow.providers.registry import Registry, load_configs


def _registry(overrides: dict | None = None) -> Registry:
    return Registry(load_configs(overrides or {}), lambda _: {}, usd_per_cny=0.14)


def test_out_of_the_box_only_providers_with_a_documented_host_are_usable() -> None:
    # Seed 003 gives the gateway's paths but no host: it needs a base_url before it can be used.
    assert _registry().candidates(JobKind.MOTION_CONTROL, Mode.STD) == ["apimaster"]


def test_the_cheapest_usable_provider_comes_first_across_currencies() -> None:
    registry = _registry({"gateway": {"base_url": "https://gw.example"}})
    # gateway 0.5 CNY/s = $0.07/s beats apimaster $0.10288/s
    assert registry.candidates(JobKind.MOTION_CONTROL, Mode.STD) == ["gateway", "apimaster"]
    pricier = _registry({"gateway": {"base_url": "https://gw.example", "price_per_second": {"std": 1.0}}})
    assert pricier.candidates(JobKind.MOTION_CONTROL, Mode.STD) == ["apimaster", "gateway"]


def test_a_pin_names_exactly_one_provider_or_says_why_not() -> None:
    registry = _registry()
    assert registry.candidates(JobKind.MOTION_CONTROL, Mode.PRO, pinned="apimaster") == ["apimaster"]
    with pytest.raises(NoProviderAvailable, match="gateway"):
        registry.candidates(JobKind.MOTION_CONTROL, Mode.STD, pinned="gateway")
    with pytest.raises(RequestRejected):
        registry.candidates(JobKind.MOTION_CONTROL, Mode.STD, pinned="nobody")


def test_estimates_bill_whole_seconds_rounded_up_and_assume_the_worst_when_unknown() -> None:
    registry = _registry()
    probed = estimate(registry, "apimaster", mode=Mode.STD, duration_s=7.2, orientation=Orientation.IMAGE)
    assert (probed.seconds, probed.usd, probed.upper_bound) == (8, round(0.10288 * 8, 5), False)
    unknown = estimate(registry, "apimaster", mode=Mode.PRO, duration_s=None, orientation=Orientation.VIDEO)
    assert (unknown.seconds, unknown.upper_bound) == (30, True)


def test_a_bad_override_names_the_provider() -> None:
    with pytest.raises(ValueError, match="gateway"):
        load_configs({"gateway": {"currency": "EUR"}})

"""Provider configuration, prices and the choice of provider."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from klingflow.core.errors import NoProviderAvailable, RequestRejected
from klingflow.core.kinds import AnyRequest, Billing, JobKind, parse_request
from klingflow.core.models import MediaFacts
from klingflow.core.vocab import PriceTier
from klingflow.money.pricing import billing_of, estimate
from klingflow.providers.prices import EVOLINK_CREDIT_USD, EVOLINK_CREDITS_PER_S
from klingflow.providers.registry import Registry, load_configs
from tests.conftest import sample_event

KEYS = {"api_key": "k", "access_key": "ak", "secret_key": "sk"}


def _registry(
    overrides: dict[str, Any] | None = None, keys: Mapping[str, Mapping[str, str]] | None = None
) -> Registry:
    def credentials(name: str) -> Mapping[str, str]:
        return KEYS if keys is None else keys.get(name, {})

    return Registry(load_configs(overrides or {}), credentials, usd_per_cny=0.14)


def _motion(mode: str = "std", **changes: object) -> tuple[AnyRequest, Billing]:
    request = parse_request(
        {"image": "a.png", "video": "b.mp4", "character_orientation": "image", "mode": mode, **changes}
    )
    return request, billing_of(request, {})


def test_out_of_the_box_every_provider_with_a_documented_host_is_usable_cheapest_first() -> None:
    # the gateway's manual gives the gateway's paths but no host: it needs a base_url before it can be used.
    assert _registry().candidates(*_motion("std")) == ["kling", "apimaster", "evolink"]


def test_the_cheapest_comes_first_across_currencies() -> None:
    # Prices stated here, not production's: gateway 0.5 CNY/s = $0.07/s beats $0.08, $0.09, $0.10
    stated = {"apimaster": 0.08, "evolink": 0.09, "kling": 0.10}
    registry = _registry(
        {
            "gateway": {"base_url": "https://gw.example", "price_per_second": {"std": 0.5}},
            **{name: {"price_per_second": {"std": usd}} for name, usd in stated.items()},
        }
    )
    assert registry.candidates(*_motion("std")) == ["gateway", "apimaster", "evolink", "kling"]
    pricier = _registry({"gateway": {"base_url": "https://gw.example", "price_per_second": {"std": 1.0}}})
    assert pricier.candidates(*_motion("std"))[-1] == "gateway"


def test_a_provider_without_keys_in_the_secret_is_not_tried() -> None:
    registry = _registry(keys={"apimaster": {"api_key": "k"}, "kling": {"access_key": "ak"}})
    assert registry.candidates(*_motion("std")) == ["apimaster"]
    with pytest.raises(NoProviderAvailable, match="credentials"):
        registry.candidates(*_motion("std", provider="kling"))


def test_a_disabled_provider_is_skipped_and_an_override_adds_a_second_account() -> None:
    registry = _registry(
        {
            "kling": {"enabled": False},
            "apimaster-eu": {
                "dialect": "apimaster",
                "base_url": "https://eu.example/v1",
                "price_per_second": {"std": 0.05},
            },
        }
    )
    assert registry.candidates(*_motion("std")) == ["apimaster-eu", "apimaster", "evolink"]
    assert registry.adapter("apimaster-eu").base_url == "https://eu.example/v1"


def test_a_pin_names_exactly_one_provider_or_says_why_not() -> None:
    registry = _registry()
    assert registry.candidates(*_motion("pro", provider="apimaster")) == ["apimaster"]
    with pytest.raises(NoProviderAvailable, match="gateway"):
        registry.candidates(*_motion("std", provider="gateway"))
    with pytest.raises(RequestRejected):
        registry.candidates(*_motion("std", provider="nobody"))


def test_estimates_bill_whole_seconds_rounded_up_and_assume_the_worst_when_unknown() -> None:
    registry = _registry({"apimaster": {"price_per_second": {"std": 0.1}}})
    request, _ = _motion("std")
    probed = estimate(registry, "apimaster", request, {"video": MediaFacts(source="v", duration_s=7.2)})
    assert (probed.seconds, probed.usd, probed.upper_bound) == (8, round(0.1 * 8, 5), False)
    request, _ = _motion("pro", character_orientation="video")
    unknown = estimate(registry, "apimaster", request, {"video": MediaFacts(source="https://x/v.mp4")})
    assert (unknown.seconds, unknown.upper_bound) == (30, True)


def test_a_model_override_reaches_the_request() -> None:
    registry = _registry({"kling": {"model": "kling-v2-6"}})
    assert registry.adapter("kling").model_for(JobKind.MOTION_CONTROL) == "kling-v2-6"


def test_a_bad_override_names_the_provider() -> None:
    with pytest.raises(ValueError, match="gateway"):
        load_configs({"gateway": {"currency": "EUR"}})


def _kind(kind: str, **changes: object) -> tuple[AnyRequest, Billing]:
    body = {**sample_event(f"requests/{kind}.json"), **changes}
    request = parse_request({k: v for k, v in body.items() if v is not None})
    return request, billing_of(request, {})


def test_a_kind_nobody_priced_is_not_routed_and_the_answer_says_what_to_set() -> None:
    """Given the defaults, omni has no published price anywhere: no provider is chosen on a guess."""
    registry = _registry({"gateway": {"base_url": "https://gw.example"}})
    unpinned = {"provider": None, "elements": None, "prompt": "<<<image_1>>> dances"}
    with pytest.raises(NoProviderAvailable, match="kling has no price for omni_video at tier pro"):
        registry.candidates(*_kind("omni_video", **unpinned))

    priced = _registry({"kling": {"price_per_second": {"omni_video": {"pro": 0.12}}}})
    assert priced.candidates(*_kind("omni_video", **unpinned)) == ["kling"]


def test_pricing_one_kind_or_tier_keeps_every_other_price() -> None:
    configs = load_configs(
        {
            "kling": {"price_per_second": {"text_to_video": {"std": 0.07}}},
            "apimaster": {"price_per_second": {"pro": 0.2}},
        }
    )
    assert configs["kling"].price_per_second[JobKind.TEXT_TO_VIDEO] == {
        "std": 0.07,
        "std_sound": 0.126,
        "pro": 0.11197,
        "pro_sound": 0.168,
    }
    assert configs["kling"].price_per_second[JobKind.MOTION_CONTROL] == {"std": 0.084, "pro": 0.11197}
    # The motion-only shorthand of earlier deployments still prices motion control
    assert configs["apimaster"].price_per_second[JobKind.MOTION_CONTROL] == {"std": 0.10288, "pro": 0.2}


def test_the_tier_decides_the_order() -> None:
    """evolink's sound factor is 1.5x, Kling's (?) too: both keep their order; gateway is unpriced."""
    registry = _registry({"gateway": {"base_url": "https://gw.example"}})
    assert registry.candidates(*_kind("text_to_video", sound=False)) == ["evolink", "kling"]
    request, billing = _kind("text_to_video", sound=False)
    # evolink's price is its credits (5.4 a second at 720p) at $0.0139 a credit, not the rounded $0.075
    assert registry.price_usd("evolink", request.kind, billing) == round(5.4 * 5 * 0.0139, 5)


def test_a_pinned_provider_that_refuses_the_options_names_its_rule() -> None:
    with pytest.raises(RequestRejected) as caught:
        _registry().candidates(*_kind("text_to_video", duration_s=7, provider="kling"))
    [error] = caught.value.errors
    assert (error.field, error.rule) == ("duration_s", "kling_seconds")


def test_a_deployment_can_keep_a_provider_to_some_kinds() -> None:
    registry = _registry({"evolink": {"kinds": ["motion_control"]}})
    assert registry.candidates(*_kind("text_to_video", sound=False)) == ["kling"]
    with pytest.raises(NoProviderAvailable, match="evolink does not offer custom_element"):
        registry.candidates(*_kind("custom_element"))


def test_null_withdraws_one_price_and_keeps_the_rest() -> None:
    configs = load_configs({"evolink": {"price_per_second": {"text_to_video": {"pro_sound": None}}}})
    assert "pro_sound" not in configs["evolink"].price_per_second[JobKind.TEXT_TO_VIDEO]
    assert configs["evolink"].price_per_second[JobKind.TEXT_TO_VIDEO][PriceTier.STD] == 5.4 * 0.0139
    registry = _registry({"evolink": {"price_per_second": {"text_to_video": {"pro_sound": None}}}})
    assert registry.candidates(*_kind("text_to_video", mode="pro")) == ["kling"]


def test_options_some_provider_would_take_are_not_the_requests_fault() -> None:
    """Given a 7 s clip (only evolink makes it) and evolink without keys, the request is fine:
    the deployment lacks the provider, and the answer says so instead of blaming the request."""
    registry = _registry(keys={"kling": KEYS, "gateway": KEYS, "apimaster": KEYS})
    with pytest.raises(NoProviderAvailable, match="evolink has no credentials"):
        registry.candidates(*_kind("text_to_video", duration_s=7))


def test_naming_a_voice_in_the_prompt_is_its_own_price_tier() -> None:
    request, billing = _kind(
        "image_to_video", sound=True, voice_list=[{"voice_id": "v1"}], prompt="<<<voice_1>>> says hi"
    )
    assert billing.tier == "pro_sound_voice"
    # Nobody publishes that price: no provider is chosen until one is set
    with pytest.raises(NoProviderAvailable, match="pro_sound_voice"):
        _registry().candidates(request, billing)


def test_a_price_tier_that_does_not_exist_is_refused_not_silently_unrouted() -> None:
    # A typo would otherwise leave the real tier unpriced and quietly drop the provider from routes
    with pytest.raises(ValueError, match=r"(?s)PROVIDER_OVERRIDES\['evolink'\] is invalid.*prro"):
        load_configs({"evolink": {"price_per_second": {"text_to_video": {"prro": 0.1}}}})


def test_a_misspelled_override_key_is_refused_at_cold_start_naming_it() -> None:
    with pytest.raises(ValueError, match=r"PROVIDER_OVERRIDES\['gateway'\].*enabeld"):
        load_configs({"gateway": {"enabeld": True}})


def test_evolinks_estimate_is_exactly_what_its_credits_settle_to() -> None:
    """Every evolink tier, 1..30 s: the estimate (what is reserved) is never less than the
    credits the emulated evolink reports (credits per second x seconds, to 4 places) priced at
    $0.0139 a credit (what settles)."""
    registry = _registry()
    config = registry.configs["evolink"]
    assert config.unit_price == EVOLINK_CREDIT_USD == 0.0139
    short = []
    for kind, tiers in EVOLINK_CREDITS_PER_S.items():
        for tier, per_second in tiers.items():
            for seconds in range(1, 31):
                estimate = registry.price_usd("evolink", kind, Billing(PriceTier(tier), seconds))
                settled = round(round(per_second * seconds, 4) * config.unit_price, 5)
                if estimate < settled or estimate - settled > 0.00001:
                    short.append((kind, tier, seconds, estimate, settled))
    assert short == []
    # One credit an element
    assert config.flat_prices[JobKind.CUSTOM_ELEMENT] == config.unit_price

"""What each provider charges by default, in its currency, from the providers' documentation.

Prices are per job kind and tier (`std`, `pro`, and `std_sound`/`pro_sound` where sound costs
more): per second of billed video (`price_per_second`), per request for flat-priced work
(`flat_prices`), and per unit of what a provider reports it charged (`unit_price`). A kind a
dialect can build but nobody has priced is not routed there, because "cheapest" cannot be
decided on a guess. A deployment overrides any of them per provider with the PROVIDER_OVERRIDES
JSON, merged per kind and tier (`registry.load_configs`).
"""

from __future__ import annotations

from typing import Any

from klingflow.core.vocab import JobKind


# Evolink's Kling 3.0 price factors (evolink's Kling 3.0 pages): 720p 1.0x, 720p+sound 1.5x, 1080p 1.333x,
# 1080p+sound 2.0x.
def _factored(base: float) -> dict[str, float]:
    return {
        "std": base,
        "std_sound": round(base * 1.5, 5),
        "pro": round(base * 1.333, 5),
        "pro_sound": round(base * 2.0, 5),
    }


# Evolink charges credits, at $0.0139 a credit (evolink's motion-control page:
# "$0.0139 / request (1 Credits)");
# its pages quote dollars rounded from them ("$0.075/second (5.4 Credits)"). Its prices here are
# its credits at that price, unrounded, so an estimate is exactly what the credits it reports
# settle to (a rounded dollar figure under-reserved: $0.567 for a clip charged $0.56712).
EVOLINK_CREDIT_USD = 0.0139
# Credits per second: Kling 3.0 5.4 at 720p (evolink's Kling 3.0 page), times the factors
# above (8.1, 7.1982, 10.8 there); motion control 8.16, the "$0.1134/s" of evolink's motion-control page in
# credits, at 1080p times 1.333 (?).
EVOLINK_CREDITS_PER_S = {
    JobKind.MOTION_CONTROL: {"std": 8.16, "pro": 8.16 * 1.333},
    JobKind.TEXT_TO_VIDEO: {"std": 5.4, "std_sound": 5.4 * 1.5, "pro": 5.4 * 1.333, "pro_sound": 5.4 * 2.0},
    JobKind.IMAGE_TO_VIDEO: {"std": 5.4, "std_sound": 5.4 * 1.5, "pro": 5.4 * 1.333, "pro_sound": 5.4 * 2.0},
}


def _evolink_prices() -> dict[str, dict[str, float]]:
    return {
        kind.value: {tier: round(credits * EVOLINK_CREDIT_USD, 9) for tier, credits in tiers.items()}
        for kind, tiers in EVOLINK_CREDITS_PER_S.items()
    }


DEFAULT_PRICES: dict[str, dict[str, Any]] = {
    "apimaster": {  # apimaster's page
        "currency": "USD",
        "price_per_second": {"motion_control": {"std": 0.10288, "pro": 0.13712}},
    },
    "evolink": {  # evolink's pages
        "currency": "USD",
        "price_per_second": _evolink_prices(),
        # One credit per element (evolink's pages).
        "flat_prices": {"custom_element": EVOLINK_CREDIT_USD},
        "unit_price": EVOLINK_CREDIT_USD,
    },
    "gateway": {  # the gateway's manual
        "currency": "CNY",
        # the gateway's manual prices motion control only; its other kinds need prices from the deployment.
        "price_per_second": {"motion_control": {"std": 0.5, "pro": 0.8}},
    },
    "kling": {  # Kling's own API (Kling's API reference, docs/providers.md), which gives no prices
        "currency": "USD",
        "price_per_second": {
            # (?) evolink's Kling 3.0 pages quotes the official Kling 3.0 API at $0.084/s; the other tiers use
            # evolink's factors. Omni has no published price here: set one to route omni to Kling.
            "motion_control": {"std": 0.084, "pro": 0.11197},
            "text_to_video": _factored(0.084),
            "image_to_video": _factored(0.084),
        },
        # (?) What one unit of a resource pack costs varies by pack; $0.14 makes 0.6 units per
        # second of std motion control the $0.084/s above. Set it to your pack's price.
        "unit_price": 0.14,
    },
}

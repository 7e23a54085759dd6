"""The sandbox-tier tests' prices (tests/fixtures/prices.py) owe nothing to production's: a price
added or corrected in DEFAULT_PRICES or SANDBOX_PRICES cannot leak into those tests unnoticed."""

from __future__ import annotations

from typing import Any

from klingflow.providers.prices import DEFAULT_PRICES
from klingflow.providers.registry import load_configs
from klingflow_dev.sandbox.sandbox import SANDBOX_PRICES
from tests.fixtures.prices import PRICES, with_prices

# The fields of an override that price something; the rest (base_url, models...) are not prices.
PRICE_FIELDS = ("currency", "price_per_second", "flat_prices", "unit_price")


def _priced(entry: dict[str, Any]) -> set[tuple[str, ...]]:
    """Every (field, kind, tier) an override entry prices, flattened."""
    found: set[tuple[str, ...]] = set()
    for field in PRICE_FIELDS:
        value = entry.get(field)
        if field == "price_per_second" and isinstance(value, dict):
            found |= {(field, kind, tier) for kind, tiers in value.items() for tier in tiers}
        elif field == "flat_prices" and isinstance(value, dict):
            found |= {(field, kind) for kind in value}
        elif field in entry:
            found.add((field,))
    return found


def test_the_fixture_overrides_every_price_production_and_the_sandbox_set() -> None:
    for production in (DEFAULT_PRICES, SANDBOX_PRICES):
        for provider, entry in production.items():
            missing = _priced(entry) - _priced(PRICES.get(provider, {}))
            assert not missing, f"tests/fixtures/prices.py does not price {provider} {sorted(missing)}"


def test_the_sandboxs_configuration_holds_the_fixtures_prices_and_no_other() -> None:
    # As the sandbox builds it: its own prices, the fixture's over them, then the registry's
    # merge over the defaults, per kind and tier
    stated = with_prices()
    configs = load_configs({name: {**SANDBOX_PRICES.get(name, {}), **stated[name]} for name in stated})
    for name, entry in stated.items():
        config = configs[name].model_dump(mode="json", include=set(PRICE_FIELDS))
        assert config == {"unit_price": None, "flat_prices": {}, **entry}, name

"""Every dialect on one emulator with a manual clock, and a registry of clients pointed at it."""

from __future__ import annotations

from klingflow.providers.registry import Registry, load_configs
from klingflow_dev.clock import ManualClock
from klingflow_dev.emulator import EmulatorServer
from tests.fixtures.prices import PRICES, USD_PER_CNY

KEYS = {
    "apimaster": {"api_key": "a-key"},
    "evolink": {"api_key": "e-key"},
    "gateway": {"api_key": "g-key"},
    "kling": {"access_key": "k-ak", "secret_key": "k-secret-key-that-is-32-bytes-long"},
}


class Providers:
    def __init__(self, clock: ManualClock, server: EmulatorServer) -> None:
        self.clock = clock
        self.server = server
        self.emulator = server.emulator

    def registry(self, *, keys: dict[str, dict[str, str]] = KEYS, timeout_s: float = 5.0) -> Registry:
        # Priced as the sandbox-tier tests are (tests/fixtures/prices.py), not as production is.
        overrides = {
            name: {**PRICES.get(name, {}), "base_url": url} for name, url in self.server.base_urls.items()
        }
        return Registry(
            load_configs(overrides),
            lambda name: keys[name],
            timeout_s=timeout_s,
            clock=self.clock,
            usd_per_cny=USD_PER_CNY,
        )

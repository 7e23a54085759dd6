"""Which providers exist, how they are configured, and which one a job goes to.

Defaults come from the seeds; a deployment overrides any field per provider with the
PROVIDER_OVERRIDES JSON (base URLs, prices, enabled) without a code change. Every base URL is
configuration, so the sandbox (or a user) can point any dialect at any HTTP server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, ValidationError

from klingflow.errors import FieldError, NoProviderAvailable, RequestRejected
from klingflow.models import JobKind, Mode

from .apimaster import ApimasterAdapter
from .base import Adapter, ProviderClient
from .gateway import GatewayAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    ApimasterAdapter.dialect: ApimasterAdapter,
    GatewayAdapter.dialect: GatewayAdapter,
}


class ProviderConfig(BaseModel):
    name: str
    dialect: str
    base_url: str = ""
    enabled: bool = True
    currency: Literal["USD", "CNY"] = "USD"
    price_per_second: dict[Mode, float] = Field(default_factory=dict)
    kinds: frozenset[JobKind] = frozenset({JobKind.MOTION_CONTROL})
    # Hosts output links may come from ("*.example.com" matches subdomains); the base URL's
    # host is always allowed.
    download_hosts: list[str] = Field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.enabled and bool(self.base_url) and self.dialect in ADAPTERS


DEFAULTS: dict[str, dict[str, Any]] = {
    "apimaster": {
        "dialect": "apimaster",
        "base_url": "https://apimaster.ai/v1",
        "currency": "USD",
        "price_per_second": {"std": 0.10288, "pro": 0.13712},
        "download_hosts": ["*.apimaster.ai"],
    },
    "gateway": {
        # Seed 003 documents the paths but no host: a deployment must set base_url to enable it.
        "dialect": "gateway",
        "base_url": "",
        "currency": "CNY",
        "price_per_second": {"std": 0.5, "pro": 0.8},
    },
}


def load_configs(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, ProviderConfig]:
    unknown = set(overrides) - set(DEFAULTS)
    configs = {}
    for name in [*DEFAULTS, *sorted(unknown)]:
        # A new name is a second account or endpoint of a known dialect ({"dialect": ...}).
        merged = {**DEFAULTS.get(name, {}), **overrides.get(name, {}), "name": name}
        try:
            configs[name] = ProviderConfig.model_validate(merged)
        except ValidationError as error:
            raise ValueError(f"PROVIDER_OVERRIDES[{name!r}] is invalid: {error}") from error
    return configs


class Registry:
    """Configured providers, their adapters, and a client per provider created on first use."""

    def __init__(
        self,
        configs: Mapping[str, ProviderConfig],
        credentials: Callable[[str], Mapping[str, str]],
        *,
        usd_per_cny: float = 0.14,
        timeout_s: float = 20.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.configs = dict(configs)
        self._credentials = credentials
        self._usd_per_cny = usd_per_cny
        self._timeout_s = timeout_s
        self._http = http
        self._clients: dict[str, ProviderClient] = {}

    def adapter(self, name: str) -> Adapter:
        config = self.configs[name]
        return ADAPTERS[config.dialect](config.base_url)

    def client(self, name: str) -> ProviderClient:
        if name not in self._clients:
            self._clients[name] = ProviderClient(
                self.adapter(name), self._credentials(name), client=self._http, timeout_s=self._timeout_s
            )
        return self._clients[name]

    def credentials(self, name: str) -> Mapping[str, str]:
        return self._credentials(name)

    def price(self, name: str, mode: Mode, seconds: int) -> float:
        """What the provider charges, in its own currency."""
        return round(self.configs[name].price_per_second[mode] * seconds, 5)

    def price_usd(self, name: str, mode: Mode, seconds: int) -> float:
        """The same charge in USD, so providers billing in different currencies compare."""
        rate = self.price(name, mode, seconds)
        return round(rate * self._usd_per_cny, 5) if self.configs[name].currency == "CNY" else rate

    def download_hosts(self, name: str) -> list[str]:
        config = self.configs[name]
        return [self.adapter(name).host, *config.download_hosts]

    def candidates(self, kind: JobKind, mode: Mode, *, pinned: str | None = None) -> list[str]:
        """Usable providers for this job, cheapest first (or just the pinned one)."""
        if pinned is not None:
            config = self.configs.get(pinned)
            if config is None:
                raise RequestRejected(
                    [
                        FieldError(
                            "provider",
                            "known_provider",
                            f"unknown provider {pinned!r}; known: {sorted(self.configs)}",
                        )
                    ]
                )
            if not config.usable:
                raise NoProviderAvailable(
                    f"provider {pinned!r} is not enabled (or has no base_url) in this deployment"
                )
            if kind not in config.kinds or mode not in config.price_per_second:
                raise NoProviderAvailable(
                    f"provider {pinned!r} does not offer {kind.value} in mode {mode.value}"
                )
            return [pinned]
        usable = [
            name
            for name, config in self.configs.items()
            if config.usable and kind in config.kinds and mode in config.price_per_second
        ]
        if not usable:
            raise NoProviderAvailable(f"no enabled provider offers {kind.value} in mode {mode.value}")
        return sorted(usable, key=lambda name: (self.price_usd(name, mode, 1), name))

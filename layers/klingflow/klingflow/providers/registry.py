"""Which providers exist, how they are configured, and which ones a job may go to.

Defaults come from the seeds; a deployment overrides any field per provider with the
PROVIDER_OVERRIDES JSON (base URLs, prices, models, enabled) without a code change. Every base
URL is configuration, so the sandbox (or a user) can point any dialect at any HTTP server.
A fifth dialect is one module in this package and one entry in ADAPTERS (plus its DEFAULTS).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, Field, ValidationError

from klingflow.clock import Clock
from klingflow.errors import FieldError, NoProviderAvailable, RequestRejected
from klingflow.models import JobKind, Mode

from .apimaster import ApimasterAdapter
from .base import Adapter, ProviderClient
from .evolink import EvolinkAdapter
from .gateway import GatewayAdapter
from .kling import KlingAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    adapter.dialect: adapter for adapter in (ApimasterAdapter, EvolinkAdapter, GatewayAdapter, KlingAdapter)
}


class ProviderConfig(BaseModel):
    name: str
    dialect: str
    base_url: str = ""
    enabled: bool = True
    currency: Literal["USD", "CNY"] = "USD"
    price_per_second: dict[Mode, float] = Field(default_factory=dict)
    # Prices per request for flat-priced work (e.g. custom element creation).
    flat_prices: dict[str, float] = Field(default_factory=dict)
    kinds: frozenset[JobKind] = frozenset({JobKind.MOTION_CONTROL})
    model: str | None = None  # the model name requests carry (the dialect's default if unset)
    # The secret's fields this provider needs, e.g. api_key, or access_key + secret_key.
    credential_fields: tuple[str, ...] = ("api_key",)
    # Hosts output links may come from ("*.example.com" matches subdomains); the base URL's
    # host is always allowed.
    download_hosts: list[str] = Field(default_factory=list)

    @property
    def configured(self) -> bool:
        return self.enabled and bool(self.base_url) and self.dialect in ADAPTERS


DEFAULTS: dict[str, dict[str, Any]] = {
    "apimaster": {  # seed 004
        "dialect": "apimaster",
        "base_url": "https://apimaster.ai/v1",
        "currency": "USD",
        "price_per_second": {"std": 0.10288, "pro": 0.13712},
        "download_hosts": ["*.apimaster.ai"],
    },
    "evolink": {  # seeds 000-002
        "dialect": "evolink",
        "base_url": "https://api.evolink.ai/v1",
        "currency": "USD",
        # "from $0.1134/s" is the 720p price; 1080p uses the seeds' 1.333x quality factor (?).
        "price_per_second": {"std": 0.1134, "pro": 0.15116},
        "flat_prices": {"custom_element": 0.0139},
        "download_hosts": ["*.evolink.ai"],
    },
    "gateway": {  # seed 003: paths but no host, so a deployment sets base_url to enable it
        "dialect": "gateway",
        "base_url": "",
        "currency": "CNY",
        "price_per_second": {"std": 0.5, "pro": 0.8},
    },
    "kling": {  # Kling's own API (PROVIDERS.md section 4); no motion-control price is given there
        "dialect": "kling",
        "base_url": "https://api-singapore.klingai.com",
        "currency": "USD",
        # (?) Seed 002 quotes the official Kling 3.0 API at $0.084/s; pro at the 1.333x factor.
        "price_per_second": {"std": 0.084, "pro": 0.11197},
        "credential_fields": ("access_key", "secret_key"),
        "download_hosts": ["*.klingai.com"],
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
    """Configured providers, one adapter and one client each, created on first use."""

    def __init__(
        self,
        configs: Mapping[str, ProviderConfig],
        credentials: Callable[[str], Mapping[str, str]],
        *,
        usd_per_cny: float = 0.14,
        timeout_s: float = 20.0,
        http: httpx.Client | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.configs = dict(configs)
        self._credentials = credentials
        self._usd_per_cny = usd_per_cny
        self._timeout_s = timeout_s
        self._http = http
        self._clock = clock
        self._adapters: dict[str, Adapter] = {}
        self._clients: dict[str, ProviderClient] = {}

    def adapter(self, name: str) -> Adapter:
        if name not in self._adapters:
            config = self.configs[name]
            self._adapters[name] = ADAPTERS[config.dialect](
                config.base_url, model=config.model, clock=self._clock
            )
        return self._adapters[name]

    def client(self, name: str) -> ProviderClient:
        if name not in self._clients:
            self._clients[name] = ProviderClient(
                self.adapter(name),
                lambda: self.credentials(name),
                client=self._http,
                timeout_s=self._timeout_s,
            )
        return self._clients[name]

    def credentials(self, name: str) -> Mapping[str, str]:
        return self._credentials(name)

    def has_credentials(self, name: str) -> bool:
        found = self.credentials(name)
        return all(found.get(field) for field in self.configs[name].credential_fields)

    def price(self, name: str, mode: Mode, seconds: int) -> float:
        """What the provider charges, in its own currency."""
        return round(self.configs[name].price_per_second[mode] * seconds, 5)

    def price_usd(self, name: str, mode: Mode, seconds: int) -> float:
        """The same charge in USD, so providers billing in different currencies compare."""
        rate = self.price(name, mode, seconds)
        return round(rate * self._usd_per_cny, 5) if self.configs[name].currency == "CNY" else rate

    def download_hosts(self, name: str) -> list[str]:
        return [self.adapter(name).host, *self.configs[name].download_hosts]

    def candidates(self, kind: JobKind, mode: Mode, *, pinned: str | None = None) -> list[str]:
        """Providers that can take this job, cheapest first (or just the pinned one).

        A provider needs its configuration (enabled, a base URL), the kind and mode, and its
        credentials in the secret: one without keys would only fail, so it is not tried.
        """
        if pinned is not None:
            config = self.configs.get(pinned)
            if config is None:
                known = sorted(self.configs)
                raise RequestRejected(
                    [FieldError("provider", "known_provider", f"unknown provider {pinned!r}; known: {known}")]
                )
            if not config.configured:
                raise NoProviderAvailable(
                    f"provider {pinned!r} is not enabled (or has no base_url) in this deployment"
                )
            if kind not in config.kinds or mode not in config.price_per_second:
                raise NoProviderAvailable(
                    f"provider {pinned!r} does not offer {kind.value} in mode {mode.value}"
                )
            if not self.has_credentials(pinned):
                raise NoProviderAvailable(f"provider {pinned!r} has no credentials in the provider secret")
            return [pinned]
        usable = [
            name
            for name, config in self.configs.items()
            if config.configured
            and kind in config.kinds
            and mode in config.price_per_second
            and self.has_credentials(name)
        ]
        if not usable:
            raise NoProviderAvailable(
                f"no enabled provider with credentials offers {kind.value} in mode {mode.value}"
            )
        return sorted(usable, key=lambda name: (self.price_usd(name, mode, 1), name))

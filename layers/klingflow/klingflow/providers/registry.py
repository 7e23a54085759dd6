"""Which providers exist, how they are configured, and which ones a job may go to.

Defaults come from the providers' documentation (their prices in `prices.py`); a deployment overrides any
field per
provider with the PROVIDER_OVERRIDES JSON (base URLs, prices, models, enabled) without a code
change. Every base URL is configuration, so the sandbox (or a user) can point any dialect at any
HTTP server. A fifth dialect is one module in this package, one entry in ADAPTERS (`dialects.py`),
its DEFAULTS here and its prices in `prices.py`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from klingflow.core.clock import Clock
from klingflow.core.errors import FieldError, NoProviderAvailable, RequestRejected
from klingflow.core.states import JobStatus
from klingflow.core.vocab import Billing, JobKind, PriceTier

from .base import Adapter, TaskReport
from .client import ProviderClient
from .defaults import PROVIDER_TIMEOUT_S, USD_PER_CNY
from .dialects import ADAPTERS
from .prices import DEFAULT_PRICES

if TYPE_CHECKING:
    import httpx

    from klingflow.core.kinds import AnyRequest
    from klingflow.core.models import Job


class ProviderConfig(BaseModel):
    # A misspelled key ("enabeld") is refused at cold start, naming it, instead of ignored.
    model_config = ConfigDict(extra="forbid")

    name: str
    dialect: str
    base_url: str = ""
    enabled: bool = True
    currency: Literal["USD", "CNY"] = "USD"
    # Per job kind, per tier: the price of one second of billed video (a tier that is not one
    # of PriceTier is refused, so a typo cannot silently take a provider out of routing).
    price_per_second: dict[JobKind, dict[PriceTier, float]] = Field(default_factory=dict)
    # Per job kind: the price of one request, for flat-priced work (custom element creation).
    flat_prices: dict[JobKind, float] = Field(default_factory=dict)
    # The kinds this provider is used for; None: every kind its dialect can build.
    kinds: frozenset[JobKind] | None = None
    # Model names requests carry, per kind (the dialect's defaults where unset).
    models: dict[JobKind, str] = Field(default_factory=dict)
    # The secret's fields this provider needs, e.g. api_key, or access_key + secret_key.
    credential_fields: tuple[str, ...] = ("api_key",)
    # Hosts output links may come from ("*.example.com" matches subdomains); the base URL's
    # host is always allowed.
    download_hosts: list[str] = Field(default_factory=list)
    # The price of one unit of what the provider reports it charged (Kling units, evolink
    # credits), in its currency; None: its figure cannot be converted, so the billing rule settles.
    unit_price: float | None = Field(default=None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _motion_only_shorthand(cls, data: Any) -> Any:
        return motion_only_shorthand(data)

    @property
    def configured(self) -> bool:
        return self.enabled and bool(self.base_url) and self.dialect in ADAPTERS

    def offers(self, kind: JobKind) -> bool:
        return kind in ADAPTERS[self.dialect].kinds and (self.kinds is None or kind in self.kinds)

    def rate(self, kind: JobKind, tier: PriceTier) -> float | None:
        """Price per second at a tier, or per request for "flat"; None where nobody set one."""
        if tier is PriceTier.FLAT:
            return self.flat_prices.get(kind)
        return self.price_per_second.get(kind, {}).get(tier)


def motion_only_shorthand(data: Any) -> Any:
    """Earlier overrides priced motion control alone ({"std": .., "pro": ..}) and named one
    `model`: both still mean motion control."""
    if not isinstance(data, dict):
        return data
    data = dict(data)
    prices = data.get("price_per_second")
    if isinstance(prices, dict) and prices and all(isinstance(v, int | float) for v in prices.values()):
        data["price_per_second"] = {JobKind.MOTION_CONTROL.value: prices}
    if "model" in data:
        data["models"] = {JobKind.MOTION_CONTROL.value: data.pop("model"), **(data.get("models") or {})}
    return data


# Fields merged one level deep, so pricing one kind (or naming one model) keeps the others.
_PER_KIND = ("price_per_second", "flat_prices", "models")


def _merge(default: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides replace fields, but merge per kind (and prices per tier); null withdraws one."""
    merged = {**default, **override}
    for name in _PER_KIND:
        if isinstance(default.get(name), dict) and isinstance(override.get(name), dict):
            merged[name] = {**default[name], **override[name]}
            if name == "price_per_second":
                merged[name] = {
                    kind: _without_nulls({**default[name].get(kind, {}), **tiers})
                    if isinstance(tiers, dict)
                    else tiers
                    for kind, tiers in merged[name].items()
                }
            merged[name] = _without_nulls(merged[name])
    return merged


def _without_nulls(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


# Where each provider is and how it signs in; what it charges is merged in from prices.py.
_ENDPOINTS: dict[str, dict[str, Any]] = {
    "apimaster": {  # apimaster's page
        "dialect": "apimaster",
        "base_url": "https://apimaster.ai/v1",
        "download_hosts": ["*.apimaster.ai"],
    },
    "evolink": {  # evolink's pages
        "dialect": "evolink",
        "base_url": "https://api.evolink.ai/v1",
        "download_hosts": ["*.evolink.ai"],
    },
    "gateway": {  # the gateway's manual: paths but no host, so a deployment sets base_url to enable it
        "dialect": "gateway",
        "base_url": "",
    },
    "kling": {  # Kling's own API (Kling's API reference, docs/providers.md)
        "dialect": "kling",
        "base_url": "https://api-singapore.klingai.com",
        "credential_fields": ("access_key", "secret_key"),
        "download_hosts": ["*.klingai.com"],
    },
}
DEFAULTS: dict[str, dict[str, Any]] = {
    name: {**endpoint, **DEFAULT_PRICES.get(name, {})} for name, endpoint in _ENDPOINTS.items()
}


def load_configs(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, ProviderConfig]:
    unknown = set(overrides) - set(DEFAULTS)
    configs = {}
    for name in [*DEFAULTS, *sorted(unknown)]:
        # A new name is a second account or endpoint of a known dialect ({"dialect": ...}).
        override = motion_only_shorthand(dict(overrides.get(name, {})))
        merged = {**_merge(DEFAULTS.get(name, {}), override), "name": name}
        try:
            configs[name] = ProviderConfig.model_validate(merged)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in item['loc']) or '(provider)'}: {item['msg']}"
                for item in error.errors(include_url=False)
            )
            raise ValueError(f"PROVIDER_OVERRIDES[{name!r}] is invalid: {problems}") from None
    return configs


@dataclass(frozen=True)
class _Verdict:
    """Whether a provider can take a job, and if not, why (a reason, or options it refuses)."""

    name: str
    reason: str | None = None
    refusals: tuple[FieldError, ...] = ()
    offers: bool = True  # whether the provider makes this kind at all

    @property
    def usable(self) -> bool:
        return self.reason is None and not self.refusals


class Registry:
    """Configured providers, one adapter and one client each, created on first use."""

    def __init__(
        self,
        configs: Mapping[str, ProviderConfig],
        credentials: Callable[[str], Mapping[str, str]],
        *,
        usd_per_cny: float = USD_PER_CNY,
        timeout_s: float = PROVIDER_TIMEOUT_S,
        http: httpx.Client | None = None,
        clock: Clock | None = None,
        connections: int | None = None,
    ) -> None:
        self.configs = dict(configs)
        self._credentials = credentials
        self._usd_per_cny = usd_per_cny
        self._timeout_s = timeout_s
        self._http = http
        self._clock = clock
        self._connections = connections
        self._adapters: dict[str, Adapter] = {}
        self._clients: dict[str, ProviderClient] = {}
        # The sweeper asks from many threads: one adapter and one client (one pool) per provider.
        self._lock = threading.Lock()

    def adapter(self, name: str) -> Adapter:
        if name not in self._adapters:
            with self._lock:
                if name not in self._adapters:
                    config = self.configs[name]
                    self._adapters[name] = ADAPTERS[config.dialect](
                        config.base_url, models=config.models, clock=self._clock
                    )
        return self._adapters[name]

    def client(self, name: str) -> ProviderClient:
        if name not in self._clients:
            adapter = self.adapter(name)
            with self._lock:
                if name not in self._clients:
                    self._clients[name] = ProviderClient(
                        adapter,
                        lambda: self.credentials(name),
                        client=self._http,
                        timeout_s=self._timeout_s,
                        connections=self._connections,
                    )
        return self._clients[name]

    def credentials(self, name: str) -> Mapping[str, str]:
        return self._credentials(name)

    def has_credentials(self, name: str) -> bool:
        found = self.credentials(name)
        return all(found.get(field) for field in self.configs[name].credential_fields)

    def price(self, name: str, kind: JobKind, billing: Billing) -> float:
        """What the provider charges for a job, in its own currency."""
        rate = self.configs[name].rate(kind, billing.tier)
        if rate is None:
            raise KeyError(f"{name} has no price for {kind.value} at tier {billing.tier}")
        return round(rate if billing.flat else rate * billing.seconds, 5)

    def price_usd(self, name: str, kind: JobKind, billing: Billing) -> float:
        """The same charge in USD, so providers billing in different currencies compare."""
        return self.in_usd(name, self.price(name, kind, billing))

    def in_usd(self, name: str, amount: float) -> float:
        """An amount in the provider's currency, in USD."""
        return round(amount * self._usd_per_cny, 5) if self.configs[name].currency == "CNY" else amount

    def job_report(self, job: Job) -> TaskReport:
        """The provider's view of a sent job's task (what archive and the sweeper ask)."""
        assert job.provider is not None and job.provider_task_id is not None
        return self.task_report(
            job.provider, job.provider_task_id, job.kind, made=job.element_id, upstream=job.upstream_provider
        )

    def task_report(
        self, name: str, task_id: str, kind: JobKind, *, made: str | None = None, upstream: str | None = None
    ) -> TaskReport:
        """The provider's own view of a task. A kind the provider makes while the create call
        waits has no task to ask about: the element id its answer carried (`made`) is the outcome.
        `upstream` is where a gateway said it routed the task (named in the query when known)."""
        report = self.client(name).query(task_id, kind, upstream=upstream)
        if report is not None:
            return report
        return TaskReport(
            task_id=task_id,
            status=JobStatus.SUCCEEDED if made else None,
            provider_status="created" if made else "unknown",
            element_id=made,
        )

    def download_hosts(self, name: str) -> list[str]:
        return [self.adapter(name).host, *self.configs[name].download_hosts]

    def _verdict(self, name: str, request: AnyRequest, billing: Billing) -> _Verdict:
        config, kind = self.configs[name], request.kind
        if not config.offers(kind):
            return _Verdict(name, f"{name} does not offer {kind.value}", offers=False)
        # What the dialect takes comes first: it says whether the request itself could ever go here.
        adapter = self.adapter(name)
        refusals = [*adapter.option_refusals(request), *adapter.refusals(request)]
        if refusals:
            return _Verdict(name, refusals=tuple(refusals))
        if not config.configured:
            return _Verdict(name, f"{name} is not enabled (or has no base_url) in this deployment")
        if config.rate(kind, billing.tier) is None:
            where = (
                f"flat_prices.{kind.value}"
                if billing.flat
                else f"price_per_second.{kind.value}.{billing.tier}"
            )
            return _Verdict(
                name,
                f"{name} has no price for {kind.value} at tier {billing.tier} "
                f'(set {where} for "{name}" in the ProviderOverrides parameter to route there)',
            )
        if not self.has_credentials(name):
            return _Verdict(name, f"{name} has no credentials in the provider secret")
        return _Verdict(name)

    def quotes(
        self, request: AnyRequest, billing: Billing
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What each provider would charge for the job, cheapest first, and why each other one
        would not take it (a pinned job is priced at its pin only)."""
        if request.provider is not None:
            self._known(request.provider)
        names = [request.provider] if request.provider is not None else list(self.configs)
        priced, refusing = [], []
        for name in names:
            verdict = self._verdict(name, request, billing)
            if verdict.usable:
                amount = self.price(name, request.kind, billing)
                priced.append(
                    {
                        "provider": name,
                        "usd": self.in_usd(name, amount),
                        "amount": amount,
                        "currency": self.configs[name].currency,
                    }
                )
            else:
                refusing.append(
                    {
                        "provider": name,
                        "reason": verdict.reason or "; ".join(e.message for e in verdict.refusals),
                        "details": [e.as_dict() for e in verdict.refusals],
                    }
                )
        priced.sort(key=lambda quote: (quote["usd"], quote["provider"]))
        return priced, refusing

    def _known(self, name: str) -> None:
        if name not in self.configs:
            raise RequestRejected(
                [
                    FieldError(
                        "provider",
                        "known_provider",
                        f"unknown provider {name!r}; known: {sorted(self.configs)}",
                    )
                ]
            )

    def candidates(self, request: AnyRequest, billing: Billing) -> list[str]:
        """Providers that can take this job, cheapest first (or just the pinned one).

        A provider needs its configuration (enabled, a base URL), the kind, a price for the
        job's tier, no objection to the request's options, and its credentials in the secret.
        A request whose options no dialect takes is the request's fault (RequestRejected, naming
        each provider's rule); a request some dialect would take, were it enabled, priced and
        keyed here, is not (NoProviderAvailable, naming what each provider lacks).
        """
        pinned = request.provider
        if pinned is not None:
            self._known(pinned)
            verdict = self._verdict(pinned, request, billing)
            if verdict.refusals:
                raise RequestRejected(list(verdict.refusals))
            if verdict.reason is not None:
                raise NoProviderAvailable(verdict.reason)
            return [pinned]
        verdicts = [self._verdict(name, request, billing) for name in self.configs]
        usable = [verdict.name for verdict in verdicts if verdict.usable]
        if usable:
            return sorted(usable, key=lambda name: (self.price_usd(name, request.kind, billing), name))
        offering = [verdict for verdict in verdicts if verdict.offers]
        if offering and all(verdict.refusals for verdict in offering):
            raise RequestRejected(
                [
                    FieldError(error.field, error.rule, f"{verdict.name}: {error.message}")
                    for verdict in offering
                    for error in verdict.refusals
                ]
            )
        reasons = "; ".join(
            verdict.reason or "; ".join(f"{verdict.name}: {e.message}" for e in verdict.refusals)
            for verdict in verdicts
        )
        raise NoProviderAvailable(f"no provider can take {request.kind.value} ({billing.tier}): {reasons}")

"""Which providers exist, how they are configured, and which ones a job may go to.

Defaults come from the seeds; a deployment overrides any field per provider with the
PROVIDER_OVERRIDES JSON (base URLs, prices, models, enabled) without a code change. Prices are
per job kind and tier (`std`, `pro`, and `std_sound`/`pro_sound` where sound costs more), in
the provider's currency; a kind a dialect can build but nobody has priced is not routed there,
because "cheapest" cannot be decided on a guess. Every base
URL is configuration, so the sandbox (or a user) can point any dialect at any HTTP server.
A fifth dialect is one module in this package and one entry in ADAPTERS (plus its DEFAULTS).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from klingflow.core.clock import Clock
from klingflow.core.errors import FieldError, NoProviderAvailable, RequestRejected
from klingflow.core.states import JobStatus
from klingflow.core.vocab import Billing, JobKind, PriceTier

from .base import Adapter, ProviderClient, TaskReport

if TYPE_CHECKING:
    import httpx

    from klingflow.core.kinds import AnyRequest
    from klingflow.core.models import Job


class _Dialects(Mapping[str, type[Adapter]]):
    """Dialect -> adapter class, each dialect's module imported the first time it is asked for:
    a function that only parses the callbacks of one provider loads that provider's dialect,
    not all four (nor what they import)."""

    def __init__(self, classes: Mapping[str, str]) -> None:
        self._classes = dict(classes)  # dialect -> "module.Class", relative to this package

    def __getitem__(self, dialect: str) -> type[Adapter]:
        module, _, name = self._classes[dialect].rpartition(".")
        adapter: type[Adapter] = getattr(importlib.import_module(module, __package__), name)
        return adapter

    def __contains__(self, dialect: object) -> bool:
        return dialect in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)


ADAPTERS = _Dialects(
    {
        "apimaster": ".apimaster.ApimasterAdapter",
        "evolink": ".evolink.EvolinkAdapter",
        "gateway": ".gateway.GatewayAdapter",
        "kling": ".kling.KlingAdapter",
    }
)


# Evolink's Kling 3.0 price factors (seed 002): 720p 1.0x, 720p+sound 1.5x, 1080p 1.333x,
# 1080p+sound 2.0x.
def _factored(base: float) -> dict[str, float]:
    return {
        "std": base,
        "std_sound": round(base * 1.5, 5),
        "pro": round(base * 1.333, 5),
        "pro_sound": round(base * 2.0, 5),
    }


# Evolink charges credits, at $0.0139 a credit (seeds 000/001: "$0.0139 / request (1 Credits)");
# its pages quote dollars rounded from them ("$0.075/second (5.4 Credits)"). Its prices here are
# its credits at that price, unrounded, so an estimate is exactly what the credits it reports
# settle to (a rounded dollar figure under-reserved: $0.567 for a clip charged $0.56712).
EVOLINK_CREDIT_USD = 0.0139
# Credits per second: Kling 3.0 5.4 at 720p (evolink's Kling 3.0 page), times the factors
# above (8.1, 7.1982, 10.8 there); motion control 8.16, the "$0.1134/s" of seeds 000/001 in
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


DEFAULTS: dict[str, dict[str, Any]] = {
    "apimaster": {  # seed 004
        "dialect": "apimaster",
        "base_url": "https://apimaster.ai/v1",
        "currency": "USD",
        "price_per_second": {"motion_control": {"std": 0.10288, "pro": 0.13712}},
        "download_hosts": ["*.apimaster.ai"],
    },
    "evolink": {  # seeds 000-002
        "dialect": "evolink",
        "base_url": "https://api.evolink.ai/v1",
        "currency": "USD",
        "price_per_second": _evolink_prices(),
        # One credit per element (seeds 000-002).
        "flat_prices": {"custom_element": EVOLINK_CREDIT_USD},
        "unit_price": EVOLINK_CREDIT_USD,
        "download_hosts": ["*.evolink.ai"],
    },
    "gateway": {  # seed 003: paths but no host, so a deployment sets base_url to enable it
        "dialect": "gateway",
        "base_url": "",
        "currency": "CNY",
        # Seed 003 prices motion control only; its other kinds need prices from the deployment.
        "price_per_second": {"motion_control": {"std": 0.5, "pro": 0.8}},
    },
    "kling": {  # Kling's own API (PROVIDERS.md section 4), which gives no prices
        "dialect": "kling",
        "base_url": "https://api-singapore.klingai.com",
        "currency": "USD",
        "price_per_second": {
            # (?) Seed 002 quotes the official Kling 3.0 API at $0.084/s; the other tiers use
            # evolink's factors. Omni has no published price here: set one to route omni to Kling.
            "motion_control": {"std": 0.084, "pro": 0.11197},
            "text_to_video": _factored(0.084),
            "image_to_video": _factored(0.084),
        },
        "credential_fields": ("access_key", "secret_key"),
        # (?) What one unit of a resource pack costs varies by pack; $0.14 makes 0.6 units per
        # second of std motion control the $0.084/s above. Set it to your pack's price.
        "unit_price": 0.14,
        "download_hosts": ["*.klingai.com"],
    },
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
        usd_per_cny: float = 0.14,
        timeout_s: float = 20.0,
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

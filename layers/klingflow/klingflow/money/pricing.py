"""Cost estimates: what a job will cost before any money is spent, and what it cost after.

Each kind says how it is billed (`AnyRequest.billing`): motion control per second of the
reference video, rounded up; generated clips per second asked for, at a tier set by quality and
sound; omni edits per second of the video being edited; elements a flat price per request. When
a needed duration is unknown (an https input we could not probe) the estimate is the most the
rules allow, the same worst case the providers pre-charge.

Once a provider takes a task, the reservation follows the provider's own figure where its
answer names one and it is higher (evolink's `usage.credits_reserved`).

When a job ends, what it cost is the provider's own figure where its answer carries one (Kling's
`final_unit_deduction` in units, gateway's `usage.seconds`, evolink's credits), else the same
rule applied to what was measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from klingflow.core.models import BilledSource, Job, MediaFacts
from klingflow.core.vocab import Billing, billable_seconds
from klingflow.providers.base import Submission, TaskReport, UsageUnit
from klingflow.providers.registry import Registry

from .settlement import Charge

if TYPE_CHECKING:
    from klingflow.core.kinds import AnyRequest

# A reported clip length within this of a whole second is that second (5.04 s is a 5 s clip
# with one frame over), not a second more.
FRAME_TOLERANCE_S = 0.1


@dataclass(frozen=True)
class Estimate:
    provider: str
    seconds: int
    usd: float
    upper_bound: bool


def billing_of(request: AnyRequest, inputs: Mapping[str, MediaFacts]) -> Billing:
    return request.billing({name: facts.duration_s for name, facts in inputs.items()})


def estimate(
    registry: Registry, provider: str, request: AnyRequest, inputs: Mapping[str, MediaFacts]
) -> Estimate:
    billing = billing_of(request, inputs)
    return Estimate(
        provider, billing.seconds, registry.price_usd(provider, request.kind, billing), billing.upper_bound
    )


def provider_reserved_usd(registry: Registry, provider: str, submission: Submission) -> float | None:
    """What a provider set aside for a task it took (evolink's `usage.credits_reserved`), in USD
    as `charged` would price it; None where its answer names no such figure or it cannot be
    priced (no `unit_price`)."""
    held = submission.reserved
    unit_price = registry.configs[provider].unit_price
    if held is None or held.unit is not UsageUnit.UNITS or unit_price is None:
        return None
    return registry.in_usd(provider, round(held.amount * unit_price, 5))


def charged(registry: Registry, job: Job, report: TaskReport | None) -> Charge:
    """What the provider charged for a finished job, in USD and in its own currency."""
    provider = job.provider
    assert provider is not None
    config = registry.configs[provider]
    billing = billing_of(job.parsed_request, job.inputs)
    usage = report.usage if report is not None else None
    if usage is not None and usage.unit is UsageUnit.UNITS and config.unit_price is not None:
        amount = round(usage.amount * config.unit_price, 5)
        return Charge(
            usd=registry.in_usd(provider, amount),
            source=BilledSource.PROVIDER,
            provider_amount=amount,
            currency=config.currency,
            seconds=None if billing.flat else billing.seconds,
        )
    if usage is not None and usage.unit is UsageUnit.SECONDS and not billing.flat:
        seconds = billable_seconds(usage.amount - FRAME_TOLERANCE_S) or 1
        return _by_rule(registry, provider, job, Billing(billing.tier, seconds), BilledSource.PROVIDER)
    # No figure from the provider: the documented rule, on what the job measured (an unmeasured
    # input is billed the most its rule allows, the amount that was reserved for it).
    return _by_rule(registry, provider, job, billing, BilledSource.RULE)


def _by_rule(registry: Registry, provider: str, job: Job, billing: Billing, source: BilledSource) -> Charge:
    return Charge(
        usd=registry.price_usd(provider, job.kind, billing),
        source=source,
        provider_amount=registry.price(provider, job.kind, billing),
        currency=registry.configs[provider].currency,
        seconds=None if billing.flat else billing.seconds,
    )

"""Cost estimates: what a job will cost before any money is spent.

Each kind says how it is billed (`AnyRequest.billing`): motion control per second of the
reference video, rounded up; generated clips per second asked for, at a tier set by quality and
sound; omni edits per second of the video being edited; elements a flat price per request. When
a needed duration is unknown (an https input we could not probe) the estimate is the most the
rules allow, the same worst case the providers pre-charge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .kinds import AnyRequest, Billing
from .models import MediaFacts
from .providers.registry import Registry


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

"""Cost estimates: what a job will cost before any money is spent.

Motion control bills whole seconds of the reference video, rounded up, in the provider's
currency. When the duration is unknown (an https input we could not probe) the estimate is the
most the orientation allows, the same worst case the providers pre-charge.
"""

from __future__ import annotations

from dataclasses import dataclass

from .models import Mode, Orientation
from .providers.base import billable_seconds
from .providers.registry import Registry

MAX_VIDEO_SECONDS = {Orientation.IMAGE: 10, Orientation.VIDEO: 30}


@dataclass(frozen=True)
class Estimate:
    provider: str
    seconds: int
    usd: float
    upper_bound: bool


def motion_control_seconds(duration_s: float | None, orientation: Orientation) -> tuple[int, bool]:
    seconds = billable_seconds(duration_s)
    if seconds is None:
        return MAX_VIDEO_SECONDS[orientation], True
    return seconds, False


def estimate(
    registry: Registry, provider: str, *, mode: Mode, duration_s: float | None, orientation: Orientation
) -> Estimate:
    seconds, upper = motion_control_seconds(duration_s, orientation)
    return Estimate(provider, seconds, registry.price_usd(provider, mode, seconds), upper)

"""What becomes of a job's reservation when the job ends (or its outcome becomes known).

- `Settle`: the provider charged; the reservation is replaced by the charge (a charge beyond
  the reservation is settled all the same, and recorded as the day's overrun).
- `Release`: nothing was charged (never sent, the task failed or was cancelled: "full refund on
  failure" in the providers' documentation); the reservation is given back to the day.
- `Keep`: the provider may have charged and we cannot tell; the reservation stays and the job
  says `possibly_billed`.

Each applies to a job only while its reservation is still `reserved`, so an outcome recorded
twice (a retried archive, a duplicated callback) moves money once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from decimal import Decimal

from klingflow.core.models import BilledSource, Cost, Job, SpendState

from .ledger import SpendChange, usd


@dataclass(frozen=True)
class Charge:
    """What a provider charged for one job: in USD, and in its own currency and unit."""

    usd: float
    source: BilledSource
    provider_amount: float | None = None
    currency: str | None = None
    seconds: int | None = None


class Money(ABC):
    state: SpendState

    def apply(self, job: Job) -> tuple[Cost, SpendChange | None]:
        """The job's cost after this outcome, and how the day's counters move (None: they don't)."""
        reservation = job.reservation
        if reservation is None or reservation.state is not SpendState.RESERVED:
            return self.cost(job.cost, reserved=False), None
        return self.cost(job.cost, reserved=True), self.change(job)

    @abstractmethod
    def cost(self, cost: Cost, *, reserved: bool) -> Cost: ...

    @abstractmethod
    def change(self, job: Job) -> SpendChange | None: ...


@dataclass(frozen=True)
class Settle(Money):
    charge: Charge
    state = SpendState.SETTLED

    def cost(self, cost: Cost, *, reserved: bool) -> Cost:
        return cost.model_copy(
            update={
                "billed_usd": self.charge.usd,
                "billed_source": self.charge.source,
                "provider_amount": self.charge.provider_amount,
                "currency": self.charge.currency or cost.currency,
                "billed_seconds": self.charge.seconds,
                "possibly_billed": False,
            }
        )

    def change(self, job: Job) -> SpendChange:
        reservation = job.reservation
        assert reservation is not None
        charged_by = job.provider or reservation.provider
        # The charge is settled as charged, whatever was reserved: the excess is recorded.
        return SpendChange(
            reservation.day,
            job.kind,
            reserved={reservation.provider: -usd(reservation.usd)},
            settled={charged_by: usd(self.charge.usd)},
            overrun=max(Decimal(0), usd(self.charge.usd) - usd(reservation.usd)),
        )


@dataclass(frozen=True)
class Release(Money):
    state = SpendState.RELEASED

    def cost(self, cost: Cost, *, reserved: bool) -> Cost:
        if not reserved:
            return cost.model_copy(update={"possibly_billed": False})
        return cost.model_copy(
            update={"billed_usd": 0.0, "billed_source": BilledSource.RULE, "possibly_billed": False}
        )

    def change(self, job: Job) -> SpendChange:
        reservation = job.reservation
        assert reservation is not None
        return SpendChange(reservation.day, job.kind, reserved={reservation.provider: -usd(reservation.usd)})


@dataclass(frozen=True)
class Keep(Money):
    state = SpendState.RESERVED

    def cost(self, cost: Cost, *, reserved: bool) -> Cost:
        return cost.model_copy(update={"possibly_billed": reserved})

    def change(self, job: Job) -> SpendChange | None:
        return None

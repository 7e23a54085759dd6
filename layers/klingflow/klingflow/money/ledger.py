"""The daily budget: what klingflow may spend per UTC day, and what it has spent.

One item per day, `SPEND#<YYYY-MM-DD>`, in the jobs table:
- `reserved_usd`: estimates of jobs that may still be charged (claimed, at a provider, or with
  an outcome we never learned);
- `settled_usd`: what providers charged for jobs that ended;
- `committed_usd`: the two together. DynamoDB conditions compare but cannot add, so the sum is
  kept as its own attribute and every reservation is one condition on it;
- the same two figures per provider and per kind (`reserved_usd@provider:gateway`, ...);
- `overrun_usd` and `overruns`: what providers charged beyond the reservation of the job they
  charged for, and how many times. A settlement is never refused (the charge happened), so this
  is the one way `committed_usd` can pass the budget; until it is back under, no reservation fits.

The item is only ever changed in a transaction with the job it concerns (see `JobStore`), so a
job's reservation and the day's counters cannot disagree: a reservation that does not fit is
refused with the job left as it was, a job that ends moves its reservation exactly once. A
job's money stays on the day it was reserved, even when it settles after midnight.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.metrics import MetricUnit, single_metric

from klingflow.core.clock import Clock, epoch
from klingflow.core.errors import BudgetExceeded
from klingflow.core.vocab import JobKind

if TYPE_CHECKING:
    from klingflow.infra.dynamo import Table

logger = Logger(child=True)
SPEND_PREFIX = "SPEND#"
# How long finished jobs, idempotency keys and spend days are kept (their items' TTL).
RETENTION_DAYS = 90
# Money is kept to the micro-dollar: exact decimal sums, never float drift.
_MICRO = Decimal("0.000001")
RESERVED, SETTLED, COMMITTED = "reserved_usd", "settled_usd", "committed_usd"
OVERRUN, OVERRUNS = "overrun_usd", "overruns"


def usd(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(_MICRO)


def day_of(moment: datetime) -> str:
    return moment.date().isoformat()


@dataclass(frozen=True)
class Budget:
    daily_usd: float
    max_job_usd: float


@dataclass(frozen=True)
class SpendChange:
    """How one write moves a day's counters: signed deltas per provider, for one kind."""

    day: str
    kind: JobKind
    reserved: Mapping[str, Decimal] = field(default_factory=dict)  # provider -> delta
    settled: Mapping[str, Decimal] = field(default_factory=dict)
    # A charge beyond the job's reservation: recorded and counted, never refused.
    overrun: Decimal = Decimal(0)

    @property
    def reserved_total(self) -> Decimal:
        return sum(self.reserved.values(), Decimal(0))

    @property
    def settled_total(self) -> Decimal:
        return sum(self.settled.values(), Decimal(0))

    @property
    def committed(self) -> Decimal:
        return self.reserved_total + self.settled_total


class SpendMetrics:
    """`SpendUsd` per provider and kind as charges settle, and `BudgetUsedPercent` (alarmed at
    80) as the day's committed total moves."""

    def __init__(self, *, namespace: str | None, enabled: bool = True) -> None:
        self._namespace = namespace
        self._enabled = enabled and bool(namespace)

    def settled(self, provider: str, kind: JobKind, amount: Decimal) -> None:
        self._emit("SpendUsd", MetricUnit.NoUnit, float(amount), {"provider": provider, "kind": kind.value})

    def used(self, percent: float) -> None:
        self._emit("BudgetUsedPercent", MetricUnit.Percent, percent, {"service": "klingflow"})

    def overrun(self, amount: Decimal) -> None:
        """`SpendOverrun` (alarmed): a provider charged more than the job's reservation."""
        self._emit("SpendOverrun", MetricUnit.NoUnit, float(amount), {"service": "klingflow"})

    def _emit(self, name: str, unit: MetricUnit, value: float, dimensions: dict[str, str]) -> None:
        if not self._enabled:
            return
        with single_metric(
            name=name, unit=unit, value=value, namespace=self._namespace, default_dimensions=dimensions
        ):
            pass


class Ledger:
    """Builds the spend item's side of each money transaction, and reads a day's spend."""

    def __init__(
        self,
        table: Table,
        clock: Clock,
        budget: Budget,
        *,
        retention_days: int = RETENTION_DAYS,
        metrics: SpendMetrics | None = None,
    ) -> None:
        self._table = table
        self._clock = clock
        self.budget = budget
        self._retention = timedelta(days=retention_days)
        self._metrics = metrics or SpendMetrics(namespace=None)

    @staticmethod
    def key(day: str) -> dict[str, str]:
        return {"pk": f"{SPEND_PREFIX}{day}"}

    def today(self) -> str:
        return day_of(self._clock.now())

    # ---- checks before anything is written -------------------------------------------------

    def check_job(self, estimate_usd: float) -> None:
        """A job dearer than MaxJobCostUsd is refused whatever the day's budget."""
        if usd(estimate_usd) > usd(self.budget.max_job_usd):
            raise BudgetExceeded(
                f"the job's estimate ${estimate_usd} is more than MaxJobCostUsd ${self.budget.max_job_usd}",
                budget_usd=self.budget.daily_usd,
                remaining_usd=self.remaining(self.today()),
                estimate_usd=estimate_usd,
                max_job_usd=self.budget.max_job_usd,
            )

    def check_fits(self, estimate_usd: float, day: str | None = None) -> None:
        """Refuse at once when today's remaining budget cannot hold the estimate (the reservation
        at sending is the atomic check; this one spares the caller a job that would fail)."""
        day = day or self.today()
        remaining = self.remaining(day)
        if usd(estimate_usd) > usd(remaining):
            raise self.exceeded(estimate_usd, remaining, day)

    def exceeded(self, estimate_usd: float, remaining_usd: float, day: str) -> BudgetExceeded:
        message = (
            f"the job's estimate ${estimate_usd} does not fit the ${remaining_usd} left of "
            f"DailyBudgetUsd ${self.budget.daily_usd} for {day} (UTC)"
        )
        if remaining_usd <= 0:
            message += self._over(day)
        return BudgetExceeded(
            message,
            budget_usd=self.budget.daily_usd,
            remaining_usd=remaining_usd,
            estimate_usd=estimate_usd,
            max_job_usd=self.budget.max_job_usd,
        )

    def _over(self, day: str) -> str:
        """Why nothing is left, when providers charged past their reservations."""
        try:
            report = self.report(day)
        except Exception:  # the refusal stands without its explanation
            return ""
        if not report["over_budget_usd"]:
            return ""
        return (
            f": providers charged ${report[OVERRUN]} more than was reserved ({report[OVERRUNS]} "
            f"overrun(s)), so {day} stands ${report['over_budget_usd']} over the budget and no job is "
            "sent until it is back under (GET /spend shows it)"
        )

    # ---- the spend item's side of a transaction ---------------------------------------------

    def update(self, change: SpendChange, *, must_fit: bool) -> dict[str, Any]:
        """A TransactWriteItems `Update` on the day's item; with `must_fit`, conditional on the
        day's committed total staying within the budget."""
        names: dict[str, str] = {}
        values: dict[str, Any] = {
            ":budget": usd(self.budget.daily_usd),
            ":expires": epoch(self._clock.now() + self._retention) + 86400,
        }
        adds = []
        deltas: dict[str, Decimal] = {RESERVED: change.reserved_total, SETTLED: change.settled_total}
        deltas[COMMITTED] = change.committed
        for provider, amount in change.reserved.items():
            deltas[f"{RESERVED}@provider:{provider}"] = amount
        for provider, amount in change.settled.items():
            deltas[f"{SETTLED}@provider:{provider}"] = amount
        deltas[f"{RESERVED}@kind:{change.kind.value}"] = change.reserved_total
        deltas[f"{SETTLED}@kind:{change.kind.value}"] = change.settled_total
        if change.overrun > 0:
            deltas[OVERRUN] = change.overrun
            deltas[OVERRUNS] = Decimal(1)
        for i, (name, amount) in enumerate(deltas.items()):
            names[f"#d{i}"] = name
            values[f":d{i}"] = amount
            adds.append(f"#d{i} :d{i}")
        update: dict[str, Any] = {
            "TableName": self._table.name,
            "Key": self.key(change.day),
            "UpdateExpression": "SET budget_usd = :budget, expires_at = if_not_exists(expires_at, :expires) "
            "ADD " + ", ".join(adds),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }
        if must_fit:
            limit = usd(self.budget.daily_usd) - change.committed
            # A day's first move has no item yet: it must fit the whole budget by itself.
            update["ConditionExpression"] = (
                f"(attribute_not_exists({COMMITTED}) AND :none <= :limit) OR {COMMITTED} <= :limit"
            )
            values[":limit"] = limit
            values[":none"] = Decimal(0)
        return {"Update": update}

    def under_budget(self, day: str) -> dict[str, Any]:
        """A TransactWriteItems `ConditionCheck` that the day does not stand over its budget (an
        overrun put it there): a claim that reserves nothing new is still no claim while it does."""
        return {
            "ConditionCheck": {
                "TableName": self._table.name,
                "Key": self.key(day),
                "ConditionExpression": f"attribute_not_exists({COMMITTED}) OR {COMMITTED} <= :budget",
                "ExpressionAttributeValues": {":budget": usd(self.budget.daily_usd)},
            }
        }

    def written(self, change: SpendChange) -> None:
        """After a transaction: what the metrics should know."""
        for provider, amount in change.settled.items():
            if amount:
                self._metrics.settled(provider, change.kind, amount)
        if change.overrun > 0:
            logger.warning(
                "a provider charged more than the job's reservation",
                extra={
                    "day": change.day,
                    "overrun_usd": float(change.overrun),
                    "providers": list(change.settled),
                },
            )
            self._metrics.overrun(change.overrun)
        try:
            report = self.report(change.day)
        except Exception:  # a metric must never fail a money write that already happened
            return
        if report["budget_usd"]:
            self._metrics.used(round(100 * report["committed_usd"] / report["budget_usd"], 2))

    # ---- reading ------------------------------------------------------------------------------

    def remaining(self, day: str) -> float:
        return float(self.report(day)["remaining_usd"])

    def report(self, day: str) -> dict[str, Any]:
        """A day's budget, reserved, settled and remaining, by provider and by kind."""
        item = self._table.get_item(Key=self.key(day), ConsistentRead=True).get("Item") or {}
        recorded = Decimal(str(item.get("budget_usd", 0)))
        budget = usd(self.budget.daily_usd) if day == self.today() else recorded
        committed = Decimal(str(item.get(COMMITTED, 0)))
        groups: dict[str, dict[str, dict[str, float]]] = {"provider": {}, "kind": {}}
        for name, value in item.items():
            figure, _, group = str(name).partition("@")
            dimension, _, member = group.partition(":")
            if dimension in groups and member:
                entry = groups[dimension].setdefault(member, {RESERVED: 0.0, SETTLED: 0.0})
                entry[figure] = float(Decimal(str(value)))
        return {
            "day": day,
            "budget_usd": float(budget),
            "max_job_cost_usd": self.budget.max_job_usd,
            RESERVED: float(Decimal(str(item.get(RESERVED, 0)))),
            SETTLED: float(Decimal(str(item.get(SETTLED, 0)))),
            COMMITTED: float(committed),
            "remaining_usd": float(max(Decimal(0), budget - committed)),
            # Providers that charged beyond a reservation: the day may stand over its budget,
            # and then no job is claimed for sending until releases bring it back under.
            OVERRUN: float(Decimal(str(item.get(OVERRUN, 0)))),
            OVERRUNS: int(item.get(OVERRUNS, 0)),
            "over_budget_usd": float(max(Decimal(0), committed - budget)),
            "by_provider": _nonzero(groups["provider"]),
            "by_kind": _nonzero(groups["kind"]),
        }


def _nonzero(groups: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {name: figures for name, figures in sorted(groups.items()) if any(figures.values())}

"""sweeper: every minute, poll the jobs that are due and enforce deadlines."""

from __future__ import annotations

import klingflow.infra.coldstart  # noqa: F401 (first: the collector waits while the function loads)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from klingflow import runtime, services
from klingflow.core.outcomes import SweepOutcome
from klingflow.flows.sweep import Sweeper
from klingflow.infra.outcomemetrics import OutcomeMetrics
from klingflow.settings import SweeperSettings

settings = SweeperSettings.from_env()
service: runtime.Lazy[Sweeper] = runtime.Lazy(lambda: services.build_sweeper(settings))
logger = Logger()
metrics = Metrics()
# What it did with each piece of work: the Outcomes metric, by function and outcome.
counted = OutcomeMetrics(
    "sweeper",
    namespace=settings.powertools_metrics_namespace,
    enabled=not settings.powertools_metrics_disabled,
)


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcomes = service.get().sweep(time_left_s=lambda: context.get_remaining_time_in_millis() / 1000)
    # A tick that found another sweep holding the lease visited nothing (it counts SweepOverlapped).
    visited = sum(count for outcome, count in outcomes.items() if outcome is not SweepOutcome.OVERLAPPED)
    metrics.add_metric(name="JobsDue", unit=MetricUnit.Count, value=visited)
    for outcome, count in outcomes.items():
        counted.count(outcome, count)
    return {"outcomes": {outcome.name.lower(): count for outcome, count in outcomes.items()}}

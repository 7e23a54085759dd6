"""sweeper: every minute, poll the jobs that are due and enforce deadlines."""

from __future__ import annotations

import klingflow.infra.coldstart  # noqa: F401 (first: the collector waits while the function loads)

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from klingflow import runtime, services
from klingflow.flows.sweep import Sweeper
from klingflow.settings import SweeperSettings

settings = SweeperSettings.from_env()
service: runtime.Lazy[Sweeper] = runtime.Lazy(lambda: services.build_sweeper(settings))
logger = Logger()
metrics = Metrics()


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    outcomes = service.get().sweep(time_left_s=lambda: context.get_remaining_time_in_millis() / 1000)
    metrics.add_metric(name="JobsDue", unit=MetricUnit.Count, value=sum(outcomes.values()))
    for outcome, count in outcomes.items():
        metrics.add_metric(name=outcome.value, unit=MetricUnit.Count, value=count)
    return {"outcomes": {outcome.name.lower(): count for outcome, count in outcomes.items()}}

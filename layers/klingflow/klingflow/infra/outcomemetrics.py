"""What each function did with a piece of work, counted as one metric: `Outcomes`, with the
function and the outcome as dimensions (the outcome an enum value of `core/outcomes.py`, or a
handler's own word such as `JobsAccepted`). A dashboard or an alarm selects an outcome by its
dimensions instead of knowing some fifty metric names.

Powertools' `single_metric` gives each count its own dimensions (a flushed `Metrics` shares one
set); it is loaded with the `MetricUnit` every handler imports, so counting costs no cold start.
Off when no namespace is configured or metrics are disabled.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit, single_metric

METRIC = "Outcomes"


class OutcomeMetrics:
    def __init__(self, function: str, *, namespace: str | None, enabled: bool = True) -> None:
        self._function = function
        self._namespace = namespace
        self._enabled = enabled and bool(namespace)

    def count(self, outcome: str, value: int = 1) -> None:
        if not self._enabled:
            return
        with single_metric(
            name=METRIC,
            unit=MetricUnit.Count,
            value=value,
            namespace=self._namespace,
            default_dimensions={"function": self._function, "outcome": str(outcome)},
        ):
            pass

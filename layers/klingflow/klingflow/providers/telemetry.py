"""Per-provider metrics: calls by outcome and latency, with the provider as a dimension; the
breakers that open (`BreakersOpened`, per provider and in all, which an alarm watches).

Powertools' `single_metric` gives each datapoint its own dimensions (the function-wide Metrics
object shares one set per flush). Off when no namespace is configured or metrics are disabled.
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit, single_metric


class ProviderMetrics:
    def __init__(self, *, namespace: str | None, enabled: bool = True) -> None:
        self._namespace = namespace
        self._enabled = enabled and bool(namespace)

    def call(self, provider: str, outcome: str, latency_ms: int | None) -> None:
        if not self._enabled:
            return
        dimensions = {"provider": provider, "outcome": outcome}
        with single_metric(
            name="ProviderCalls",
            unit=MetricUnit.Count,
            value=1,
            namespace=self._namespace,
            default_dimensions=dimensions,
        ):
            pass
        if latency_ms is not None:
            with single_metric(
                name="ProviderLatency",
                unit=MetricUnit.Milliseconds,
                value=latency_ms,
                namespace=self._namespace,
                default_dimensions={"provider": provider},
            ):
                pass

    def breaker_opened(self, provider: str) -> None:
        """A provider's breaker opened, or opened again after a failed probe: once per provider
        (the dashboard), once with only the service dimension (the alarm's: an alarm names its
        dimensions, and a new provider must not need a new alarm)."""
        if not self._enabled:
            return
        for dimensions in ({"provider": provider}, {"service": "klingflow"}):
            with single_metric(
                name="BreakersOpened",
                unit=MetricUnit.Count,
                value=1,
                namespace=self._namespace,
                default_dimensions=dimensions,
            ):
                pass

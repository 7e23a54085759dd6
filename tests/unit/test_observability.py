"""What an operator watches (template.yaml's alarms and dashboard) is what the code emits: each
alarm and each dashboard search on a klingflow metric names a metric and the exact dimensions
some code publishes (a search or an alarm on dimensions nobody publishes stays empty, silently),
and the issues an operator must hear about each have an alarm."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

from klingflow.core.outcomes import (
    ArchiveOutcome,
    CallbackOutcome,
    SubmitOutcome,
    SweepOutcome,
    WebhookOutcome,
)
from klingflow.core.vocab import JobKind
from klingflow.infra.outcomemetrics import OutcomeMetrics
from klingflow.money.ledger import SpendMetrics
from klingflow.providers.telemetry import ProviderMetrics
from klingflow_dev.sandbox import template
from tests.conftest import REPO

DOCUMENT = template.load(REPO / "template.yaml")
RESOURCES: dict[str, Any] = DOCUMENT["Resources"]
# Published by a handler's Powertools Metrics (default dimension service): the sweeper's JobsDue.
BY_HANDLERS = {("JobsDue", frozenset({"service"}))}


@pytest.fixture
def published(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every klingflow metric the layer publishes, as (name, dimension names) -> dimension values,
    from the EMF documents its publishers print when each is made to publish once."""
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "klingflow")
    outcomes = OutcomeMetrics("archive", namespace="klingflow")
    outcomes.count(ArchiveOutcome.OUTPUT_INVALID)
    OutcomeMetrics("webhook", namespace="klingflow").count(WebhookOutcome.UNBACKED)
    OutcomeMetrics("sweeper", namespace="klingflow").count(SweepOutcome.TIMED_OUT, 3)
    providers = ProviderMetrics(namespace="klingflow")
    providers.call("kling", "ok", 1200)
    providers.breaker_opened("kling")
    spend = SpendMetrics(namespace="klingflow")
    spend.settled("kling", JobKind.MOTION_CONTROL, Decimal("1.5"))
    spend.used(30.0)
    spend.overrun(Decimal("0.4"))
    found: dict[Any, list[dict[str, str]]] = {}
    for line in capsys.readouterr().out.splitlines():
        document = json.loads(line)
        [directive] = document["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "klingflow"
        [dimensions] = directive["Dimensions"]
        for metric in directive["Metrics"]:
            key = (metric["Name"], frozenset(dimensions))
            found.setdefault(key, []).append({name: document[name] for name in dimensions})
    return found


def test_the_outcomes_of_every_function_are_one_metric_with_the_outcome_as_a_dimension(
    published: dict[Any, list[dict[str, str]]],
) -> None:
    counted = published[("Outcomes", frozenset({"function", "outcome", "service"}))]
    assert counted == [
        {"function": "archive", "outcome": "OutputsInvalid", "service": "klingflow"},
        {"function": "webhook", "outcome": "WebhooksUnbacked", "service": "klingflow"},
        {"function": "sweeper", "outcome": "SweepTimedOut", "service": "klingflow"},
    ]


def test_outcomes_are_not_published_when_metrics_are_off(capsys: pytest.CaptureFixture[str]) -> None:
    OutcomeMetrics("archive", namespace="klingflow", enabled=False).count(ArchiveOutcome.ARCHIVED)
    OutcomeMetrics("archive", namespace=None).count(ArchiveOutcome.ARCHIVED)
    assert capsys.readouterr().out == ""


def _alarms() -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in RESOURCES.items() if v["Type"] == "AWS::CloudWatch::Alarm"}


def test_every_alarm_on_a_klingflow_metric_watches_dimensions_the_code_publishes(
    published: dict[Any, list[dict[str, str]]],
) -> None:
    watched = {name: alarm for name, alarm in _alarms().items() if alarm.get("Namespace") == "klingflow"}
    assert {"OutputsInvalidAlarm", "WebhooksUnbackedAlarm", "BreakerOpenAlarm", "BudgetAlarm"} <= set(watched)
    for name, alarm in watched.items():
        if alarm["MetricName"] == "EventsDelayed":
            continue  # a handler's Metrics (service), from infra/events.py
        wanted = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        emitted = published.get((alarm["MetricName"], frozenset(wanted)), [])
        assert wanted in emitted, f"{name}: nothing publishes {alarm['MetricName']} with {wanted}"


def test_the_operators_questions_each_have_an_alarm() -> None:
    alarms = _alarms()

    def watching(namespace: str, metric: str) -> list[dict[str, Any]]:
        found = [
            a for a in alarms.values() if (a.get("Namespace"), a.get("MetricName")) == (namespace, metric)
        ]
        for alarm in alarms.values():
            for query in alarm.get("Metrics", []):
                stat = query.get("MetricStat", {}).get("Metric", {})
                if (stat.get("Namespace"), stat.get("MetricName")) == (namespace, metric):
                    found.append(alarm)
        return found

    # DynamoDB throttling and transaction conflicts on the jobs table
    assert watching("AWS/DynamoDB", "ReadThrottleEvents") and watching("AWS/DynamoDB", "WriteThrottleEvents")
    assert watching("AWS/DynamoDB", "TransactionConflict")
    # Lambda throttling, for every function
    functions = {k for k, v in RESOURCES.items() if v["Type"] == "AWS::Serverless::Function"}
    throttled = {a["Dimensions"][0]["Value"]["Ref"] for a in watching("AWS/Lambda", "Throttles")}
    assert throttled == functions
    # A sweeper that has not run for five minutes: no data at all is the alarm, not its absence
    [stopped] = watching("AWS/Lambda", "Invocations")
    assert stopped["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "SweeperFunction"}}]
    assert stopped["Period"] * stopped["EvaluationPeriods"] == 300 and stopped["DatapointsToAlarm"] == 5
    assert (stopped["ComparisonOperator"], stopped["Threshold"]) == ("LessThanThreshold", 1)
    assert stopped["TreatMissingData"] == "breaching"
    # The webhook queue's age, and an open breaker
    ages = watching("AWS/SQS", "ApproximateAgeOfOldestMessage")
    assert {"WebhookQueue"} <= {a["Dimensions"][0]["Value"]["Fn::GetAtt"][0] for a in ages}
    assert watching("klingflow", "BreakersOpened")
    # and every alarm tells the alarm topic
    assert all(a["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())


def _dashboard() -> dict[str, Any]:
    body = RESOURCES["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", body))
    # every ${...} is a pseudo parameter or something the template declares
    for name in names:
        logical = name.split(".")[0]
        assert name.startswith("AWS::") or logical in RESOURCES, f"the dashboard names {name}"
    # each ${Name} read as the name it stands for
    document: dict[str, Any] = json.loads(re.sub(r"\$\{([^}]+)\}", r"\1", body))
    return document


def test_the_dashboard_searches_for_metrics_with_the_dimensions_they_are_published_with(
    published: dict[Any, list[dict[str, str]]],
) -> None:
    widgets = _dashboard()["widgets"]
    searched = set()
    for widget in widgets:
        for metric in widget["properties"]["metrics"]:
            if isinstance(metric[0], dict):
                # SEARCH('{namespace,dimension,...} MetricName="Name" ...', ...)
                found = re.search(
                    r"SEARCH\('\{klingflow,([^}]*)\} MetricName=\"(\w+)\"", metric[0]["expression"]
                )
                assert found, metric
                searched.add((found.group(2), frozenset(found.group(1).split(","))))
            elif metric[0] == "klingflow":
                searched.add((metric[1], frozenset(metric[2:-1:2])))
    assert searched <= set(published) | BY_HANDLERS, searched - set(published)
    assert {name for name, _ in searched} >= {
        "Outcomes",
        "BudgetUsedPercent",
        "SpendUsd",
        "ProviderLatency",
        "ProviderCalls",
        "BreakersOpened",
    }


def test_the_dashboard_shows_queues_dead_letters_errors_and_throttles() -> None:
    shown = {
        (metric[0], metric[1])
        for widget in _dashboard()["widgets"]
        for metric in widget["properties"]["metrics"]
        if isinstance(metric[0], str)
    }
    assert {
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/DynamoDB", "WriteThrottleEvents"),
        ("AWS/DynamoDB", "TransactionConflict"),
    } <= shown
    dead_letters = {
        metric[3].split(".")[0]
        for widget in _dashboard()["widgets"]
        for metric in widget["properties"]["metrics"]
        if metric[:2] == ["AWS/SQS", "ApproximateNumberOfMessagesVisible"]
    }
    queues = {k for k, v in RESOURCES.items() if v["Type"] == "AWS::SQS::Queue" and k.endswith("DLQ")}
    assert dead_letters == queues and len(queues) == 4


def test_the_dashboard_is_an_output_and_has_no_fixed_name() -> None:
    assert "DashboardName" not in RESOURCES["Dashboard"]["Properties"]
    assert DOCUMENT["Outputs"]["DashboardName"]["Value"] == {"Ref": "Dashboard"}
    assert "${Dashboard}" in DOCUMENT["Outputs"]["DashboardUrl"]["Value"]["Fn::Sub"]


def test_the_outcomes_the_dashboard_selects_are_ones_a_function_counts() -> None:
    counted = {
        o.value
        for kind in (ArchiveOutcome, CallbackOutcome, SubmitOutcome, SweepOutcome, WebhookOutcome)
        for o in kind
    }
    # and the handlers' own words (submit's JobsAccepted, ...), each a literal in a count
    for handler in (REPO / "functions").glob("*/app.py"):
        for call in re.findall(r"counted\.count\(([^)]*)\)", handler.read_text()):
            counted |= set(re.findall(r'"(\w+)"', call))
    selected = {
        name
        for widget in _dashboard()["widgets"]
        for metric in widget["properties"]["metrics"]
        if isinstance(metric[0], dict)
        for name in re.findall(r'outcome="(\w+)"', metric[0]["expression"])
    }
    assert "JobsAccepted" in selected and "JobsArchived" in selected
    assert selected <= counted, selected - counted

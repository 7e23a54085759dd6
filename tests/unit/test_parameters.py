"""Stack parameters for the sandbox, checked against template.yaml as CloudFormation checks them."""

from __future__ import annotations

import json

import pytest
from samcli.cli.types import CfnParameterOverridesType

from klingflow.providers.registry import load_configs
from klingflow_dev.sandbox import template
from tests.conftest import REPO

DECLARED = template.load(REPO / "template.yaml")["Parameters"]


def test_sam_deploys_two_spellings_of_an_override_are_read_alike() -> None:
    assert template.parse_overrides(
        ["DailyBudgetUsd=5", "ParameterKey=MaxJobCostUsd,ParameterValue=2", 'ProviderOverrides={"a": 1}']
    ) == {"DailyBudgetUsd": "5", "MaxJobCostUsd": "2", "ProviderOverrides": '{"a": 1}'}
    with pytest.raises(ValueError, match="not Key=Value"):
        template.parse_overrides(["DailyBudgetUsd"])


def test_values_not_given_take_their_defaults() -> None:
    values = template.parameter_values(DECLARED, {"DailyBudgetUsd": "5"})
    assert values["DailyBudgetUsd"] == "5"
    assert (values["MaxJobCostUsd"], values["SalvageWindowHours"], values["JobDeadlineSeconds"]) == (
        "25",
        "24",
        "10800",
    )


def test_webhook_deliveries_at_once_are_a_parameter_of_fifty_by_default() -> None:
    """A trickling receiver holds one delivery for its whole deadline: the webhook queue's cap
    is the stack's `WebhookConcurrency`, many more than a handful of slow receivers."""
    resources = template.load(REPO / "template.yaml")["Resources"]
    (source,) = resources["WebhookFunction"]["Properties"]["Events"].values()
    assert source["Properties"]["BatchSize"] == 1
    assert source["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "WebhookConcurrency"}
    assert template.parameter_values(DECLARED, {})["WebhookConcurrency"] == "50"
    with pytest.raises(ValueError, match="must be at least 2"):
        template.parameter_values(DECLARED, {"WebhookConcurrency": "1"})


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"DailyBudgetUsd": "lots"}, "DailyBudgetUsd='lots': must be a number"),
        ({"DailyBudgetUsd": "-1"}, "must be at least 0"),
        ({"SalvageWindowHours": "100"}, "must be at most 72"),
        ({"LogLevel": "LOUD"}, "must be one of"),
        ({"DailyBudget": "5"}, "unknown parameter(s) ['DailyBudget']"),
    ],
)
def test_a_value_the_template_refuses_is_refused_naming_it(given: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        template.parameter_values(DECLARED, given)


def test_the_readmes_provider_overrides_example_survives_sam_deploys_quoting() -> None:
    """The deploy example in the README, parsed by sam deploy's own parser, is valid JSON that
    the functions accept (unquoted, sam would cut it at its first space)."""
    line = next(
        line.strip().strip("\\").strip()
        for line in (REPO / "README.md").read_text().splitlines()
        if line.strip().startswith("'ProviderOverrides=")
    )
    parsed = CfnParameterOverridesType().convert((line.strip("'"),), None, None)
    overrides = json.loads(parsed["ProviderOverrides"])
    assert load_configs(overrides)["gateway"].base_url == "https://gw.example.com"


def test_the_scale_knobs_are_parameters_wired_to_what_they_bound() -> None:
    resources = template.load(REPO / "template.yaml")["Resources"]
    (archive,) = resources["ArchiveFunction"]["Properties"]["Events"].values()
    assert archive["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "ArchiveConcurrency"}
    (queued,) = [
        e for e in resources["SubmitFunction"]["Properties"]["Events"].values() if e["Type"] == "SQS"
    ]
    assert queued["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "SubmitConcurrency"}
    sweeper = resources["SweeperFunction"]["Properties"]
    assert sweeper["MemorySize"] == {"Ref": "SweeperMemorySize"}
    assert sweeper["Environment"]["Variables"]["MAX_JOBS_PER_RUN"] == {"Ref": "SweepMaxJobsPerRun"}
    defaults = template.parameter_values(DECLARED, {})
    assert (
        defaults["ArchiveConcurrency"],
        defaults["SweepMaxJobsPerRun"],
        defaults["SweeperMemorySize"],
    ) == (
        "10",
        "500",
        "512",
    )
    for name in ("SubmitConcurrency", "ArchiveConcurrency", "SweepMaxJobsPerRun", "SweeperMemorySize"):
        assert {"MinValue", "MaxValue", "Description"} <= set(DECLARED[name]), name

"""template.yaml deploys anywhere: SAM's own translator turns it into the CloudFormation a
deployment runs, and in that template no resource carries a physical name two stacks in one
account and region could share, and no function needs reserved concurrency (which a new
account's 10-50 concurrency quota cannot spare)."""

from __future__ import annotations

import copy
from typing import Any

import boto3
import pytest
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from klingflow_dev.sandbox import template
from tests.conftest import REPO

SAM_TEMPLATE = template.load(REPO / "template.yaml")
REGION, ACCOUNT = "us-east-1", "123456789012"
# The properties that give a resource its physical name, where CloudFormation would otherwise
# make one up (a resource type's own name: Name, or BucketName, TableName, ...).
NAMING = {
    "Name",
    "AlarmName",
    "BucketName",
    "DashboardName",
    "FunctionName",
    "LayerName",
    "LogGroupName",
    "ManagedPolicyName",
    "QueueName",
    "RoleName",
    "ScheduleGroupName",
    "StateMachineName",
    "TableName",
    "TopicName",
}
# ... except where the property names another resource, not the one it sits on.
REFERENCES = {
    ("AWS::Logs::SubscriptionFilter", "LogGroupName"),
    ("AWS::Lambda::Permission", "FunctionName"),
    ("AWS::Lambda::EventSourceMapping", "FunctionName"),
    ("AWS::Lambda::EventInvokeConfig", "FunctionName"),
}


def _transformed(parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """What `sam deploy` hands CloudFormation (local code paths swapped for S3 ones, as `sam
    validate` does: the translator accepts only those)."""
    document = copy.deepcopy(SAM_TEMPLATE)
    for resource in document["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function":
            properties["CodeUri"] = "s3://bucket/function.zip"
        elif resource["Type"] == "AWS::Serverless::LayerVersion":
            properties["ContentUri"] = "s3://bucket/layer.zip"
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name=REGION))
    result: dict[str, Any] = translator.translate(
        document, parameter_values=dict(parameters or {}), get_managed_policy_map=dict
    )
    return result


class _Generated(dict[tuple[str, str], str]):
    """A resource attribute CloudFormation makes up as it creates the resource (a queue's name,
    an ARN): each stack's differs, so it is named after the stack here."""

    def __init__(self, stack: str) -> None:
        super().__init__()
        self._stack = stack

    def __missing__(self, key: tuple[str, str]) -> str:
        return f"{self._stack}-{key[0]}-{key[1]}"


def _resolver(document: dict[str, Any], stack: str, given: dict[str, str]) -> template.Resolver:
    stack_id = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{stack}/{stack}-uuid"
    pseudo = {
        "AWS::StackName": stack,
        "AWS::StackId": stack_id,
        "AWS::Region": REGION,
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": "aws",
        "AWS::URLSuffix": "amazonaws.com",
    }
    resolver = template.Resolver(
        parameters=template.parameter_values(document["Parameters"], given),
        pseudo=pseudo,
        conditions=document.get("Conditions", {}),
        attributes=_Generated(stack),
    )
    resolver.refs.update({logical: f"{stack}-{logical}" for logical in document["Resources"]})
    return resolver


def _physical_names(document: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """(logical id, property) for every name a resource is given, where CloudFormation would
    otherwise make one up."""
    names = {}
    for logical, resource in document["Resources"].items():
        for key, value in resource.get("Properties", {}).items():
            if key in NAMING and (resource["Type"], key) not in REFERENCES:
                names[(logical, key)] = value
    return names


@pytest.mark.parametrize(
    "parameters",
    [{}, {"PowertoolsLayerArn": "arn:aws:lambda:us-east-1:017000801446:layer:Powertools:7"}],
    ids=["defaults", "managed-powertools"],
)
def test_two_stacks_in_one_account_and_region_share_no_physical_name(parameters: dict[str, str]) -> None:
    # Given the template as CloudFormation receives it
    document = _transformed(parameters)
    named = _physical_names(document)
    # (it names things: the buses, the bucket, the log groups, the layers, the API's parameter)
    assert ("EventBus", "Name") in named and ("MediaBucket", "BucketName") in named
    # When each name is worked out for two stacks deployed with the same parameters
    first, second = (_resolver(document, stack, parameters) for stack in ("klingflow", "klingflow-staging"))
    clashes = {}
    for (logical, key), value in named.items():
        resource = document["Resources"][logical]
        if "Condition" in resource and not first.condition(resource["Condition"]):
            continue  # not created with these parameters
        mine, theirs = first(value), second(value)
        if mine == theirs:
            clashes[f"{logical}.{key}"] = mine
    # Then none is the same for both
    assert not clashes, f"physical names two stacks would share: {clashes}"


def test_the_schedule_is_named_by_cloudformation_not_after_its_logical_id() -> None:
    resources = _transformed()["Resources"]
    [schedule] = [r for r in resources.values() if r["Type"] == "AWS::Scheduler::Schedule"]
    assert "Name" not in schedule["Properties"]


def test_a_named_request_bus_keeps_its_name() -> None:
    # A stack deployed before with the old default keeps its bus by naming it
    document = _transformed({"EventBusName": "klingflow"})
    resolver = _resolver(document, "klingflow", {"EventBusName": "klingflow"})
    assert resolver(document["Resources"]["EventBus"]["Properties"]["Name"]) == "klingflow"


def test_no_function_needs_reserved_concurrency() -> None:
    functions = {
        logical: resource["Properties"]
        for logical, resource in _transformed()["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
    }
    assert len(functions) == 6
    reserved = sorted(
        logical for logical, props in functions.items() if "ReservedConcurrentExecutions" in props
    )
    assert not reserved, f"reserved concurrency a new account's quota cannot spare: {reserved}"

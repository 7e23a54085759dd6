"""The two buses in template.yaml: partners put requests on one, only klingflow's functions put
outcomes on the other, and webhooks read only the outcome bus, with a retried, dead-lettered
target and one delivery per invocation."""

from __future__ import annotations

from typing import Any

from klingflow.flows.webhook import MAX_ATTEMPTS
from klingflow.settings import WebhookSettings
from klingflow_dev.sandbox import buspolicy, template
from klingflow_dev.sandbox.aws import PSEUDO
from tests.conftest import REPO

DOCUMENT = template.load(REPO / "template.yaml")
RESOURCES: dict[str, Any] = DOCUMENT["Resources"]
FUNCTION = "AWS::Serverless::Function"


def _resolver() -> template.Resolver:
    resolver = template.Resolver(
        parameters={k: v.get("Default") for k, v in DOCUMENT["Parameters"].items()}, pseudo=PSEUDO
    )
    for logical, resource in RESOURCES.items():
        resolver.refs[logical] = logical
        resolver.attributes[(logical, "Arn")] = buspolicy.bus_arn(logical)
        if resource["Type"] == FUNCTION:
            resolver.attributes[(f"{logical}Role", "Arn")] = buspolicy.role_arn(logical)
    return resolver


def _publishers(bus: str) -> set[str]:
    """The functions whose role grants events:PutEvents on `bus`."""
    found = set()
    for logical, resource in RESOURCES.items():
        if resource["Type"] != FUNCTION:
            continue
        for policy in resource["Properties"].get("Policies", []):
            for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
                if statement.get("Action") == "events:PutEvents":
                    assert statement["Resource"] == {"Fn::GetAtt": [bus, "Arn"]}, logical
                    found.add(logical)
    return found


def test_the_outcome_bus_admits_exactly_the_functions_that_publish_outcomes() -> None:
    policy = _resolver()(RESOURCES["OutcomeBusPolicy"]["Properties"])
    (denial,) = buspolicy.denials(policy)
    publishers = _publishers("OutcomeBus")
    assert publishers == {"SubmitFunction", "CallbackFunction", "ArchiveFunction", "SweeperFunction"}
    assert denial.bus == buspolicy.bus_arn("OutcomeBus")
    assert denial.except_principals == {buspolicy.role_arn(f) for f in publishers}
    # and every publisher's events go to the outcome bus
    for function in publishers:
        assert RESOURCES[function]["Properties"]["Environment"]["Variables"]["EVENT_BUS"] == {
            "Ref": "OutcomeBus"
        }


def test_requests_come_in_on_the_request_bus_and_webhooks_read_only_the_outcome_bus() -> None:
    requested = RESOURCES["SubmitFunction"]["Properties"]["Events"]["JobRequested"]["Properties"]
    assert requested["EventBusName"] == {"Ref": "EventBus"}
    rule = RESOURCES["WebhookRule"]["Properties"]
    assert rule["EventBusName"] == {"Ref": "OutcomeBus"}
    assert "Job Requested" not in rule["EventPattern"]["detail-type"]
    # the request bus is named by its stack unless a deployment names it; the outcome bus is
    # named by its stack
    assert DOCUMENT["Parameters"]["EventBusName"]["Default"] == ""
    assert DOCUMENT["Conditions"]["NameRequestBusAfterStack"] == {"Fn::Equals": [{"Ref": "EventBusName"}, ""]}
    assert RESOURCES["EventBus"]["Properties"]["Name"] == {
        "Fn::If": [
            "NameRequestBusAfterStack",
            {"Fn::Sub": "${AWS::StackName}-requests"},
            {"Ref": "EventBusName"},
        ]
    }
    assert RESOURCES["OutcomeBus"]["Properties"]["Name"] == {"Fn::Sub": "${AWS::StackName}-outcomes"}
    outputs = DOCUMENT["Outputs"]
    assert outputs["RequestBusName"]["Value"] == {"Ref": "EventBus"}
    assert outputs["OutcomeBusName"]["Value"] == {"Ref": "OutcomeBus"}


def test_the_webhook_rule_retries_then_dead_letters_into_a_queue_that_lets_it() -> None:
    (target,) = RESOURCES["WebhookRule"]["Properties"]["Targets"]
    assert target["RetryPolicy"]["MaximumEventAgeInSeconds"] == 86400
    dlq = target["DeadLetterConfig"]["Arn"]
    assert dlq == {"Fn::GetAtt": ["WebhookDLQ", "Arn"]}
    policies = [
        r["Properties"]
        for r in RESOURCES.values()
        if r["Type"] == "AWS::SQS::QueuePolicy" and {"Ref": "WebhookDLQ"} in r["Properties"]["Queues"]
    ]
    (statement,) = policies[0]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == {"Fn::GetAtt": ["WebhookRule", "Arn"]}


def test_one_webhook_per_invocation_with_its_deadline_inside_the_functions_timeout() -> None:
    function = RESOURCES["WebhookFunction"]["Properties"]
    source = function["Events"]["JobOutcomes"]["Properties"]
    assert source["BatchSize"] == 1
    timeout = float(function.get("Timeout", DOCUMENT["Globals"]["Function"]["Timeout"]))
    most = WebhookSettings.model_fields["webhook_timeout_s"].metadata
    assert any(getattr(m, "le", None) and m.le * 1.5 <= timeout for m in most)
    queue = RESOURCES["WebhookQueue"]["Properties"]
    assert int(queue["RedrivePolicy"]["maxReceiveCount"]) == MAX_ATTEMPTS
    assert int(queue["VisibilityTimeout"]) >= 6 * timeout

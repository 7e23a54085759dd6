"""Each function may touch only the table items it uses, as template.yaml grants them, and the
sandbox holds every handler's calls to those grants as AWS would (tools/klingflow_dev/sandbox/iam.py)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError

from klingflow_dev.sandbox import iam, template
from klingflow_dev.sandbox.aws import ACCOUNT, PSEUDO, REGION
from tests.conftest import REPO

TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/jobs"
DOCUMENT = template.load(REPO / "template.yaml")


def _grants() -> dict[str, list[iam.Statement]]:
    resolver = template.Resolver(
        parameters={k: v.get("Default") for k, v in DOCUMENT["Parameters"].items()}, pseudo=PSEUDO
    )
    for logical, resource in DOCUMENT["Resources"].items():
        if resource["Type"] != "AWS::Serverless::Function":
            # Other resources' ARNs do not matter to a DynamoDB grant.
            resolver.attributes[(logical, "Arn")] = f"arn:aws:other:::{logical}"
            resolver.refs[logical] = logical
    resolver.attributes[("JobsTable", "Arn")] = TABLE
    return {
        logical: iam.statements(resource["Properties"].get("Policies", []), resolver)
        for logical, resource in DOCUMENT["Resources"].items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


GRANTS = _grants()


def _key(pk: str) -> dict[str, Any]:
    return {"TableName": "jobs", "Key": {"pk": {"S": pk}}}


def test_every_function_reaches_the_table_only_through_key_prefixes() -> None:
    # Given each function's statements on the jobs table itself (indexes have no item keys)
    for function, statements in GRANTS.items():
        on_table = [s for s in statements if TABLE in s.resources]
        # Then each is conditioned on dynamodb:LeadingKeys, with prefixes, never a bare wildcard
        for statement in on_table:
            assert statement.leading_keys, f"{function}: a table grant without dynamodb:LeadingKeys"
            assert all(p.endswith("#*") and len(p) > 2 for p in statement.leading_keys), function


def test_the_public_callback_may_touch_job_items_only() -> None:
    granted = GRANTS["CallbackFunction"]
    job = next(iam.accesses("UpdateItem", _key("JOB#01J")))
    assert iam.allowed(granted, job)
    for other in ("SPEND#2026-12-07", "HEALTH#evolink", "ELEMENT#e1", "IDEMP#abc", "JOBS", "job#01J"):
        assert not iam.allowed(granted, next(iam.accesses("UpdateItem", _key(other)))), other
    assert not iam.allowed(
        granted, next(iam.accesses("PutItem", {"TableName": "jobs", "Item": {"pk": {"S": "JOB#x"}}}))
    )


def test_a_transaction_needs_the_right_for_each_of_its_operations() -> None:
    request = {
        "TransactItems": [
            {"Update": _key("JOB#01J")},
            {"Update": _key("SPEND#2026-12-07")},
        ]
    }
    actions = [(a.action, a.key) for a in iam.accesses("TransactWriteItems", request)]
    assert actions == [("dynamodb:UpdateItem", "JOB#01J"), ("dynamodb:UpdateItem", "SPEND#2026-12-07")]
    assert not all(
        iam.allowed(GRANTS["CallbackFunction"], a) for a in iam.accesses("TransactWriteItems", request)
    )
    assert all(iam.allowed(GRANTS["SubmitFunction"], a) for a in iam.accesses("TransactWriteItems", request))


def test_the_guard_answers_access_denied_for_the_calling_function_only() -> None:
    # Given the guard over every function's grants
    guard = iam.Guard(GRANTS)
    model = SimpleNamespace(name="UpdateItem")
    spend = _key("SPEND#2026-12-07")
    # When the callback asks for the day's spend item, DynamoDB's own error comes back
    token = iam.CALLER.set("CallbackFunction")
    try:
        with pytest.raises(ClientError) as refused:
            guard(params=spend, model=model)
    finally:
        iam.CALLER.reset(token)
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert "CallbackFunction" in str(refused.value) and "template.yaml" in str(refused.value)
    # And the submit function, or a caller outside any invocation (a test), is not stopped
    token = iam.CALLER.set("SubmitFunction")
    try:
        guard(params=spend, model=model)
    finally:
        iam.CALLER.reset(token)
    guard(params=spend, model=model)


def test_threads_a_handler_starts_act_for_it() -> None:
    iam.propagate_to_threads()
    token = iam.CALLER.set("SweeperFunction")
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            seen = pool.submit(iam.CALLER.get).result()
    finally:
        iam.CALLER.reset(token)
    assert seen == "SweeperFunction"

"""In the sandbox every handler's table calls are held to the rights template.yaml grants its
function, as IAM holds them on AWS: a whole job's life needs no right the template lacks."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from klingflow import runtime
from klingflow.infra.dynamo import Table
from klingflow_dev.sandbox import iam

from .conftest import Stack


def test_a_job_from_request_to_archive_needs_no_right_the_template_lacks(stack: Stack) -> None:
    guard = stack.sandbox.table_guard
    guard.checked.clear()
    # When a job goes from POST /jobs through its callbacks to its archive and a read
    job = stack.post_job("incoming/rights")
    stack.finish_at_provider()
    stack.sandbox.drain_archive()
    assert stack.job(job["job_id"])["status"] == "ARCHIVED"
    stack.sandbox.sweep()
    # Then every function that ran was checked call by call, and none was refused
    assert {"SubmitFunction", "CallbackFunction", "ArchiveFunction", "JobsFunction"} <= set(guard.checked)
    assert guard.denied == []


def test_the_public_callback_cannot_touch_the_days_spend(stack: Stack) -> None:
    # Given a call made as the callback function, through klingflow's own client
    table = Table(runtime.client("dynamodb"), stack.sandbox.names["JobsTable"])
    token = iam.CALLER.set("CallbackFunction")
    try:
        # Then the day's spend item is out of its reach, as IAM's LeadingKeys keeps it on AWS
        with pytest.raises(ClientError) as refused:
            table.update_item(
                Key={"pk": "SPEND#2026-12-07"},
                UpdateExpression="SET budget_usd = :b",
                ExpressionAttributeValues={":b": 1_000_000},
            )
    finally:
        iam.CALLER.reset(token)
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    stack.sandbox.table_guard.denied.clear()

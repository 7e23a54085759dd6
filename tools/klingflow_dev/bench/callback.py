"""Row: the callback's acknowledgement, against one conditional write and one send.

Ours is the callback function's handler as Lambda calls it (an API Gateway event for a
provider's completion, parsed, checked, recorded, handed to archive, answered), warm, against
the sandbox's moto server. The floor is the least any acknowledgement that must both remember
the news and hand it on can do: one conditional UpdateItem and one SQS SendMessage, made with
boto3 clients on the same server. Each side's sample is the median of a block of calls.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path
from typing import Any

from klingflow import runtime
from klingflow.core.models import Job, Source
from klingflow.core.states import JobStatus
from klingflow.core.tokens import CallbackSigner
from klingflow.jobs.store import JobStore
from klingflow_dev.clock import ManualClock
from klingflow_dev.sandbox import Sandbox, SandboxOptions

from .core import RowResult, interleaved, median_ms

EVENT = Path(__file__).resolve().parents[3] / "events" / "api_callback.json"
GOAL = 1.3


def _jobs(sandbox: Sandbox, count: int) -> list[str]:
    """`count` jobs submitted to gateway, written straight to the table (the callback is what
    is measured, not how the jobs got there)."""
    store = JobStore(runtime.table(sandbox.names["JobsTable"]), ManualClock())
    ids = []
    for i in range(count):
        job_id = f"01BENCH{i:019d}"
        store.create(
            Job.model_validate(
                {
                    "job_id": job_id,
                    "kind": "motion_control",
                    "status": JobStatus.SUBMITTED,
                    "provider": "gateway",
                    "provider_task_id": f"task-{i}",
                    "request": {"image": "a.png"},
                    "source": Source(type="api"),
                    "created_at": "2026-11-21T12:00:00Z",
                    "updated_at": "2026-11-21T12:00:00Z",
                    "deadline_at": 10**10,
                    "due_at": 10**10,
                }
            )
        )
        ids.append(job_id)
    return ids


def _event(sample: dict[str, Any], job_id: str, token: str, task_id: str) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(sample)
    path = f"/callbacks/{job_id}/{token}"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["pathParameters"] = {"job_id": job_id, "token": token}
    event["body"] = json.dumps({"id": task_id, "status": "completed"})
    return event


def run(*, runs: int, quick: bool) -> list[RowResult]:
    block = 10 if quick else 100
    runs = 1 if quick else runs
    with Sandbox(SandboxOptions(clock=ManualClock())) as sandbox:
        secret = sandbox.client("secretsmanager").get_secret_value(
            SecretId=sandbox.names["CallbackSigningKeySecret"]
        )
        signer = CallbackSigner(lambda: str(secret["SecretString"]))
        # Every event is made before the clock runs: only the handler's work is timed.
        sample = json.loads(EVENT.read_text())
        events = iter(
            [
                _event(sample, job_id, signer.token(job_id, "gateway"), f"task-{number}")
                for number, job_id in enumerate(_jobs(sandbox, block * runs + 1))
            ]
        )
        queue_url = sandbox.names["ArchiveQueue"]
        dynamodb, sqs = sandbox.client("dynamodb"), sandbox.client("sqs")
        table = sandbox.names["JobsTable"]

        invoker = sandbox.invoker
        assert invoker is not None

        def callback() -> None:
            answer = invoker.invoke("CallbackFunction", next(events), source="bench")
            assert answer["statusCode"] == 200, answer

        floor_count = iter(range(10**9))

        def floor() -> None:
            i = next(floor_count)
            dynamodb.update_item(
                TableName=table,
                Key={"pk": {"S": f"BENCH#{i}"}},
                UpdateExpression="SET hint_rank = :rank, hint_status = :status",
                ConditionExpression="attribute_not_exists(hint_rank) OR hint_rank < :rank",
                ExpressionAttributeValues={":rank": {"N": "3"}, ":status": {"S": "SUCCEEDED"}},
                ReturnValues="NONE",
            )
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"job_id": f"BENCH#{i}"}))

        # Warm both: the callback's cold start and the floor clients' first connections.
        with contextlib.redirect_stdout(io.StringIO()):
            callback()
            floor()
            ours, floors = interleaved(runs, median_ms(callback, block), median_ms(floor, block))
    return [
        RowResult(
            path="callback ack, p50",
            floor="one conditional UpdateItem + one SQS SendMessage, same server",
            unit="ms",
            ours=ours,
            floors=floors,
            goal_op="<=",
            goal=GOAL,
        )
    ]

"""Storing a new job: refused whole when the table cannot hold it, made once per idempotency
key (the `IDEMP#<sha256>` item points at the job it created)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from klingflow.core.clock import epoch
from klingflow.core.errors import FieldError, RequestRejected
from klingflow.core.models import Job
from klingflow.infra.dynamo import unstorable

from .items import JobItems
from .pages import job_partition
from .writes import is_conditional_failure, to_dynamo

# A new job may take half of DynamoDB's 400 KB item: the rest is room for what it gathers later
# (history, attempts, outputs, errors), so no later write can find it full.
NEW_JOB_MAX_BYTES = 200 * 1024


def refuse_unstorable(item: Mapping[str, Any]) -> None:
    """Refuse a job the table cannot hold, naming each field as the request does (`request.x`
    is the request's `x`; `metadata` is both, named once)."""
    errors = {
        (field, problem.rule): FieldError(field, problem.rule, problem.message)
        for problem in unstorable(to_dynamo(item), max_bytes=NEW_JOB_MAX_BYTES)
        for field in [problem.field.removeprefix("request.")]
    }
    if errors:
        raise RequestRejected(list(errors.values()))


def create(items: JobItems, job: Job, *, idempotency_key: str | None) -> tuple[Job, bool]:
    """See `JobStore.create`."""
    job_id = job.job_id
    item = to_dynamo(job.model_dump(mode="json"))
    refuse_unstorable(item)
    if idempotency_key is not None:
        key_item: dict[str, Any] = {
            "pk": _key_pk(idempotency_key),
            "job_id": job.job_id,
            "created_at": job.created_at,
            "expires_at": epoch(items.clock.now() + items.retention),
        }
        try:
            items.table.put_item(Item=key_item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
            existing = items.table.get_item(Key={"pk": key_item["pk"]}, ConsistentRead=True)["Item"]
            job_id = str(existing["job_id"])
            found = items.get(job_id)
            if found is not None:
                return found, False
            # The earlier attempt stopped between the two writes: finish its work under its id.
            job = job.model_copy(update={"job_id": job_id})
            item["job_id"] = job_id
    item.update(items.key(job_id))
    item["list_pk"] = job_partition(job_id)
    if job.due_at is not None:
        item["due_shard"] = items.due_shard(job_id)
    try:
        items.table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
    except ClientError as error:
        if not is_conditional_failure(error):
            raise
        found = items.get(job_id)
        assert found is not None
        return found, False
    return job, True


def job_for_key(items: JobItems, idempotency_key: str) -> Job | None:
    """See `JobStore.job_for_key`."""
    item = items.table.get_item(Key={"pk": _key_pk(idempotency_key)}, ConsistentRead=True).get("Item")
    return items.get(str(item["job_id"])) if item else None


def _key_pk(idempotency_key: str) -> str:
    return f"IDEMP#{hashlib.sha256(idempotency_key.encode()).hexdigest()}"

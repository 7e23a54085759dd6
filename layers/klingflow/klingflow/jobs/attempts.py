"""Tries noted on a job whatever its state: each provider call (`attempts`) and each delivery
of its webhook (the `webhook` map, which GET /jobs/{job_id} shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from klingflow.core.clock import epoch
from klingflow.core.models import Attempt, WebhookAttempt

from .items import JobItems
from .writes import is_conditional_failure, to_dynamo

# How long an ended job is kept past its webhook's next try.
WEBHOOK_RETRY_KEEP_S = 86_400


# The most attempts a job keeps (~0.4 KB each): a pinned job told "not now" for hours would
# otherwise grow past what a write costs in a few WCU, and toward DynamoDB's 400 KB.
MAX_ATTEMPTS = 16


def add_attempt(items: JobItems, job_id: str, attempt: Attempt) -> None:
    """Appended while there is room; then the newest replaces the last, and is counted. A job
    written before the bound, with more than it keeps, is appended to in order, as then."""
    value = to_dynamo(attempt.model_dump(mode="json"))
    writes = (
        (
            "SET attempts = list_append(if_not_exists(attempts, :empty), :a)",
            "attribute_not_exists(attempts) OR size(attempts) < :most",
            {":a": [value], ":empty": []},
        ),
        (
            f"SET attempts[{MAX_ATTEMPTS - 1}] = :a ADD attempts_omitted :one",
            "size(attempts) = :most",
            {":a": value, ":one": 1},
        ),
        ("SET attempts = list_append(attempts, :a)", "size(attempts) > :most", {":a": [value]}),
    )
    # The first write whose condition holds; none holds for a job that does not exist.
    for number, (update, condition, values) in enumerate(writes, start=1):
        try:
            items.table.update_item(
                Key=items.key(job_id),
                UpdateExpression=update,
                ExpressionAttributeValues={**values, ":most": MAX_ATTEMPTS},
                ConditionExpression=f"attribute_exists(pk) AND ({condition})",
            )
            return
        except ClientError as error:
            if number == len(writes) or not is_conditional_failure(error):
                raise


def record_webhook_attempt(
    items: JobItems, job_id: str, url: str, attempt: WebhookAttempt, *, next_try_at: str | None
) -> bool:
    """See `JobStore.record_webhook_attempt`."""
    names = {"#w": "webhook", "#last": "last", "#n": "attempts", "#next": "next_try_at"}
    values: dict[str, Any] = {":last": to_dynamo(attempt.model_dump(mode="json")), ":one": 1}
    expression = "SET #w.#last = :last, #w.#n = #w.#n + :one"
    if attempt.outcome == "delivered":
        names["#done"] = "delivered"
        values[":event"] = [attempt.event]
        expression += ", #w.#done = list_append(#w.#done, :event)"
    if next_try_at:
        values[":next"] = next_try_at
        expression += ", #w.#next = :next"
    else:
        expression += " REMOVE #w.#next"
    for _ in range(2):
        try:
            items.table.update_item(
                Key=items.key(job_id),
                UpdateExpression=expression,
                ConditionExpression="attribute_exists(#w)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
            if next_try_at:
                _outlive_webhook_retry(items, job_id, next_try_at)
            return True
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
        # The first try: the map is made once (a document path cannot be set inside a map
        # that does not exist yet), and the write above is made again.
        try:
            items.table.update_item(
                Key=items.key(job_id),
                UpdateExpression="SET #w = :new",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#w)",
                ExpressionAttributeNames={"#w": "webhook"},
                ExpressionAttributeValues={":new": {"url": url, "attempts": 0, "delivered": []}},
            )
        except ClientError as error:
            if not is_conditional_failure(error):
                raise
    return False


def _outlive_webhook_retry(items: JobItems, job_id: str, next_try_at: str) -> None:
    # An ended job expires `retention` after it ended (1 day at the least), its webhook may
    # be retried for 60 h: a retry that found no job would be dropped as unbacked (a forgery
    # alarm). Its expiry moves past the next try; a live job (no expiry yet) gets none, and
    # no expiry is ever brought forward.
    keep = epoch(datetime.fromisoformat(next_try_at)) + WEBHOOK_RETRY_KEEP_S
    try:
        items.table.update_item(
            Key=items.key(job_id),
            UpdateExpression="SET #e = :keep",
            ConditionExpression="#e < :keep",
            ExpressionAttributeNames={"#e": "expires_at"},
            ExpressionAttributeValues={":keep": keep},
        )
    except ClientError as error:
        if not is_conditional_failure(error):
            raise

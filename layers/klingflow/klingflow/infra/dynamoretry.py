"""When the jobs table's wrapper (`dynamo.Table`) makes a refused call again, and how.

DynamoDB refuses some calls for reasons that pass: a transaction that overlapped another on an
item (`TransactionCanceledException` whose reasons are `TransactionConflict`), a single write
that met a transaction in flight (`TransactionConflictException`), and throttling
(`ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`, or a
transaction's `ThrottlingError` reason). botocore retries throttling a few times itself; it never
retries a conflict, and a throttle can outlast its tries. Each of these refusals means nothing was
written, so the call is made again, after a full-jitter backoff (a random wait up to a ceiling
that doubles), within a number of tries and a total time.

Only calls that are safe to repeat are made again: reads, and writes that are conditional or
idempotent (a put, a delete, an update that only sets values), and transactions with a
conditional part (each of klingflow's names the state its job moves from), which a repeat of an
applied one fails. botocore may already have sent a
write whose first try timed out after DynamoDB applied it; repeating an unconditional `ADD` or
`list_append` then would count twice, so such a write's refusal is the caller's answer. A refusal
that is the answer stays it: `ConditionalCheckFailedException`, or a transaction whose reasons
include `ConditionalCheckFailed` (or anything but conflict and throttling), is never retried.
"""

from __future__ import annotations

import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from botocore.exceptions import ClientError

T = TypeVar("T")

# Refusals of the whole call that mean "not now" (nothing was written).
PASSING_CODES = frozenset(
    {
        "TransactionConflictException",
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
# A cancelled transaction's reasons that mean "not now"; "None" marks an item that was fine.
PASSING_REASONS = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"})
# An update that adds to what is there (ADD, list_append, arithmetic) counts twice if repeated.
_ACCUMULATES = re.compile(r"\bADD\b|list_append|[+-]", re.IGNORECASE)

logger = logging.getLogger("klingflow.dynamo")


@dataclass(frozen=True)
class Retried:
    """One retry, as logged: the operation, why, the try that failed (1-based), the wait."""

    operation: str
    reason: str
    attempt: int
    delay_s: float


def log_retry(retry: Retried) -> None:
    """The default note of a retry: one structured warning (CloudWatch Logs Insights can count
    them by reason; DynamoDB's own TransactionConflict and ThrottledRequests metrics alarm)."""
    logger.warning(
        "dynamodb retry",
        extra={
            "operation": retry.operation,
            "reason": retry.reason,
            "attempt": retry.attempt,
            "delay_s": round(retry.delay_s, 3),
        },
    )


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a passing refusal is retried. `attempts` counts every try (the
    first included); no wait starts that would end past `total_s` after the first try began.
    The sleep, clock and random source are injectable (tests run without waiting)."""

    # Patient enough that a conflict on a busy item does not fail the invocation (a failed
    # submit message comes back only after its queue's visibility timeout), bounded well inside
    # the shortest function's timeout (the callback's 10 s).
    attempts: int = 8
    base_s: float = 0.05
    cap_s: float = 1.0
    total_s: float = 3.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)
    random: Callable[[], float] = field(default=random.random, compare=False)
    on_retry: Callable[[Retried], None] = field(default=log_retry, compare=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be at least 1 (got {self.attempts})")

    def delay_s(self, attempt: int) -> float:
        """Full jitter: a random wait up to min(cap, base x 2^(attempt-1)), after try `attempt`."""
        return self.random() * min(self.cap_s, self.base_s * 2.0 ** (attempt - 1))

    def run(self, operation: str, request: Mapping[str, Any], call: Callable[[], T]) -> T:
        """`call()`, made again while it is refused for a passing reason and repeating
        `operation` with `request` is safe; else (or once out of tries or time) the last
        refusal is raised unchanged."""
        started = self.clock()
        attempt = 1
        while True:
            try:
                return call()
            except ClientError as error:
                reason = passing_reason(error)
                if reason is None or attempt >= self.attempts or not safe_to_repeat(operation, request):
                    raise
                delay = self.delay_s(attempt)
                if self.clock() + delay - started > self.total_s:
                    raise
                self.on_retry(Retried(operation, reason, attempt, delay))
                self.sleep(delay)
                attempt += 1


NO_RETRY = RetryPolicy(attempts=1)


def passing_reason(error: ClientError) -> str | None:
    """Why a refusal will pass (its code, or a transaction's passing reason); None if it is the
    answer (a failed condition, a validation error, anything unknown)."""
    response: Mapping[str, Any] = error.response
    code = str(response.get("Error", {}).get("Code", ""))
    if code in PASSING_CODES:
        return code
    if code != "TransactionCanceledException":
        return None
    codes = [str(reason.get("Code", "")) for reason in response.get("CancellationReasons") or []]
    passing = [each for each in codes if each in PASSING_REASONS]
    if not passing or any(each not in PASSING_REASONS and each != "None" for each in codes):
        return None
    return passing[0]


def safe_to_repeat(operation: str, request: Mapping[str, Any]) -> bool:
    """Whether making this call twice cannot do more than making it once."""
    if operation in READS:
        return True
    if operation == "TransactWriteItems":
        # All or nothing: one conditional part guards the whole (a repeat of an applied
        # transaction fails that condition and writes nothing), else every part must be idempotent.
        parts = [_only(entry) for entry in request.get("TransactItems", [])]
        return any(_conditional(*part) for part in parts) or all(_safe_write(*part) for part in parts)
    return _safe_write(operation.removesuffix("Item"), request)


def _only(entry: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    [(operation, body)] = entry.items()
    return str(operation), body


def _conditional(kind: str, body: Mapping[str, Any]) -> bool:
    return kind == "ConditionCheck" or bool(body.get("ConditionExpression"))


def _safe_write(kind: str, body: Mapping[str, Any]) -> bool:
    if _conditional(kind, body):
        return True
    if kind in ("Put", "Delete"):
        return True  # the same item (or none) whatever the repeats
    return kind == "Update" and not _ACCUMULATES.search(str(body.get("UpdateExpression", "")))

"""DynamoDB expressions are written by the store's modules only: a flow says what must hold (a
`Guard`, `ClaimHeld(...)`), and `jobs/writes.py` renders it, so the item's layout is known in
one place."""

from __future__ import annotations

import re
from pathlib import Path

from klingflow.core.states import JobStatus
from klingflow.jobs.writes import (
    ClaimHeld,
    Condition,
    FromProvider,
    Guard,
    HintBelow,
    JobWrite,
    LeaseFree,
    LeaseHeld,
    Reserved,
    render,
)
from tests.conftest import REPO

PACKAGE = REPO / "layers/klingflow/klingflow"
EXPRESSION = re.compile(
    r"ConditionExpression|UpdateExpression|KeyConditionExpression|FilterExpression|ProjectionExpression"
    r"|attribute_not_exists|attribute_exists|if_not_exists|list_append"
)
# Each module that talks to the table for its own items; nothing else may spell an expression.
WRITERS = {
    "jobs/writes.py",  # every conditional update of a job, rendered from one JobWrite
    "jobs/items.py",  # the element check inside a claim's transaction
    "jobs/store.py",  # clearing an owed event, reading a submission's state
    "jobs/creation.py",  # the conditional create and its idempotency key
    "jobs/attempts.py",  # the webhook map's document paths, the attempts list
    "jobs/listing.py",  # the due index's queries
    "jobs/pages.py",  # the list index's queries
    "jobs/elements.py",  # ELEMENT# items
    "jobs/leases.py",  # LEASE# items (a run one holder at a time)
    "money/ledger.py",  # SPEND# items
    "providers/health.py",  # HEALTH# items
    "infra/dynamo.py",  # the table itself
    "infra/dynamoretry.py",  # reads a refused write's expressions: may it be made again?
}


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "aws_models" not in p.parts)


def test_only_the_store_modules_write_dynamodb_expressions() -> None:
    written = {
        f"{path.relative_to(PACKAGE)}: {match.group()}"
        for path in _modules()
        if path.relative_to(PACKAGE).as_posix() not in WRITERS
        for match in [EXPRESSION.search(path.read_text())]
        if match
    }
    handlers = {
        f"{path.relative_to(REPO)}: {match.group()}"
        for path in sorted((REPO / "functions").rglob("*.py"))
        for match in [EXPRESSION.search(path.read_text())]
        if match
    }
    assert written | handlers == set()


def test_the_writers_named_exist() -> None:
    # A module renamed away would leave its entry allowing nothing, and hide the next one.
    assert {path.relative_to(PACKAGE).as_posix() for path in _modules()} >= WRITERS


def _placeholders(request: dict[str, object]) -> set[str]:
    text = " ".join(str(request[part]) for part in ("UpdateExpression", "ConditionExpression"))
    return set(re.findall(r"[#:][A-Za-z0-9_]+", text))


def test_every_guard_renders_with_exactly_the_names_and_values_it_uses() -> None:
    # DynamoDB refuses a request whose names or values include one its expressions do not use.
    guards: list[Condition] = [
        *Guard,
        ClaimHeld("claim-1"),
        LeaseHeld("worker-1"),
        LeaseFree(1_700_000_000),
        HintBelow(3),
        FromProvider("kling"),
        FromProvider("kling", "task-1"),
        Reserved(0.42, "kling"),
        Reserved(0.42, "kling", "reserved"),
    ]
    for guard in guards:
        write = JobWrite(status_in=frozenset({JobStatus.QUEUED}), sets={"updated_at": "now"}, guards=(guard,))
        request = render({"pk": "JOB#j"}, write)
        given = set(request["ExpressionAttributeNames"]) | set(request["ExpressionAttributeValues"])
        assert _placeholders(request) == given, guard

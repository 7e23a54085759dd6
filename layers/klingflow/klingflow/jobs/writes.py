"""The one write object for a job item, the conditions it may carry as intents, and the one
place its DynamoDB UpdateItem request is rendered.

Callers say what must hold (`Guard.NOT_SENDING`, `ClaimHeld(claim)`), never how DynamoDB spells
it: a flow that wrote an expression would couple itself to the item's layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from klingflow.core.models import Job
from klingflow.core.states import JobStatus

if TYPE_CHECKING:
    from klingflow.money.settlement import Money

KEY_FIELDS = (
    "pk",
    "list_pk",
    "due_shard",
    "expires_at",
    "submit_claim",
    "hint_rank",
    "archive_lease",
    "archive_lease_until",
)
# Every attribute a job item may have: the record's fields and the store's own bookkeeping. A
# write naming anything else is a bug (a misspelling would otherwise add a stray attribute).
ATTRIBUTES = frozenset(Job.model_fields) | set(KEY_FIELDS) | {"submit_claimed_at"}


def to_dynamo(value: Any) -> Any:
    # DynamoDB takes no floats; Decimal(str(x)) keeps the value as written.
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    return value


def is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class Guard(StrEnum):
    """A condition on the job item beyond its status, named for what it means."""

    NOT_SENDING = "not_sending"  # no provider call has started (a submitter records one first)
    NO_TASK_YET = "no_task_yet"  # no provider task is recorded
    SALVAGING = "salvaging"  # a timed-out job's task is still watched
    UNCLAIMED = "unclaimed"  # no submitter holds the job
    RESERVED = "reserved"  # the job holds a reservation
    UNRESERVED = "unreserved"  # the job holds no reservation


@dataclass(frozen=True)
class ClaimHeld:
    """The submitter that took the job with `claim` still holds it."""

    claim: str


@dataclass(frozen=True)
class LeaseHeld:
    """`owner` still holds the job's archive lease."""

    owner: str


@dataclass(frozen=True)
class LeaseFree:
    """No one holds the archive lease, or its holder's time ran out before `now` (epoch s)."""

    now: int


@dataclass(frozen=True)
class HintBelow:
    """No callback hint as far along as `rank` was recorded yet."""

    rank: int


@dataclass(frozen=True)
class FromProvider:
    """The job is at `provider`, on `task_id` when given (its provider or external task id)."""

    provider: str
    task_id: str | None = None


@dataclass(frozen=True)
class Reserved:
    """The job's reservation is still this one (`state` too when given): a concurrent move of
    its money makes the write fail rather than move it twice."""

    usd: float
    provider: str
    state: str | None = None


Condition = Guard | ClaimHeld | LeaseHeld | LeaseFree | HintBelow | FromProvider | Reserved


@dataclass(frozen=True)
class JobWrite:
    """One conditional update of a job, built once by the store and rendered by `render`.

    It applies only while the job is in one of `status_in` and every guard holds. `money` says
    what becomes of the job's reservation in the same write (the store resolves it into `spend`,
    the day's item's side of the transaction); `elements` are element ids the same transaction
    checks are not deleted.
    """

    status_in: frozenset[JobStatus]
    sets: Mapping[str, Any] = field(default_factory=dict)
    removes: tuple[str, ...] = ()
    appends: Mapping[str, list[Any]] = field(default_factory=dict)
    increments: Mapping[str, int] = field(default_factory=dict)
    guards: tuple[Condition, ...] = ()
    money: Money | None = None
    spend: Mapping[str, Any] | None = None
    elements: tuple[str, ...] = ()


def render(key: Mapping[str, str], write: JobWrite) -> dict[str, Any]:
    """The UpdateItem request of `write`: sets, appends, increments and removes, on the condition
    that the job exists in one of `status_in` and every guard holds."""
    unknown = {*write.sets, *write.removes, *write.appends, *write.increments} - ATTRIBUTES
    if unknown:
        raise ValueError(f"a job has no attribute {sorted(unknown)}")
    names: dict[str, str] = {"#status": "status"}
    values: dict[str, Any] = {}
    clauses = []
    for i, (name, value) in enumerate(write.sets.items()):
        names[f"#s{i}"] = name
        values[f":s{i}"] = to_dynamo(value)
        clauses.append(f"#s{i} = :s{i}")
    for i, (name, items) in enumerate(write.appends.items()):
        names[f"#a{i}"] = name
        values[f":a{i}"] = to_dynamo(items)
        values[":empty"] = []
        clauses.append(f"#a{i} = list_append(if_not_exists(#a{i}, :empty), :a{i})")
    for i, (name, step) in enumerate(write.increments.items()):
        names[f"#i{i}"] = name
        values[f":i{i}"] = step
        values[":zero"] = 0
        clauses.append(f"#i{i} = if_not_exists(#i{i}, :zero) + :i{i}")
    expression = "SET " + ", ".join(clauses)
    if write.removes:
        for i, name in enumerate(write.removes):
            names[f"#r{i}"] = name
        expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(write.removes)))
    placeholders = []
    for i, status in enumerate(sorted(write.status_in)):
        values[f":from{i}"] = status.value
        placeholders.append(f":from{i}")
    condition = f"attribute_exists(pk) AND #status IN ({', '.join(placeholders)})"
    for guard in write.guards:
        clause, guard_names, guard_values = _clause(guard)
        condition += f" AND ({clause})"
        names |= guard_names
        values |= guard_values
    return {
        "Key": dict(key),
        "UpdateExpression": expression,
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


_GUARDS = {
    Guard.NOT_SENDING: "attribute_not_exists(submitting_to)",
    Guard.NO_TASK_YET: "attribute_not_exists(provider_task_id)",
    Guard.SALVAGING: "attribute_exists(salvage_until)",
    Guard.UNCLAIMED: "attribute_not_exists(submit_claim)",
    Guard.RESERVED: "attribute_exists(reservation)",
    Guard.UNRESERVED: "attribute_not_exists(reservation)",
}


def _clause(guard: Condition) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A guard's condition text, with its attribute names and values."""
    match guard:
        case Guard():
            return _GUARDS[guard], {}, {}
        case ClaimHeld(claim):
            return "submit_claim = :claim", {}, {":claim": claim}
        case LeaseHeld(owner):
            return "archive_lease = :lease_owner", {}, {":lease_owner": owner}
        case LeaseFree(now):
            return (
                "attribute_not_exists(archive_lease_until) OR archive_lease_until < :now",
                {},
                {":now": now},
            )
        case HintBelow(rank):
            return "attribute_not_exists(hint_rank) OR hint_rank < :rank", {}, {":rank": rank}
        case FromProvider(provider, task_id):
            names = {"#provider": "provider"}
            values: dict[str, Any] = {":provider": provider}
            if task_id is None:
                return "#provider = :provider", names, values
            names |= {"#ptask": "provider_task_id", "#etask": "external_task_id"}
            values[":task"] = task_id
            return "#provider = :provider AND (#ptask = :task OR #etask = :task)", names, values
        case Reserved(amount, provider, state):
            names = {"#reservation": "reservation", "#rusd": "usd", "#rprovider": "provider"}
            values = {":rusd": to_dynamo(amount), ":rprovider": provider}
            clause = "#reservation.#rusd = :rusd AND #reservation.#rprovider = :rprovider"
            if state is not None:
                names["#rstate"] = "state"
                values[":rstate"] = state
                clause = f"#reservation.#rstate = :rstate AND {clause}"
            return clause, names, values

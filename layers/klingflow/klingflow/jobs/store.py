"""The jobs table: every read and conditional write klingflow makes to DynamoDB.

Item kinds share one table, told apart by the `pk` prefix:
- `JOB#<job_id>`: a job. While a job is not terminal it carries `due_shard` and `due_at`, which
  put it in the sparse `due-index` the sweeper reads; reaching a terminal state removes them,
  so the sweeper's cost follows the due jobs, not the table. Terminal jobs get a TTL.
- `IDEMP#<sha256>`: an idempotency key pointing at the job it created.
- `SPEND#<day>`: the day's budget counters (spend.py); changed only in a transaction with a job.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Required, TypedDict, Unpack

from botocore.exceptions import ClientError

from klingflow.core.clock import Clock, epoch, iso
from klingflow.core.errors import FieldError, QueryRejected, RequestRejected
from klingflow.core.models import Attempt, HistoryEntry, Job, JobError, JobPatch, Reservation, WebhookAttempt
from klingflow.core.states import JobStatus, allowed_sources
from klingflow.infra.dynamo import key_fits, unstorable
from klingflow.money.ledger import Ledger, SpendChange, usd
from klingflow.money.settlement import Money

if TYPE_CHECKING:
    from klingflow.infra.dynamo import Table

DUE_INDEX = "due-index"
LIST_INDEX = "list-index"
LIST_PK = "JOB"
# When an owed event is retried by the sweeper if its publisher did not clear it.
EVENT_RETRY_S = 60
# How long an ended job is kept past its webhook's next try.
WEBHOOK_RETRY_KEEP_S = 86_400
_KEY_FIELDS = (
    "pk",
    "list_pk",
    "due_shard",
    "expires_at",
    "submit_claim",
    "hint_rank",
    "archive_lease",
    "archive_lease_until",
)
_QUEUED = frozenset({JobStatus.QUEUED})
# Every attribute a job item may have: the record's fields and the store's own bookkeeping. A
# write naming anything else is a bug (a misspelling would otherwise add a stray attribute).
_ATTRIBUTES = frozenset(Job.model_fields) | set(_KEY_FIELDS) | {"submit_claimed_at"}
# A money write re-reads the job when a concurrent write moved its reservation meanwhile.
_MONEY_ATTEMPTS = 4
# Due-index shards read at once (each query is one shard's page).
_SHARD_READERS = 16


class NoRoom(Exception):
    """The day's budget cannot hold what a reservation asked for."""


class ElementDeleted(Exception):
    """An element the job names was deleted while it waited: it must not be sent."""

    def __init__(self, element_id: str) -> None:
        super().__init__(f"element {element_id} was deleted")
        self.element_id = element_id


# Where the element registry keeps each element (elements.py): a claim checks it in its write.
ELEMENT_PREFIX = "ELEMENT#"


class Claim(StrEnum):
    CLAIMED = "claimed"
    TAKEN = "taken"  # another submitter holds the job, or it is no longer QUEUED
    NO_ROOM = "no_room"  # the estimate does not fit what is left of today's budget


def _to_dynamo(value: Any) -> Any:
    # DynamoDB takes no floats; Decimal(str(x)) keeps the value as written.
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


# A new job may take half of DynamoDB's 400 KB item: the rest is room for what it gathers later
# (history, attempts, outputs, errors), so no later write can find it full.
NEW_JOB_MAX_BYTES = 200 * 1024


def refuse_unstorable(item: Mapping[str, Any]) -> None:
    """Refuse a job the table cannot hold, naming each field as the request does (`request.x`
    is the request's `x`; `metadata` is both, named once)."""
    errors = {
        (field, problem.rule): FieldError(field, problem.rule, problem.message)
        for problem in unstorable(_to_dynamo(item), max_bytes=NEW_JOB_MAX_BYTES)
        for field in [problem.field.removeprefix("request.")]
    }
    if errors:
        raise RequestRejected(list(errors.values()))


def _is_conditional_failure(error: ClientError) -> bool:
    return error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


class _Change(TypedDict, total=False):
    """One conditional update of a job (see `JobStore._request`)."""

    status_in: Required[frozenset[JobStatus]]
    sets: Required[Mapping[str, Any]]
    removes: tuple[str, ...]
    appends: Mapping[str, list[Any]] | None
    increments: Mapping[str, int] | None
    extra_condition: str | None
    extra_values: Mapping[str, Any] | None
    extra_names: Mapping[str, str] | None


@dataclass(frozen=True)
class CallbackNews:
    """What a verified callback says, for `JobStore.record_callback`."""

    provider: str  # whose URL it came to
    task_id: str
    hint: JobStatus | None  # RUNNING or an end; None: progress only
    note: str  # the provider's own word for the status, for the history
    fields: JobPatch  # progress, ETA, the provider's message


@dataclass(frozen=True)
class NotRecorded:
    """A callback's write did not apply; the job as it was (None: there is no such job)."""

    job: Job | None


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_token: str | None


class JobStore:
    def __init__(
        self,
        table: Table,
        clock: Clock,
        *,
        due_shards: int = 4,
        retention_days: int = 90,
        ledger: Ledger | None = None,
    ) -> None:
        self._table = table
        self._clock = clock
        self._ledger = ledger
        self._due_shards = due_shards
        self._retention = timedelta(days=retention_days)

    # ---- keys ------------------------------------------------------------------------------

    @staticmethod
    def _job_key(job_id: str) -> dict[str, str]:
        return {"pk": f"JOB#{job_id}"}

    def due_shard(self, job_id: str) -> str:
        return str(zlib.crc32(job_id.encode()) % self._due_shards)

    # ---- create and read -------------------------------------------------------------------

    def create(self, job: Job, *, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store a new QUEUED job; with a key already used, return that key's job instead.

        The key item is written first, conditionally: of two concurrent deliveries of the same
        request exactly one wins, and the loser reads the winner's job id.

        A job holding a value the table cannot (a number past 38 digits, nesting past 32 levels,
        more than `NEW_JOB_MAX_BYTES`) is refused before either write, naming its field.
        """
        job_id = job.job_id
        item = _to_dynamo(job.model_dump(mode="json"))
        refuse_unstorable(item)
        if idempotency_key is not None:
            key_item: dict[str, Any] = {
                "pk": _key_pk(idempotency_key),
                "job_id": job.job_id,
                "created_at": job.created_at,
                "expires_at": epoch(self._clock.now() + self._retention),
            }
            try:
                self._table.put_item(Item=key_item, ConditionExpression="attribute_not_exists(pk)")
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise
                existing = self._table.get_item(Key={"pk": key_item["pk"]}, ConsistentRead=True)["Item"]
                job_id = str(existing["job_id"])
                found = self.get(job_id)
                if found is not None:
                    return found, False
                # The earlier attempt stopped between the two writes: finish its work under its id.
                job = job.model_copy(update={"job_id": job_id})
                item["job_id"] = job_id
        item.update(self._job_key(job_id))
        item["list_pk"] = LIST_PK
        if job.due_at is not None:
            item["due_shard"] = self.due_shard(job_id)
        try:
            self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            found = self.get(job_id)
            assert found is not None
            return found, False
        return job, True

    def job_for_key(self, idempotency_key: str) -> Job | None:
        """The job an idempotency key already made, if any."""
        item = self._table.get_item(Key={"pk": _key_pk(idempotency_key)}, ConsistentRead=True).get("Item")
        return self.get(str(item["job_id"])) if item else None

    def get(self, job_id: str) -> Job | None:
        if not key_fits(job_id):
            return None  # no job has such an id, and DynamoDB would refuse the key outright
        item = self._table.get_item(Key=self._job_key(job_id), ConsistentRead=True).get("Item")
        return self._job(item) if item else None

    def submission_state(self, job_id: str) -> tuple[str | None, str | None]:
        """(when the submission was claimed, the provider it was last being sent to)."""
        item = (
            self._table.get_item(
                Key=self._job_key(job_id),
                ConsistentRead=True,
                ProjectionExpression="submit_claimed_at, submitting_to",
            ).get("Item")
            or {}
        )
        claimed_at, provider = item.get("submit_claimed_at"), item.get("submitting_to")
        return (str(claimed_at) if claimed_at else None, str(provider) if provider else None)

    @staticmethod
    def _job(item: Mapping[str, Any]) -> Job:
        return Job.model_validate(_from_dynamo({k: v for k, v in item.items() if k not in _KEY_FIELDS}))

    # ---- conditional writes ----------------------------------------------------------------

    def _update(
        self,
        job_id: str,
        *,
        spend: Mapping[str, Any] | None = None,
        elements: Sequence[str] = (),
        **change: Unpack[_Change],
    ) -> Job | None:
        """One conditional UpdateItem; None when the job is not in `status_in` (a no-op).

        With `spend` (the day's item's side, from `Ledger.update` or `Ledger.under_budget`) both
        happen in one transaction: either both or neither. A refused spend condition raises `NoRoom`. With
        `elements`, the same transaction checks that none of them is deleted (`ElementDeleted`).
        """
        request = self._request(job_id, **change)
        if spend is not None or elements:
            return self._transact(job_id, request, spend, elements)
        try:
            item = self._table.update_item(**request, ReturnValues="ALL_NEW")["Attributes"]
        except ClientError as error:
            if _is_conditional_failure(error):
                return None
            raise
        return self._job(item)

    def _request(self, job_id: str, **change: Unpack[_Change]) -> dict[str, Any]:
        """The UpdateItem request for `_update`: sets, appends, increments and removes, on the
        condition that the job exists in one of `status_in` (and `extra_condition`)."""
        status_in, sets = change["status_in"], change["sets"]
        removes, appends = change.get("removes", ()), change.get("appends")
        increments, extra_condition = change.get("increments"), change.get("extra_condition")
        extra_values, extra_names = change.get("extra_values"), change.get("extra_names")
        unknown = {*sets, *removes, *(appends or {}), *(increments or {})} - _ATTRIBUTES
        if unknown:
            raise ValueError(f"a job has no attribute {sorted(unknown)}")
        names: dict[str, str] = {"#status": "status", **(extra_names or {})}
        values: dict[str, Any] = {}
        clauses = []
        for i, (name, value) in enumerate(sets.items()):
            names[f"#s{i}"] = name
            values[f":s{i}"] = _to_dynamo(value)
            clauses.append(f"#s{i} = :s{i}")
        for i, (name, items) in enumerate((appends or {}).items()):
            names[f"#a{i}"] = name
            values[f":a{i}"] = _to_dynamo(items)
            values[":empty"] = []
            clauses.append(f"#a{i} = list_append(if_not_exists(#a{i}, :empty), :a{i})")
        for i, (name, step) in enumerate((increments or {}).items()):
            names[f"#i{i}"] = name
            values[f":i{i}"] = step
            values[":zero"] = 0
            clauses.append(f"#i{i} = if_not_exists(#i{i}, :zero) + :i{i}")
        expression = "SET " + ", ".join(clauses)
        if removes:
            for i, name in enumerate(removes):
                names[f"#r{i}"] = name
            expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(removes)))
        placeholders = []
        for i, status in enumerate(sorted(status_in)):
            values[f":from{i}"] = status.value
            placeholders.append(f":from{i}")
        condition = f"attribute_exists(pk) AND #status IN ({', '.join(placeholders)})"
        if extra_condition:
            condition += f" AND ({extra_condition})"
            values.update(extra_values or {})
        return {
            "Key": self._job_key(job_id),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def _transact(
        self,
        job_id: str,
        request: Mapping[str, Any],
        spend: Mapping[str, Any] | None,
        elements: Sequence[str] = (),
    ) -> Job | None:
        checked = list(dict.fromkeys(elements))  # one operation per item in a transaction
        items: list[Any] = [{"Update": {"TableName": self._table.name, **request}}]
        items += [spend] if spend is not None else []
        # A ConditionCheck on an item that does not exist (an element klingflow did not make)
        # holds: only a recorded deletion refuses.
        items += [
            {
                "ConditionCheck": {
                    "TableName": self._table.name,
                    "Key": {"pk": f"{ELEMENT_PREFIX}{element_id}"},
                    "ConditionExpression": "attribute_not_exists(deleted_at)",
                }
            }
            for element_id in checked
        ]
        try:
            self._table.transact_write_items(TransactItems=items)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise
            failed = [
                r.get("Code") == "ConditionalCheckFailed"
                for r in error.response.get("CancellationReasons", [])
            ]
            if failed[:1] == [True]:
                return None  # the job moved on: a no-op, like any late signal
            first_check = len(items) - len(checked)
            for element_id, refused in zip(checked, failed[first_check:], strict=False):
                if refused:
                    raise ElementDeleted(element_id) from None
            if spend is not None and failed[1:2] == [True]:
                raise NoRoom from None
            raise
        return self.get(job_id)

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        *,
        by: str,
        note: str | None = None,
        fields: JobPatch | None = None,
        due_in_s: int | None = None,
        increments: Mapping[str, int] | None = None,
        only_from: frozenset[JobStatus] | None = None,
        announce: str | None = None,
        removes: tuple[str, ...] = (),
        money: Money | None = None,
        extra_condition: str | None = None,
        extra_values: Mapping[str, Any] | None = None,
    ) -> Job | None:
        """Move a job to `target` from one of its allowed sources; None when that is not possible.

        `announce` names the event this move owes (an outbox): it is written with the move and
        cleared by `announced()` once EventBridge took it; a job that still owes one stays in
        the due index, terminal or not, so the sweeper publishes it if the publisher died.

        `only_from` narrows the allowed sources further, for a caller that knows which state
        its decision was based on.

        `money` says what becomes of the job's reservation (settled, released or kept): written
        in the same transaction as the move.

        Returns None for late, duplicated and out-of-order signals: the caller treats that as a
        no-op. A terminal target leaves the due index and starts the TTL clock.
        """
        now = self._clock.now()
        sets: dict[str, Any] = {"status": target.value, "updated_at": iso(now), **(fields or {})}
        if announce is not None:
            sets["pending_event"] = announce
        if target.terminal:
            sets["expires_at"] = epoch(now + self._retention)
            if announce is None:
                removes = (*removes, "due_shard", "due_at")
            else:
                # Due again to publish the event if no one did; sooner if a watch wants it.
                sets["due_at"] = epoch(now) + min(EVENT_RETRY_S, due_in_s or EVENT_RETRY_S)
                sets["due_shard"] = self.due_shard(job_id)
        elif due_in_s is not None:
            sets["due_at"] = epoch(now) + due_in_s
            sets["due_shard"] = self.due_shard(job_id)
        entry = HistoryEntry(at=iso(now), status=target, by=by, note=note)
        sources = allowed_sources(target) if only_from is None else allowed_sources(target) & only_from
        update: dict[str, Any] = {
            "status_in": sources,
            "sets": sets,
            "removes": removes,
            "appends": {"history": [entry.model_dump(mode="json")]},
            "increments": increments,
            "extra_condition": extra_condition,
            "extra_values": extra_values,
        }
        if money is not None:
            return self.with_money(job_id, money, **update)
        return self._update(job_id, **update)

    # ---- money: every move of a reservation is one transaction with the job ------------------

    def with_money(
        self,
        job_id: str,
        money: Money,
        *,
        status_in: frozenset[JobStatus],
        sets: Mapping[str, Any] | None = None,
        removes: tuple[str, ...] = (),
        appends: Mapping[str, list[Any]] | None = None,
        increments: Mapping[str, int] | None = None,
        extra_condition: str | None = None,
        extra_values: Mapping[str, Any] | None = None,
    ) -> Job | None:
        """Update a job and resolve its reservation as `money` says, exactly once.

        The reservation is read, then both items are written on the condition that it has not
        changed meanwhile; a concurrent move (a cancel racing a claim) makes this read again.
        """
        for _ in range(_MONEY_ATTEMPTS):
            job = self.get(job_id)
            if job is None or job.status not in status_in:
                return None
            reservation = job.reservation
            cost, change = money.apply(job)
            money_sets: dict[str, Any] = {"cost": cost.model_dump(mode="json", exclude_none=True)}
            spend = None
            names: dict[str, str] = {"#reservation": "reservation"}
            values: dict[str, Any] = dict(extra_values or {})
            if reservation is None:
                condition = "attribute_not_exists(#reservation)"
            else:
                names |= {"#rstate": "state", "#rusd": "usd", "#rprovider": "provider"}
                values |= {
                    ":rstate": reservation.state.value,
                    ":rusd": _to_dynamo(reservation.usd),
                    ":rprovider": reservation.provider,
                }
                condition = (
                    "#reservation.#rstate = :rstate AND #reservation.#rusd = :rusd "
                    "AND #reservation.#rprovider = :rprovider"
                )
                if change is not None:
                    assert self._ledger is not None, "a store that moves money needs the ledger"
                    money_sets["reservation"] = reservation.model_copy(
                        update={"state": money.state}
                    ).model_dump(mode="json")
                    spend = self._ledger.update(change, must_fit=False)
            if extra_condition:
                condition = f"({condition}) AND ({extra_condition})"
            written = self._update(
                job_id,
                status_in=status_in,
                sets={**(sets or {}), **money_sets},
                removes=removes,
                appends=appends,
                increments=increments,
                extra_condition=condition,
                extra_values=values,
                extra_names=names,
                spend=spend,
            )
            if written is not None:
                if change is not None and self._ledger is not None:
                    self._ledger.written(change)
                return written
        return None

    def reserve_and_claim(
        self, job: Job, claim: str, provider: str, estimate_usd: float, *, elements: Sequence[str] = ()
    ) -> tuple[Claim, Job | None]:
        """Take the right to send this job, reserving its estimate against today's budget in the
        same transaction; a job that already holds a reservation (it waited to retry) keeps it,
        and is NO_ROOM like any other while the day stands over its budget. Returns the outcome
        and, when claimed, the job as it now is.

        The same transaction checks that none of `elements` (the ids the job names) has been
        deleted meanwhile; if one has, nothing is written and `ElementDeleted` names it."""
        now = self._clock.now()
        sets = {"submit_claim": claim, "submit_claimed_at": iso(now), "updated_at": iso(now)}
        assert self._ledger is not None, "a store that claims needs the ledger"
        if job.reservation is not None:
            try:
                claimed = self._update(
                    job.job_id,
                    status_in=_QUEUED,
                    sets=sets,
                    extra_condition="attribute_not_exists(submit_claim) AND attribute_exists(reservation)",
                    # Its money is reserved already, but a day an overrun put over its budget
                    # sends nothing until it is back under: not this job either.
                    spend=self._ledger.under_budget(self._ledger.today()),
                    elements=elements,
                )
            except NoRoom:
                return Claim.NO_ROOM, None
            return (Claim.CLAIMED, claimed) if claimed else (Claim.TAKEN, None)
        day = self._ledger.today()
        reservation = Reservation(day=day, usd=estimate_usd, provider=provider)
        change = SpendChange(day, job.kind, reserved={provider: usd(estimate_usd)})
        try:
            claimed = self._update(
                job.job_id,
                status_in=_QUEUED,
                sets={**sets, "reservation": reservation.model_dump(mode="json")},
                extra_condition="attribute_not_exists(submit_claim) AND attribute_not_exists(reservation)",
                spend=self._ledger.update(change, must_fit=True),
                elements=elements,
            )
        except NoRoom:
            return Claim.NO_ROOM, None
        if claimed is None:
            return Claim.TAKEN, None
        self._ledger.written(change)
        return Claim.CLAIMED, claimed

    def move_reservation(self, job: Job, claim: str, provider: str, estimate_usd: float) -> Job | None:
        """Fail-over: the one reservation follows the job to the next provider at that provider's
        estimate (a dearer one must still fit the day). None when the claim was lost; raises
        NoRoom when the difference does not fit."""
        assert self._ledger is not None and job.reservation is not None
        old = job.reservation
        if old.provider == provider and usd(old.usd) == usd(estimate_usd):
            return job
        delta = usd(estimate_usd) - usd(old.usd)
        moves = {old.provider: -usd(old.usd)}
        moves[provider] = moves.get(provider, Decimal(0)) + usd(estimate_usd)
        change = SpendChange(old.day, job.kind, reserved=moves)
        moved_to = old.model_copy(update={"provider": provider, "usd": estimate_usd})
        moved = self._update(
            job.job_id,
            status_in=_QUEUED,
            sets={"reservation": moved_to.model_dump(mode="json")},
            extra_condition="submit_claim = :claim AND #reservation.#rusd = :rusd "
            "AND #reservation.#rprovider = :rprovider",
            extra_values={":claim": claim, ":rusd": _to_dynamo(old.usd), ":rprovider": old.provider},
            extra_names={"#reservation": "reservation", "#rusd": "usd", "#rprovider": "provider"},
            spend=self._ledger.update(change, must_fit=delta > 0),
        )
        if moved is not None:
            self._ledger.written(change)
        return moved

    def announced(self, job_id: str, detail_type: str, *, terminal: bool) -> None:
        """The owed event was published: clear it (and, for a finished job, leave the due index)."""
        removes = "pending_event, due_shard, due_at" if terminal else "pending_event"
        try:
            self._table.update_item(
                Key=self._job_key(job_id),
                UpdateExpression=f"REMOVE {removes}",
                ConditionExpression="pending_event = :event",
                ExpressionAttributeValues={":event": detail_type},
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise

    def touch(
        self,
        job_id: str,
        *,
        status_in: frozenset[JobStatus],
        fields: JobPatch | None = None,
        due_in_s: int | None = None,
        increments: Mapping[str, int] | None = None,
        removes: tuple[str, ...] = (),
        extra_condition: str | None = None,
        extra_values: Mapping[str, Any] | None = None,
    ) -> Job | None:
        """Update a job without changing its status (reschedule a poll, note progress)."""
        return self._update(
            job_id,
            status_in=status_in,
            sets=self._touch_sets(job_id, fields, due_in_s),
            increments=increments,
            removes=removes,
            extra_condition=extra_condition,
            extra_values=extra_values,
        )

    def reschedule(
        self,
        job_id: str,
        *,
        status_in: frozenset[JobStatus],
        due_in_s: int,
        fields: JobPatch | None = None,
        increments: Mapping[str, int] | None = None,
        extra_condition: str | None = None,
        extra_values: Mapping[str, Any] | None = None,
    ) -> bool:
        """`touch` that reads nothing back: the sweeper's bookkeeping after a visit (the next
        look, the poll counted, what the provider said). One conditional UpdateItem with an
        empty answer, so a sweep's hundreds of them cost no item to send, parse and validate;
        False when the job was not in `status_in` (it moved on meanwhile)."""
        request = self._request(
            job_id,
            status_in=status_in,
            sets=self._touch_sets(job_id, fields, due_in_s),
            increments=increments,
            extra_condition=extra_condition,
            extra_values=extra_values,
        )
        try:
            self._table.update_item(**request, ReturnValues="NONE")
        except ClientError as error:
            if _is_conditional_failure(error):
                return False
            raise
        return True

    def _touch_sets(self, job_id: str, fields: JobPatch | None, due_in_s: int | None) -> dict[str, Any]:
        now = self._clock.now()
        sets: dict[str, Any] = {"updated_at": iso(now), **(fields or {})}
        if due_in_s is not None:
            sets["due_at"] = epoch(now) + due_in_s
            sets["due_shard"] = self.due_shard(job_id)
        return sets

    def record_hint(self, job_id: str, hint: JobStatus, *, active: frozenset[JobStatus]) -> Job | None:
        """Record a callback's status only if it is further along than any hint seen before.

        A retried or reordered callback carries a hint we already have (or an older one), fails
        the condition and writes nothing.
        """
        now = self._clock.now()
        return self._update(
            job_id,
            status_in=active,
            sets={"hint_status": hint.value, "hint_rank": hint.rank, "last_callback_at": iso(now)},
            increments={"callbacks": 1},
            extra_condition="attribute_not_exists(hint_rank) OR hint_rank < :rank",
            extra_values={":rank": hint.rank},
        )

    def record_callback(
        self, job_id: str, news: CallbackNews, *, active: frozenset[JobStatus]
    ) -> NotRecorded | None:
        """Record what a verified callback says in one conditional write; None when it was.

        The condition carries every check the callback needs (the job is live, at the provider
        the callback's URL was made for, on the task the callback names, and the news is further
        along than any hint before), so the callback reads nothing first and the write returns
        nothing. When the condition fails the job comes back as it was, for the caller's slow
        path (an adoption, a salvage, a duplicate) to decide on: no second read there either.
        """
        now = self._clock.now()
        sets: dict[str, Any] = {"updated_at": iso(now), **news.fields}
        names = {"#provider": "provider"}
        values: dict[str, Any] = {":provider": news.provider}
        condition = "#provider = :provider"
        if news.task_id != job_id:  # a task named by our own job id (external id) is always ours
            names |= {"#ptask": "provider_task_id", "#etask": "external_task_id"}
            values[":task"] = news.task_id
            condition += " AND (#ptask = :task OR #etask = :task)"
        appends = None
        increments = None
        status_in = active
        hint = news.hint
        if hint is not None:
            sets |= {"hint_status": hint.value, "hint_rank": hint.rank, "last_callback_at": iso(now)}
            increments = {"callbacks": 1}
            values[":rank"] = hint.rank
            condition += " AND (attribute_not_exists(hint_rank) OR hint_rank < :rank)"
        if hint is JobStatus.RUNNING:
            # The move itself, in the same write: SUBMITTED -> RUNNING with its history entry.
            status_in = allowed_sources(JobStatus.RUNNING) & active
            sets["status"] = JobStatus.RUNNING.value
            entry = HistoryEntry(at=iso(now), status=JobStatus.RUNNING, by="callback", note=news.note)
            appends = {"history": [entry.model_dump(mode="json")]}
        request = self._request(
            job_id,
            status_in=status_in,
            sets=sets,
            appends=appends,
            increments=increments,
            extra_condition=condition,
            extra_values=values,
            extra_names=names,
        )
        try:
            self._table.update_item(
                **request, ReturnValues="NONE", ReturnValuesOnConditionCheckFailure="ALL_OLD"
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise
            # The table hands the refused write's item back plain (dynamo.Table).
            old: Mapping[str, Any] | None = error.response.get("Item")  # type: ignore[assignment]
            return NotRecorded(self._job(old) if old else None)
        return None

    def take_lease(self, job_id: str, owner: str, *, for_s: int) -> Job | None:
        """The right to copy a SUCCEEDED job's outputs for a while; one holder at a time, and a
        holder that died loses it when it runs out. The job as leased, or None when another
        holds it."""
        now = epoch(self._clock.now())
        return self._update(
            job_id,
            status_in=frozenset({JobStatus.SUCCEEDED}),
            sets={"archive_lease": owner, "archive_lease_until": now + for_s},
            extra_condition="attribute_not_exists(archive_lease_until) OR archive_lease_until < :now",
            extra_values={":now": now},
        )

    def drop_lease(
        self, job_id: str, owner: str, error: JobError | None, *, invalid: bool = False
    ) -> Job | None:
        """Give the lease back, noting why the copy did not finish (shown on the job); `invalid`:
        the download was not what it claimed, counted in `invalid_downloads`. The job as written,
        or None when the lease was no longer this owner's."""
        sets: dict[str, Any] = {"updated_at": iso(self._clock.now())}
        if error is not None:
            sets["archive_error"] = error.model_dump(mode="json", exclude_none=True)
        return self._update(
            job_id,
            status_in=frozenset({JobStatus.SUCCEEDED}),
            sets=sets,
            removes=("archive_lease", "archive_lease_until"),
            increments={"invalid_downloads": 1} if invalid else None,
            extra_condition="archive_lease = :owner",
            extra_values={":owner": owner},
        )

    @staticmethod
    def lease_held(owner: str) -> tuple[str, dict[str, Any]]:
        """The condition (and its values) for a write that `owner` may make only while it still
        holds the job's archive lease (`take_lease`)."""
        return "archive_lease = :lease_owner", {":lease_owner": owner}

    def forget_hint(self, job_id: str) -> None:
        """Drop a hint the provider's own answer contradicted (an early or forged `completed`)."""
        self._update(
            job_id,
            status_in=frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING}),
            sets={"updated_at": iso(self._clock.now())},
            removes=("hint_status", "hint_rank"),
        )

    def record_webhook_attempt(
        self, job_id: str, url: str, attempt: WebhookAttempt, *, next_try_at: str | None
    ) -> bool:
        """Note one try at a job's webhook (its `webhook` map, which GET /jobs/{job_id} shows),
        whatever the job's state, touching nothing else; False when there is no such job."""
        names = {"#w": "webhook", "#last": "last", "#n": "attempts", "#next": "next_try_at"}
        values: dict[str, Any] = {":last": _to_dynamo(attempt.model_dump(mode="json")), ":one": 1}
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
                self._table.update_item(
                    Key=self._job_key(job_id),
                    UpdateExpression=expression,
                    ConditionExpression="attribute_exists(#w)",
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
                if next_try_at:
                    self._outlive_webhook_retry(job_id, next_try_at)
                return True
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise
            # The first try: the map is made once (a document path cannot be set inside a map
            # that does not exist yet), and the write above is made again.
            try:
                self._table.update_item(
                    Key=self._job_key(job_id),
                    UpdateExpression="SET #w = :new",
                    ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#w)",
                    ExpressionAttributeNames={"#w": "webhook"},
                    ExpressionAttributeValues={":new": {"url": url, "attempts": 0, "delivered": []}},
                )
            except ClientError as error:
                if not _is_conditional_failure(error):
                    raise
        return False

    def _outlive_webhook_retry(self, job_id: str, next_try_at: str) -> None:
        # An ended job expires `retention` after it ended (1 day at the least), its webhook may
        # be retried for 60 h: a retry that found no job would be dropped as unbacked (a forgery
        # alarm). Its expiry moves past the next try; a live job (no expiry yet) gets none, and
        # no expiry is ever brought forward.
        keep = epoch(datetime.fromisoformat(next_try_at)) + WEBHOOK_RETRY_KEEP_S
        try:
            self._table.update_item(
                Key=self._job_key(job_id),
                UpdateExpression="SET #e = :keep",
                ConditionExpression="#e < :keep",
                ExpressionAttributeNames={"#e": "expires_at"},
                ExpressionAttributeValues={":keep": keep},
            )
        except ClientError as error:
            if not _is_conditional_failure(error):
                raise

    def add_attempt(self, job_id: str, attempt: Attempt) -> None:
        self._table.update_item(
            Key=self._job_key(job_id),
            UpdateExpression="SET attempts = list_append(if_not_exists(attempts, :empty), :a)",
            ExpressionAttributeValues={":a": [_to_dynamo(attempt.model_dump(mode="json"))], ":empty": []},
            ConditionExpression="attribute_exists(pk)",
        )

    # ---- queries ---------------------------------------------------------------------------

    def due_jobs(self, *, limit: int) -> Iterator[Job]:
        """At most `limit` jobs whose due time has come, most overdue first within each shard.

        The quota follows what each shard has due, not a fixed split: every shard still in play
        gets an even share of what is left of `limit` each round, and a shard that runs out of
        due jobs gives the rest of its share to those that have more, so a backlog in one shard
        is drained as fast as one spread over all and cannot starve the others of their sweep.
        Every item read is a due job yielded: a query asks for no more than its shard's share,
        and only jobs whose `due_at` has come match its key condition.

        The shards are read side by side and each page is yielded as it arrives, so the caller
        starts on the first jobs while the rest are still being read. A job is yielded once per
        call even if a later page holds it again: the caller is writing to the jobs it was given
        while the rest are read, and a write that moves a job's due time forward but still into
        the past (`due_in_s=0`) moves it past the page's cursor, where the next page finds it.
        """
        now = epoch(self._clock.now())
        shards = [str(shard) for shard in range(self._due_shards)]
        # Whoever gets a round's odd remainder changes every minute, the sweeper's schedule.
        first = (now // 60) % len(shards)
        shards = shards[first:] + shards[:first]
        cursors: dict[str, dict[str, Any] | None] = dict.fromkeys(shards)
        left = limit
        given: set[str] = set()
        readers = min(len(shards), _SHARD_READERS)
        with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="due-index") as pool:
            while left > 0 and cursors:
                quotas = _shares(left, list(cursors))
                reading = {
                    pool.submit(self._due_page, shard, now, quota, cursors[shard]): shard
                    for shard, quota in quotas.items()
                }
                while reading:
                    done, _ = wait(reading, return_when=FIRST_COMPLETED)
                    for page in done:
                        shard = reading.pop(page)
                        items, cursor = page.result()
                        left -= len(items)
                        quotas[shard] -= len(items)
                        if cursor is None:
                            del cursors[shard]  # nothing more is due there
                        else:
                            cursors[shard] = cursor
                            if quotas[shard] > 0:  # a page cut short at 1 MB: read on
                                again = pool.submit(self._due_page, shard, now, quotas[shard], cursor)
                                reading[again] = shard
                        for item in items:
                            if item["pk"] not in given:
                                given.add(item["pk"])
                                yield self._job(item)

    def _due_page(
        self, shard: str, now: int, most: int, cursor: dict[str, Any] | None
    ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
        """One page of a shard's due jobs (at most `most`) from `cursor` on, and where the shard
        goes on (None: its due jobs are all read)."""
        request: dict[str, Any] = {
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "due_shard = :shard AND due_at <= :now",
            "ExpressionAttributeValues": {":shard": shard, ":now": now},
            # DynamoDB stops a page at 1 MB by itself; Limit keeps the read to the share.
            "Limit": most,
        }
        if cursor is not None:
            request["ExclusiveStartKey"] = cursor
        page = self._table.query(**request)
        return list(page.get("Items", [])), page.get("LastEvaluatedKey")

    def list_jobs(
        self, *, limit: int, next_token: str | None = None, status: JobStatus | None = None
    ) -> Page:
        """Newest first. `next_token` is opaque to callers (the index position, base64)."""
        extra: dict[str, Any] = {}
        if status is not None:
            extra = {
                "FilterExpression": "#status = :status",
                "ExpressionAttributeNames": {"#status": "status"},
                "ExpressionAttributeValues": {":status": status.value},
            }
        items, token = list_page(self._table, LIST_PK, limit=limit, next_token=next_token, **extra)
        return Page([self._job(item) for item in items], token)


def list_page(
    table: Table, list_pk: str, *, limit: int, next_token: str | None, **extra: Any
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the list-index partition `list_pk` (jobs, elements), newest first, and the
    opaque token of the next page."""
    kwargs: dict[str, Any] = {
        "IndexName": LIST_INDEX,
        "KeyConditionExpression": "list_pk = :pk",
        "ScanIndexForward": False,
        "Limit": limit,
        **extra,
        "ExpressionAttributeValues": {":pk": list_pk, **extra.get("ExpressionAttributeValues", {})},
    }
    if next_token:
        kwargs["ExclusiveStartKey"] = _decode_token(next_token, list_pk)
    page = table.query(**kwargs)
    last = page.get("LastEvaluatedKey")
    token = base64.urlsafe_b64encode(json.dumps(_from_dynamo(last)).encode()).decode() if last else None
    return [dict(item) for item in page.get("Items", [])], token


def _shares(total: int, shards: list[str]) -> dict[str, int]:
    """`total` split as evenly as possible over `shards`, the odd remainder to the first ones;
    a shard whose share is nothing this round is left out of it."""
    each, extra = divmod(total, len(shards))
    shares = {shard: each + (1 if index < extra else 0) for index, shard in enumerate(shards)}
    return {shard: share for shard, share in shares.items() if share > 0}


def _key_pk(idempotency_key: str) -> str:
    return f"IDEMP#{hashlib.sha256(idempotency_key.encode()).hexdigest()}"


def _decode_token(token: str, list_pk: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (binascii.Error, ValueError, RecursionError):
        key = None
    if (
        not isinstance(key, dict)
        or set(key) != {"pk", "list_pk", "job_id"}
        or not all(isinstance(value, str) for value in key.values())
        or key["list_pk"] != list_pk
    ):
        raise QueryRejected(
            [
                FieldError(
                    "next_token",
                    "page_token",
                    "next_token is not one this API issued: pass the previous page's next_token as it "
                    "came, or leave it out for the first page",
                )
            ]
        )
    return key

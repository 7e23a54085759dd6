"""The jobs table: every read and conditional write klingflow makes to a job, behind one facade.

Item kinds share one table, told apart by the `pk` prefix:
- `JOB#<job_id>`: a job. While a job is not terminal it carries `due_shard` and `due_at`, which
  put it in the sparse `due-index` the sweeper reads; reaching a terminal state removes them,
  so the sweeper's cost follows the due jobs, not the table. Terminal jobs get a TTL.
- `IDEMP#<sha256>`: an idempotency key pointing at the job it created (creation.py).
- `SPEND#<day>`: the day's budget counters (money/ledger.py); changed only in a transaction with
  a job (reservations.py).
- `LEASE#<name>`: a run one invocation at a time may do, e.g. the sweeper's tick (leases.py).

Here: reading a job, its status moves, and updates that keep its status. Each builds one
`JobWrite` (writes.py renders it); the rest is delegated to the module that holds it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from klingflow.core.clock import Clock, epoch, iso
from klingflow.core.codes import Actor
from klingflow.core.models import Attempt, HistoryEntry, Job, JobError, JobPatch, WebhookAttempt
from klingflow.core.states import JobStatus, allowed_sources
from klingflow.money.ledger import RETENTION_DAYS

from . import attempts, callbacks, creation, leases, listing, reservations
from .items import JobItems
from .writes import Condition, JobWrite, is_conditional_failure

if TYPE_CHECKING:
    from klingflow.infra.dynamo import Table
    from klingflow.money.ledger import Ledger
    from klingflow.money.settlement import Money

    from .callbacks import CallbackNews, NotRecorded
    from .listing import Page
    from .reservations import Claim

# When an owed event is retried by the sweeper if its publisher did not clear it.
EVENT_RETRY_S = 60
# Shards of the sparse index of due jobs (a sweep reads each, side by side). It projects the
# whole item, so every write to a live job (~13 of ~3 KB each) writes one shard: at 200 jobs/s
# ~7,800 WCU/s in all, ~250 a shard at 32, against DynamoDB's 1,000 a partition. Raising it
# never loses a job (a sweep reads shards 0..n-1, which hold the old ones); lowering it would.
DUE_SHARDS = 32


class JobStore:
    def __init__(
        self,
        table: Table,
        clock: Clock,
        *,
        due_shards: int = DUE_SHARDS,
        retention_days: int = RETENTION_DAYS,
        ledger: Ledger | None = None,
    ) -> None:
        self._items = JobItems(
            table, clock, due_shards=due_shards, retention=timedelta(days=retention_days), ledger=ledger
        )
        self._clock = clock

    def due_shard(self, job_id: str) -> str:
        return self._items.due_shard(job_id)

    # ---- create and read -------------------------------------------------------------------

    def create(self, job: Job, *, idempotency_key: str | None = None) -> tuple[Job, bool]:
        """Store a new QUEUED job; with a key already used, return that key's job instead.

        The key item is written first, conditionally: of two concurrent deliveries of the same
        request exactly one wins, and the loser reads the winner's job id.

        A job holding a value the table cannot (a number past 38 digits, nesting past 32 levels,
        more than `NEW_JOB_MAX_BYTES`) is refused before either write, naming its field.
        """
        return creation.create(self._items, job, idempotency_key=idempotency_key)

    def job_for_key(self, idempotency_key: str) -> Job | None:
        """The job an idempotency key already made, if any."""
        return creation.job_for_key(self._items, idempotency_key)

    def get(self, job_id: str) -> Job | None:
        return self._items.get(job_id)

    def submission_state(self, job_id: str) -> tuple[str | None, str | None]:
        """(when the submission was claimed, the provider it was last being sent to)."""
        item = (
            self._items.table.get_item(
                Key=self._items.key(job_id),
                ConsistentRead=True,
                ProjectionExpression="submit_claimed_at, submitting_to",
            ).get("Item")
            or {}
        )
        claimed_at, provider = item.get("submit_claimed_at"), item.get("submitting_to")
        return (str(claimed_at) if claimed_at else None, str(provider) if provider else None)

    # ---- status moves ----------------------------------------------------------------------

    def transition(
        self,
        job_id: str,
        target: JobStatus,
        *,
        by: Actor,
        note: str | None = None,
        fields: JobPatch | None = None,
        due_in_s: int | None = None,
        increments: Mapping[str, int] | None = None,
        only_from: frozenset[JobStatus] | None = None,
        announce: str | None = None,
        removes: tuple[str, ...] = (),
        money: Money | None = None,
        guard: Condition | None = None,
    ) -> Job | None:
        """Move a job to `target` from one of its allowed sources; None when that is not possible.

        `announce` names the event this move owes (an outbox): it is written with the move and
        cleared by `announced()` once EventBridge took it; a job that still owes one stays in
        the due index, terminal or not, so the sweeper publishes it if the publisher died.

        `only_from` narrows the allowed sources further, for a caller that knows which state
        its decision was based on; `guard` is what else must hold (writes.py names them).

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
            sets["expires_at"] = epoch(now + self._items.retention)
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
        write = JobWrite(
            status_in=sources,
            sets=sets,
            removes=removes,
            appends={"history": [entry.model_dump(mode="json")]},
            increments=increments or {},
            guards=(guard,) if guard is not None else (),
            money=money,
        )
        return self.write(job_id, write)

    def write(self, job_id: str, write: JobWrite) -> Job | None:
        """Make one conditional write; with `money`, the job's reservation is resolved as it
        says in the same transaction, exactly once (reservations.py). None when the job was not
        in `status_in` or a guard failed."""
        if write.money is not None:
            return reservations.write_with_money(self._items, job_id, write)
        return self._items.update(job_id, write)

    def announced(self, job_id: str, detail_type: str, *, terminal: bool) -> None:
        """The owed event was published: clear it (and, for a finished job, leave the due index)."""
        removes = "pending_event, due_shard, due_at" if terminal else "pending_event"
        try:
            self._items.table.update_item(
                Key=self._items.key(job_id),
                UpdateExpression=f"REMOVE {removes}",
                ConditionExpression="pending_event = :event",
                ExpressionAttributeValues={":event": detail_type},
            )
        except ClientError as error:
            if not is_conditional_failure(error):
                raise

    # ---- money: every move of a reservation is one transaction with the job ------------------

    def reserve_and_claim(
        self, job: Job, claim: str, provider: str, estimate_usd: float, *, elements: Sequence[str] = ()
    ) -> tuple[Claim, Job | None]:
        """Take the right to send this job, reserving its estimate against today's budget in the
        same transaction; a job that already holds a reservation (it waited to retry) keeps it,
        and is NO_ROOM like any other while the day stands over its budget. Returns the outcome
        and, when claimed, the job as it now is.

        The same transaction checks that none of `elements` (the ids the job names) has been
        deleted meanwhile; if one has, nothing is written and `ElementDeleted` names it."""
        return reservations.reserve_and_claim(
            self._items, job, claim, provider, estimate_usd, elements=tuple(elements)
        )

    def move_reservation(self, job: Job, claim: str, provider: str, estimate_usd: float) -> Job | None:
        """Fail-over: the one reservation follows the job to the next provider at that provider's
        estimate (a dearer one must still fit the day). None when the claim was lost; raises
        NoRoom when the difference does not fit."""
        return reservations.move_reservation(self._items, job, claim, provider, estimate_usd)

    # ---- updates that keep the status --------------------------------------------------------

    def touch(
        self,
        job_id: str,
        *,
        status_in: frozenset[JobStatus],
        fields: JobPatch | None = None,
        due_in_s: int | None = None,
        increments: Mapping[str, int] | None = None,
        removes: tuple[str, ...] = (),
        guard: Condition | None = None,
    ) -> Job | None:
        """Update a job without changing its status (reschedule a poll, note progress)."""
        write = JobWrite(
            status_in=status_in,
            sets=self._touch_sets(job_id, fields, due_in_s),
            removes=removes,
            increments=increments or {},
            guards=(guard,) if guard is not None else (),
        )
        return self._items.update(job_id, write)

    def reschedule(
        self,
        job_id: str,
        *,
        status_in: frozenset[JobStatus],
        due_in_s: int,
        fields: JobPatch | None = None,
        increments: Mapping[str, int] | None = None,
        guard: Condition | None = None,
    ) -> bool:
        """`touch` that reads nothing back: the sweeper's bookkeeping after a visit (the next
        look, the poll counted, what the provider said). One conditional UpdateItem with an
        empty answer, so a sweep's hundreds of them cost no item to send, parse and validate;
        False when the job was not in `status_in` (it moved on meanwhile)."""
        write = JobWrite(
            status_in=status_in,
            sets=self._touch_sets(job_id, fields, due_in_s),
            increments=increments or {},
            guards=(guard,) if guard is not None else (),
        )
        return self._items.update_quietly(job_id, write)

    def _touch_sets(self, job_id: str, fields: JobPatch | None, due_in_s: int | None) -> dict[str, Any]:
        now = self._clock.now()
        sets: dict[str, Any] = {"updated_at": iso(now), **(fields or {})}
        if due_in_s is not None:
            sets["due_at"] = epoch(now) + due_in_s
            sets["due_shard"] = self.due_shard(job_id)
        return sets

    # ---- callbacks, leases, attempts ---------------------------------------------------------

    def record_hint(self, job_id: str, hint: JobStatus, *, active: frozenset[JobStatus]) -> Job | None:
        """Record a callback's status only if it is further along than any hint seen before.

        A retried or reordered callback carries a hint we already have (or an older one), fails
        the condition and writes nothing.
        """
        return callbacks.record_hint(self._items, job_id, hint, active=active)

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
        return callbacks.record_callback(self._items, job_id, news, active=active)

    def forget_hint(self, job_id: str) -> None:
        """Drop a hint the provider's own answer contradicted (an early or forged `completed`)."""
        callbacks.forget_hint(self._items, job_id)

    def take_lease(self, job_id: str, owner: str, *, for_s: int) -> Job | None:
        """The right to copy a SUCCEEDED job's outputs for a while; one holder at a time, and a
        holder that died loses it when it runs out. The job as leased, or None when another
        holds it."""
        return leases.take_lease(self._items, job_id, owner, for_s=for_s)

    def drop_lease(
        self, job_id: str, owner: str, error: JobError | None, *, invalid: bool = False
    ) -> Job | None:
        """Give the lease back, noting why the copy did not finish (shown on the job); `invalid`:
        the download was not what it claimed, counted in `invalid_downloads`. The job as written,
        or None when the lease was no longer this owner's."""
        return leases.drop_lease(self._items, job_id, owner, error, invalid=invalid)

    def record_webhook_attempt(
        self, job_id: str, url: str, attempt: WebhookAttempt, *, next_try_at: str | None
    ) -> bool:
        """Note one try at a job's webhook (its `webhook` map, which GET /jobs/{job_id} shows),
        whatever the job's state, touching nothing else; False when there is no such job."""
        return attempts.record_webhook_attempt(self._items, job_id, url, attempt, next_try_at=next_try_at)

    def add_attempt(self, job_id: str, attempt: Attempt) -> None:
        attempts.add_attempt(self._items, job_id, attempt)

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
        return listing.due_jobs(self._items, limit=limit)

    def list_jobs(
        self, *, limit: int, next_token: str | None = None, status: JobStatus | None = None
    ) -> Page:
        """Newest first. `next_token` is opaque to callers (the index position, base64)."""
        return listing.list_jobs(self._items, limit=limit, next_token=next_token, status=status)

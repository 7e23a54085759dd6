"""Ending a job with an error, ending the watch over a timed-out job's task, and announcing
state changes through the job's outbox."""

from __future__ import annotations

from klingflow.core.clock import Clock, iso
from klingflow.core.codes import Actor, JobErrorCode
from klingflow.core.models import DetailType, HistoryEntry, Job, JobError, JobPatch
from klingflow.core.states import JobStatus
from klingflow.infra.events import EventPublisher
from klingflow.money.settlement import Money

from .store import JobStore
from .writes import Condition, JobWrite

_EVENT = {
    JobStatus.FAILED: DetailType.FAILED,
    JobStatus.CANCELLED: DetailType.CANCELLED,
    JobStatus.TIMED_OUT: DetailType.TIMED_OUT,
}


def end_job(
    store: JobStore,
    events: EventPublisher,
    job_id: str,
    target: JobStatus,
    *,
    by: Actor,
    code: JobErrorCode | str,
    message: str,
    money: Money,
    only_from: frozenset[JobStatus] | None = None,
    budget: dict[str, float] | None = None,
    fields: JobPatch | None = None,
    guard: Condition | None = None,
    removes: tuple[str, ...] = (),
    due_in_s: int | None = None,
) -> Job | None:
    """Move a job to a failed terminal state with its reason, resolving its reservation as
    `money` says in the same write; None when it had already ended (then someone else
    announced the outcome, so nothing is emitted twice)."""
    error = JobError(code=code, message=message, budget=budget)
    detail_type = _EVENT[target]
    ended = store.transition(
        job_id,
        target,
        by=by,
        note=code,
        fields={"error": error.model_dump(mode="json", exclude_none=True), **(fields or {})},
        only_from=only_from,
        announce=detail_type.value,
        money=money,
        guard=guard,
        removes=removes,
        due_in_s=due_in_s,
    )
    if ended is not None:
        announce(store, events, ended, detail_type)
    return ended


def announce(store: JobStore, events: EventPublisher, job: Job, detail_type: DetailType) -> bool:
    """Publish the event a state change owes, then clear it; a failure leaves it owed."""
    if not events.job(detail_type, job):
        return False
    # A timed-out job under salvage stays in the due index: its task is still being watched.
    store.announced(job.job_id, detail_type.value, terminal=job.status.terminal and not job.salvaging)
    return True


def stop_watching(
    store: JobStore, clock: Clock, job: Job, money: Money, why: str, *, by: Actor = Actor.ARCHIVE
) -> Job | None:
    """A timed-out job's task is no longer watched for salvage: it failed at the provider (its
    reservation is released), or the window closed without an answer (it stays reserved). The
    job stays TIMED_OUT and leaves the due index, unless it still owes an event."""
    now = clock.now()
    entry = HistoryEntry(at=iso(now), status=JobStatus.TIMED_OUT, by=by, note=f"stopped watching: {why}")
    removes = ("salvage_until",) if job.pending_event else ("salvage_until", "due_shard", "due_at")
    return store.write(
        job.job_id,
        JobWrite(
            status_in=frozenset({JobStatus.TIMED_OUT}),
            sets={"updated_at": iso(now)},
            removes=removes,
            appends={"history": [entry.model_dump(mode="json")]},
            money=money,
        ),
    )

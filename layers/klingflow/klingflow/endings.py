"""Ending a job with an error, and announcing state changes through the job's outbox."""

from __future__ import annotations

from .events import EventPublisher
from .models import DetailType, Job
from .states import JobStatus
from .store import JobStore

_EVENT = {
    JobStatus.FAILED: DetailType.FAILED,
    JobStatus.CANCELLED: DetailType.FAILED,
    JobStatus.TIMED_OUT: DetailType.TIMED_OUT,
}


def end_job(
    store: JobStore,
    events: EventPublisher,
    job_id: str,
    target: JobStatus,
    *,
    by: str,
    code: str,
    message: str,
    only_from: frozenset[JobStatus] | None = None,
) -> Job | None:
    """Move a job to a failed terminal state with its reason; None when it had already ended
    (then someone else announced the outcome, so nothing is emitted twice)."""
    error = {"error": {"code": code, "message": message}}
    detail_type = _EVENT[target]
    ended = store.transition(
        job_id, target, by=by, note=code, fields=error, only_from=only_from, announce=detail_type.value
    )
    if ended is not None:
        announce(store, events, ended, detail_type)
    return ended


def announce(store: JobStore, events: EventPublisher, job: Job, detail_type: DetailType) -> bool:
    """Publish the event a state change owes, then clear it; a failure leaves it owed."""
    if not events.job(detail_type, job):
        return False
    store.announced(job.job_id, detail_type.value, terminal=job.status.terminal)
    return True

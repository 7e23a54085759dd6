"""Ending a job with an error: one conditional write, and the event only if it was ours."""

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
    ended = store.transition(job_id, target, by=by, note=code, fields=error, only_from=only_from)
    if ended is not None:
        events.job(_EVENT[target], ended)
    return ended

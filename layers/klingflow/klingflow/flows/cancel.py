"""Cancel: stop a job before it reaches a provider.

None of the four dialects documents a way to cancel a task, so a job a provider may already hold
cannot be cancelled: it answers 409 naming the provider and task, and its output will still be
archived and billed. A job not yet sent ends CANCELLED at once, its reservation given back.
"""

from __future__ import annotations

from klingflow.core.codes import Actor, JobErrorCode
from klingflow.core.errors import JobConflict, JobNotFound
from klingflow.core.models import Job
from klingflow.core.states import JobStatus
from klingflow.infra.events import EventPublisher
from klingflow.jobs.endings import end_job
from klingflow.jobs.store import JobStore
from klingflow.jobs.writes import Guard
from klingflow.money.settlement import Release

_QUEUED = frozenset({JobStatus.QUEUED})


class Canceller:
    def __init__(self, *, store: JobStore, events: EventPublisher) -> None:
        self._store = store
        self._events = events

    def cancel(self, job_id: str) -> Job:
        """CANCELLED (or already so); raises JobConflict once a provider may hold the job."""
        job = self._store.get(job_id)
        if job is None:
            raise JobNotFound(f"no job {job_id!r}")
        if job.status is JobStatus.QUEUED and not job.at_provider:
            # Conditional on no provider call having started: a submitter records where it is
            # sending before it sends, so whichever of the two writes first wins.
            ended = end_job(
                self._store,
                self._events,
                job_id,
                JobStatus.CANCELLED,
                by=Actor.API,
                code=JobErrorCode.CANCELLED,
                message="cancelled before it was sent to any provider; nothing was charged",
                money=Release(),
                only_from=_QUEUED,
                guard=Guard.NOT_SENDING,
            )
            job = ended or self._store.get(job_id) or job
        if job.status is JobStatus.CANCELLED:
            return job
        if job.at_provider and not job.status.terminal:
            provider = job.provider or job.submitting_to
            raise JobConflict(
                JobErrorCode.ALREADY_AT_PROVIDER,
                f"job {job_id} is already at {provider} (task {job.provider_task_id or 'not yet known'}); "
                "none of its dialects documents a cancel call, so it runs on and its output will be "
                "archived and billed",
                provider=provider,
                provider_task_id=job.provider_task_id,
                status=job.status.value,
            )
        raise JobConflict(
            JobErrorCode.ALREADY_FINISHED,
            f"job {job_id} has already ended: {job.status.value}",
            status=job.status.value,
        )

"""Salvage: a job past its deadline times out, and a task a provider may still hold for it is
watched for the salvage window: completed, it was paid for and is archived late; failed or never
created, its reservation is released; never heard of again, it stays reserved.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from klingflow.core.clock import Clock, epoch
from klingflow.core.codes import Actor, JobErrorCode, ProviderErrorClass
from klingflow.core.errors import ProviderError
from klingflow.core.models import Job, JobPatch
from klingflow.core.outcomes import SweepOutcome
from klingflow.core.states import JobStatus
from klingflow.infra.events import EventPublisher
from klingflow.infra.queue import JobQueue
from klingflow.jobs.endings import end_job, stop_watching
from klingflow.jobs.store import JobStore
from klingflow.jobs.writes import Guard
from klingflow.money.settlement import Keep, Money, Release
from klingflow.providers.registry import Registry


class Salvager:
    def __init__(
        self,
        *,
        store: JobStore,
        queue: JobQueue,
        events: EventPublisher,
        registry: Registry,
        clock: Clock,
        adopt_late: Callable[[Job, str, str], Job | None],
        salvage_window_s: int,
        salvage_poll_s: int,
        archive_stall_s: int,
    ) -> None:
        self._store = store
        self._queue = queue
        self._events = events
        self._registry = registry
        self._clock = clock
        self._adopt_late = adopt_late
        self._salvage_window_s = salvage_window_s
        self._salvage_poll_s = salvage_poll_s
        self._archive_stall_s = archive_stall_s

    def time_out(self, job: Job, only_from: frozenset[JobStatus], *, watch: bool) -> SweepOutcome:
        """TIMED_OUT. A job a provider may hold a task for (`watch`) keeps its reservation and
        its task stays watched for the salvage window: if it completes, it was paid for and is
        archived late. A job never sent gives its reservation back."""
        last = job.attempts[-1].detail if job.attempts and job.status is JobStatus.QUEUED else None
        message = f"not finished by its deadline (was {job.status.value})" + (
            f"; last: {last}" if last else ""
        )
        if not watch:
            self._end(job, only_from, message, Release())
            return SweepOutcome.TIMED_OUT
        until = job.deadline_at + self._salvage_window_s
        watching: JobPatch | None = {"salvage_until": until} if self._salvage_window_s > 0 else None
        self._end(job, only_from, message, Keep(), fields=watching, due_in_s=self._salvage_poll_s)
        return SweepOutcome.TIMED_OUT

    def _end(
        self,
        job: Job,
        only_from: frozenset[JobStatus],
        message: str,
        money: Money,
        *,
        fields: JobPatch | None = None,
        due_in_s: int | None = None,
    ) -> None:
        end_job(
            self._store,
            self._events,
            job.job_id,
            JobStatus.TIMED_OUT,
            by=Actor.SWEEPER,
            code=JobErrorCode.DEADLINE_EXCEEDED,
            message=message,
            only_from=only_from,
            money=money,
            fields=fields,
            due_in_s=due_in_s,
        )

    def salvage(self, job: Job, now: datetime) -> SweepOutcome:
        """A timed-out job whose task may still complete: look at it at a slow pace until the
        salvage window closes. Completed: archive (late). Failed: release its reservation."""
        if epoch(now) >= (job.salvage_until or 0):
            # Never heard of again: it may have been charged, so it stays reserved.
            stop_watching(self._store, self._clock, job, Keep(), "salvage window closed", by=Actor.SWEEPER)
            return SweepOutcome.SALVAGE_CLOSED
        if job.provider is None or job.provider_task_id is None:
            return self._lost_create(job)
        try:
            report = self._registry.job_report(job)
        except ProviderError as error:
            self._watch_again(job, error.retry_after_s)
            return SweepOutcome.SALVAGE_POLL_FAILED
        if report.status is JobStatus.SUCCEEDED:
            self._queue.enqueue(job.job_id, "sweeper-salvage")
            self._watch_again(job, self._archive_stall_s)
            return SweepOutcome.SALVAGE_FINISHED
        if report.status in (JobStatus.FAILED, JobStatus.CANCELLED):
            stop_watching(
                self._store,
                self._clock,
                job,
                Release(),
                f"{report.provider_status} after the deadline",
                by=Actor.SWEEPER,
            )
            return SweepOutcome.SALVAGE_RELEASED
        self._watch_again(job)
        return SweepOutcome.SALVAGE_WATCHING

    def _lost_create(self, job: Job) -> SweepOutcome:
        """Timed out with the create answer lost: find the task by our id where the dialect can;
        otherwise only its callback can adopt it."""
        provider = job.submitting_to
        assert provider is not None
        if not self._registry.adapter(provider).looks_up(job.kind):
            self._watch_again(job)
            return SweepOutcome.SALVAGE_AWAITING_CALLBACK
        try:
            report = self._registry.client(provider).query(job.job_id, job.kind)
        except ProviderError as error:
            if error.error_class is ProviderErrorClass.NOT_FOUND:
                stop_watching(
                    self._store, self._clock, job, Release(), "no task was created", by=Actor.SWEEPER
                )
                return SweepOutcome.SALVAGE_RELEASED
            self._watch_again(job, error.retry_after_s)
            return SweepOutcome.SALVAGE_POLL_FAILED
        assert report is not None
        self._adopt_late(job, provider, report.task_id)
        self._watch_again(job, 1)
        return SweepOutcome.SALVAGE_FOUND

    def _watch_again(self, job: Job, after_s: float | None = None) -> None:
        self._store.reschedule(
            job.job_id,
            status_in=frozenset({JobStatus.TIMED_OUT}),
            due_in_s=max(int(after_s or 0), self._salvage_poll_s if after_s is None else 1),
            increments={"polls": 1},
            guard=Guard.SALVAGING,
        )

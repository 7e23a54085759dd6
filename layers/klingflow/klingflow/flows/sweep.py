"""Sweeper: the safety net for every signal that never came.

Reads only the due jobs from the sparse index, polls their providers with bounded concurrency,
backs off, enforces each job's deadline, re-enqueues outputs that were never archived, hands
jobs waiting to be sent back to submit, and keeps watching timed-out tasks a provider may
still complete (`salvage.py`).
Two sweeps never overlap: a tick first takes the run lease (`jobs/leases.RunLease`, one item
in the table), and a tick that cannot take it visits nothing.
Callbacks are an optimisation; this is what guarantees that every job ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from aws_lambda_powertools import Logger

from klingflow.core.clock import Clock, epoch
from klingflow.core.codes import Actor, JobErrorCode
from klingflow.core.errors import ProviderError
from klingflow.core.models import DetailType, Job, progress_of
from klingflow.core.outcomes import SweepOutcome
from klingflow.core.states import TERMINAL, JobStatus
from klingflow.infra.events import EventPublisher
from klingflow.infra.queue import JobQueue
from klingflow.jobs.endings import announce, end_job
from klingflow.jobs.leases import RunLease
from klingflow.jobs.store import JobStore
from klingflow.jobs.submissions import expected_finish_s
from klingflow.money.pricing import charged
from klingflow.money.settlement import Money, Release, Settle
from klingflow.providers.registry import Registry

from .configs import SweepConfig
from .salvage import Salvager

logger = Logger(child=True)


def _epoch_of(moment: str) -> int:
    return epoch(datetime.fromisoformat(moment.replace("Z", "+00:00")))


_QUEUED = frozenset({JobStatus.QUEUED})
_POLLED = frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING})
_SUCCEEDED = frozenset({JobStatus.SUCCEEDED})
_FINISHED = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


def poll_workers(due: int, ceiling: int) -> int:
    """How many jobs a sweep visits at once: one for each due job, up to `ceiling`.

    A visit mostly waits on its provider (a poll) and then on one conditional write, so the
    sweep of a backlog takes about (backlog / workers) visits' time: the concurrency follows the
    backlog instead of queueing it behind a fixed handful of threads, and a quiet tick with a
    few jobs starts only a few.
    """
    return max(1, min(due, ceiling))


class Sweeper:
    def __init__(
        self,
        *,
        store: JobStore,
        queue: JobQueue,
        events: EventPublisher,
        registry: Registry,
        clock: Clock,
        config: SweepConfig,
        resolve_unknown: Callable[[str, str], Job | None],
        adopt_late: Callable[[Job, str, str], Job | None],
        submit_queue: JobQueue,
        lease: RunLease,
    ) -> None:
        self._store = store
        self._lease = lease
        self._queue = queue
        self._submit_queue = submit_queue
        self._events = events
        self._registry = registry
        self._clock = clock
        self._config = config
        self._resolve_unknown = resolve_unknown
        self._salvager = Salvager(
            store=store,
            queue=queue,
            events=events,
            registry=registry,
            clock=clock,
            adopt_late=adopt_late,
            salvage_window_s=config.salvage_window_s,
            salvage_poll_s=config.salvage_poll_s,
            archive_stall_s=config.archive_stall_s,
        )

    def sweep(self, *, time_left_s: Callable[[], float] = lambda: 60.0) -> Counter[SweepOutcome]:
        """One pass over the due jobs under the run lease; returns how many ended in each
        outcome (`OVERLAPPED` alone when another sweep holds the lease: nothing was visited)."""
        token = self._lease.take()
        if token is None:
            logger.warning("another sweep holds the lease: this tick visits nothing")
            return Counter({SweepOutcome.OVERLAPPED: 1})
        try:
            return self._sweep(time_left_s)
        finally:
            self._release(token)

    def _release(self, token: str) -> None:
        try:
            if not self._lease.release(token):
                logger.warning("the sweep's lease ran out before it ended: another may have started")
        except Exception:  # the lease then expires by itself; the sweep's own outcome stands
            logger.exception("the sweep's lease could not be given back")

    def _sweep(self, time_left_s: Callable[[], float]) -> Counter[SweepOutcome]:
        outcomes: Counter[SweepOutcome] = Counter()
        # Each job is handed to the pool as soon as its page is read, so the first polls are
        # under way while later pages load. The pool starts a thread for a job only when none
        # is idle: the visits in flight are poll_workers(due jobs, ceiling), no more.
        with ThreadPoolExecutor(
            max_workers=self._config.poll_concurrency, thread_name_prefix="sweep"
        ) as pool:
            visits = [
                pool.submit(self._visit, job, time_left_s)
                for job in self._store.due_jobs(limit=self._config.max_jobs_per_run)
            ]
            for visit in visits:
                outcomes[visit.result()] += 1
        workers = poll_workers(len(visits), self._config.poll_concurrency) if visits else 0
        logger.info("sweep done", extra={"due": len(visits), "workers": workers, "outcomes": dict(outcomes)})
        return outcomes

    def _visit(self, job: Job, time_left_s: Callable[[], float]) -> SweepOutcome:
        if time_left_s() < self._config.time_guard_s:
            return SweepOutcome.DEFERRED  # the next tick picks it up; never run past the function timeout
        try:
            return self._visit_one(job)
        except Exception:  # one bad job must not stop the sweep of the others
            logger.exception("sweep of job failed", extra={"job_id": job.job_id})
            # Step it back in the queue, or it would stand at the head of its shard every tick.
            active = frozenset({JobStatus.QUEUED, *_POLLED, *_SUCCEEDED})
            self._store.reschedule(
                job.job_id, status_in=active, due_in_s=self._backoff(job), increments={"polls": 1}
            )
            return SweepOutcome.ERROR

    def _visit_one(self, job: Job) -> SweepOutcome:
        if job.pending_event is not None:
            # Its publisher died or EventBridge refused: the outbox still owes this event.
            announced = announce(self._store, self._events, job, DetailType(job.pending_event))
            if job.status.terminal and not (announced and job.salvaging):
                if not announced:
                    self._store.reschedule(
                        job.job_id, status_in=TERMINAL, due_in_s=self._interval(job), increments={"polls": 1}
                    )
                return SweepOutcome.ANNOUNCED if announced else SweepOutcome.ANNOUNCE_FAILED
        now = self._clock.now()
        late = epoch(now) >= job.deadline_at
        match job.status:
            case JobStatus.QUEUED if late:
                return self._queued_past_deadline(job)
            case JobStatus.QUEUED:
                return self._lost_submission(job, now)
            case JobStatus.SUCCEEDED:
                return self._stalled_archive(job, now)
            case JobStatus.SUBMITTED | JobStatus.RUNNING:
                return self._poll(job, late=late)
            case JobStatus.TIMED_OUT if job.salvaging:
                return self._salvager.salvage(job, now)
            case _:
                return SweepOutcome.SKIPPED

    def _poll(self, job: Job, *, late: bool) -> SweepOutcome:
        assert job.provider is not None and job.provider_task_id is not None
        try:
            report = self._registry.job_report(job)
        except ProviderError as error:
            if late:
                return self._salvager.time_out(job, _POLLED, watch=True)
            delay = self._backoff(job, retry_after=error.retry_after_s)
            self._store.reschedule(job.job_id, status_in=_POLLED, due_in_s=delay, increments={"polls": 1})
            logger.warning(
                "poll failed", extra={"job_id": job.job_id, "error": error.message, "next_in_s": delay}
            )
            return SweepOutcome.POLL_FAILED
        if report.status in _FINISHED:
            # Finished, even if only just before the deadline: archive confirms and copies. The
            # job stays due in case that message is lost.
            self._queue.enqueue(job.job_id, f"sweeper-{report.provider_status}")
            self._store.reschedule(
                job.job_id,
                status_in=_POLLED,
                due_in_s=self._config.archive_stall_s,
                increments={"polls": 1},
                fields=progress_of(report, epoch(self._clock.now())),
            )
            return SweepOutcome.FINISHED
        if late:
            return self._salvager.time_out(job, _POLLED, watch=True)
        said = progress_of(report, epoch(self._clock.now()))
        delay = self._backoff(job, eta_at=said.get("eta_at", job.eta_at))
        if report.status is JobStatus.RUNNING and job.status is JobStatus.SUBMITTED:
            self._store.transition(
                job.job_id,
                JobStatus.RUNNING,
                by=Actor.SWEEPER,
                due_in_s=delay,
                increments={"polls": 1},
                fields=said,
            )
        else:
            self._store.reschedule(
                job.job_id, status_in=_POLLED, due_in_s=delay, increments={"polls": 1}, fields=said
            )
        return SweepOutcome.POLLED

    def _stalled_archive(self, job: Job, now: datetime) -> SweepOutcome:
        """The provider succeeded but the copy has not finished: try again, or give up visibly.

        A copy refused by policy (an output host outside the allowlist) is retried until the
        job's deadline, in case an operator allows the host, and then fails naming it; any other
        failure (a provider or a download that is down) is retried for ARCHIVE_DEADLINE_S more.
        """
        # A salvaged job succeeded after its deadline: its copy gets the same time from then.
        since = max(job.deadline_at, job.succeeded_at or 0)
        refused = (
            job.archive_error is not None and job.archive_error.code == JobErrorCode.OUTPUT_HOST_NOT_ALLOWED
        )
        gives_up = (
            max(job.deadline_at, (job.succeeded_at or 0) + self._config.archive_stall_s)
            if refused
            else since + self._config.archive_deadline_s
        )
        if epoch(now) >= gives_up:
            code, message = _why_not_archived(job, refused=refused)
            self._end(
                job,
                JobStatus.FAILED,
                code,
                message,
                _SUCCEEDED,
                # Paid for all the same: settled by the billing rule.
                money=Settle(charged(self._registry, job, None)),
            )
            return SweepOutcome.ARCHIVE_FAILED
        self._queue.enqueue(job.job_id, "sweeper-archive-stalled")
        next_look = min(self._config.archive_stall_s, max(1, gives_up - epoch(now)))
        self._store.reschedule(job.job_id, status_in=_SUCCEEDED, due_in_s=next_look)
        return SweepOutcome.RE_ENQUEUED

    def _end(
        self,
        job: Job,
        target: JobStatus,
        code: str,
        message: str,
        only_from: frozenset[JobStatus],
        *,
        money: Money,
    ) -> None:
        end_job(
            self._store,
            self._events,
            job.job_id,
            target,
            by=Actor.SWEEPER,
            code=code,
            message=message,
            only_from=only_from,
            money=money,
        )

    def _interval(self, job: Job) -> int:
        """Exponential from the first poll interval, capped."""
        interval: int = min(
            self._config.poll_max_interval_s, self._config.first_poll_s * 2 ** min(job.polls, 16)
        )
        return interval

    def _calls_back(self, job: Job) -> bool:
        """Whether the job's provider will call back (one since removed from the settings will not)."""
        if job.provider is None or job.provider not in self._registry.configs:
            return False
        return self._registry.adapter(job.provider).calls_back(job.kind)

    def _backoff(self, job: Job, retry_after: float | None = None, *, eta_at: int | None = None) -> int:
        """The next poll: exponential, at least Retry-After, not before the expected finish
        (`eta_at`, else the job's) of a job whose provider calls back (its callback is the
        news), never past the deadline."""
        delay = self._interval(job)
        if retry_after is not None:
            delay = max(delay, int(retry_after))
        now = epoch(self._clock.now())
        eta_at = job.eta_at if eta_at is None else eta_at
        if eta_at is not None and eta_at > now and self._calls_back(job):
            delay = max(delay, expected_finish_s(eta_at - now, delay))
        until_deadline = job.deadline_at - now
        return max(1, min(delay, until_deadline))

    def _queued_past_deadline(self, job: Job) -> SweepOutcome:
        """A job still QUEUED at its deadline: never sent (released), or sent with the answer lost
        (one last look; then watched, still reserved, in case the task exists after all)."""
        if job.submitting_to is None:
            return self._salvager.time_out(job, _QUEUED, watch=False)
        adapter = self._registry.adapter(job.submitting_to)
        if adapter.looks_up(job.kind):
            try:
                found = self._resolve_unknown(job.job_id, job.submitting_to)
            except ProviderError:
                found = None
            else:
                if found is None:  # the provider says it has no such task: nothing was charged
                    return self._salvager.time_out(job, _QUEUED, watch=False)
            if found is not None:
                return SweepOutcome.FOUND
        return self._salvager.time_out(job, _QUEUED, watch=True)

    def _lost_submission(self, job: Job, now: datetime) -> SweepOutcome:
        """A QUEUED job whose submitter vanished: look the task up, never resend blindly."""
        claimed_at, provider = self._store.submission_state(job.job_id)
        stalled = claimed_at is not None and epoch(now) - _epoch_of(claimed_at) >= self._config.submit_grace_s
        if provider is None and stalled:
            # Claimed long ago but no provider call was ever started: nothing was sent, and the
            # claim stops every retry from sending it. Say so rather than wait for the deadline.
            self._end(
                job,
                JobStatus.FAILED,
                JobErrorCode.SUBMIT_ABANDONED,
                "the submitter stopped before sending the job to any provider; nothing was charged",
                _QUEUED,
                money=Release(),
            )
            return SweepOutcome.ABANDONED
        if provider is None and claimed_at is None:
            # Not claimed: waiting to be sent again (its pinned provider said "not now"), or its
            # submit message was lost. Hand it (back) to the submit queue; a claim stops doubles.
            self._submit_queue.enqueue(job.job_id, "sweeper-resend")
            self._store.reschedule(job.job_id, status_in=_QUEUED, due_in_s=self._config.submit_grace_s)
            return SweepOutcome.RESENT
        if provider is None:
            # Claimed just now: its submitter is at work; the deadline ends the wait.
            self._store.reschedule(job.job_id, status_in=_QUEUED, due_in_s=self._config.submit_grace_s)
            return SweepOutcome.WAITING
        adapter = self._registry.adapter(provider)
        if not adapter.looks_up(job.kind) and adapter.calls_back(job.kind):
            # No way to ask, but the task (if it exists) will call back to this job's URL and
            # be adopted then; until the deadline, waiting is the only way not to pay twice.
            self._store.reschedule(
                job.job_id, status_in=_QUEUED, due_in_s=self._backoff(job), increments={"polls": 1}
            )
            return SweepOutcome.AWAITING_CALLBACK
        try:
            found = self._resolve_unknown(job.job_id, provider)
        except ProviderError as error:
            # Could not ask: that says nothing about whether the task exists. Ask again later.
            self._store.reschedule(
                job.job_id,
                status_in=_QUEUED,
                due_in_s=self._backoff(job, error.retry_after_s),
                increments={"polls": 1},
            )
            return SweepOutcome.LOOKUP_FAILED
        if found is not None:
            return SweepOutcome.FOUND
        self._end(
            job,
            JobStatus.FAILED,
            JobErrorCode.SUBMIT_OUTCOME_UNKNOWN,
            f"the submission to {provider} never reported back and {provider} has no such task; "
            "not resent to avoid paying twice",
            _QUEUED,
            # The provider says the task does not exist: nothing was charged.
            money=Release(),
        )
        return SweepOutcome.FAILED_UNKNOWN


def _why_not_archived(job: Job, *, refused: bool) -> tuple[str, str]:
    """Why a paid job's outputs were never copied: its output host refused, downloads that were
    not what they claimed (kept under quarantine/), or only the archive deadline passing."""
    problem = job.archive_error
    if refused and problem:
        return problem.code, problem.message
    last = f" ({problem.message})" if problem else ""
    if job.invalid_downloads:
        return JobErrorCode.OUTPUT_INVALID, (
            f"no download of the outputs was a video before the archive deadline: {job.invalid_downloads} "
            f"were not, and their bytes are kept under quarantine/{job.job_id}/{last}"
        )
    return (
        JobErrorCode.ARCHIVE_FAILED,
        f"the provider finished but its outputs were not copied before the archive deadline{last}",
    )

"""Callback: record a provider's hint and hand the job to archive. Never downloads.

A callback is a hint, not the truth: it can be late, repeated, reordered or forged. So the token
is checked before anything is read or written, a hint is recorded only when it is further along
than the last one, and terminal hints are confirmed by archive with the provider's own query
endpoint before anything is fetched. The whole thing must answer well inside the provider's
10 s timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from klingflow.core.clock import Clock, epoch
from klingflow.core.codes import Actor
from klingflow.core.errors import JobNotFound, KlingflowError
from klingflow.core.models import Job, progress_of
from klingflow.core.outcomes import CallbackOutcome, Done
from klingflow.core.states import JobStatus
from klingflow.core.tokens import CallbackSigner
from klingflow.infra.queue import JobQueue
from klingflow.jobs.callbacks import CallbackNews
from klingflow.jobs.store import JobStore
from klingflow.providers.registry import Registry

logger = Logger(child=True)

ACTIVE = frozenset({JobStatus.SUBMITTED, JobStatus.RUNNING, JobStatus.SUCCEEDED})
_CONFIRM = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class CallbackReceiver:
    def __init__(
        self,
        *,
        store: JobStore,
        queue: JobQueue,
        signer: CallbackSigner,
        registry: Registry,
        adopt: Callable[[Job, str, str], Job],
        adopt_late: Callable[[Job, str, str], Job | None],
        clock: Clock,
    ) -> None:
        self._clock = clock
        self._store = store
        self._queue = queue
        self._signer = signer
        self._registry = registry
        self._adopt = adopt
        self._adopt_late = adopt_late

    def receive(self, job_id: str, token: str, read_body: Callable[[], Any]) -> Done[CallbackOutcome]:
        """Returns what was done (for the log and the reply); raises JobNotFound on a bad token.

        The body is read only once the token is good: an unauthenticated caller cannot make us
        parse anything. The token names the provider, so the usual callback is one conditional
        write (and one send when it reports an end); anything unusual comes back from that
        write as the job was, and is decided from there.
        """
        signed = self._signer.verify(job_id, token)
        if signed is None:
            # Same answer as an unknown job: a guesser learns nothing, and nothing is written.
            raise JobNotFound("no such callback")
        body = read_body()
        if signed.provider is None:  # a URL from before tokens named the provider
            job = self._store.get(job_id)
            if job is None:
                raise JobNotFound("no such callback")
            return self._decide(job, body, provider=None, sent=False)
        try:
            report = self._registry.adapter(signed.provider).parse_callback(body)
        except (KlingflowError, ValueError, TypeError, KeyError) as error:
            # Unreadable, but it still says "look at this job": archive asks the provider.
            logger.warning("unreadable callback", extra={"job_id": job_id, "error": str(error)})
            self._queue.enqueue(job_id, "callback-unreadable")
            return Done(CallbackOutcome.QUEUED, "unreadable: archive asks the provider")
        said = progress_of(report, epoch(self._clock.now()))
        hint = None if report.status is JobStatus.SUBMITTED else report.status
        if hint is None and not said:
            return Done(CallbackOutcome.IGNORED, f"status {report.provider_status!r} moves nothing")
        sent = hint in _CONFIRM
        if sent:
            # Sent before the hint is recorded: if sending fails, the provider's retry finds the
            # hint unrecorded and tries again. A duplicate message only costs archive a query.
            self._queue.enqueue(job_id, f"callback-{report.provider_status}")
        news = CallbackNews(signed.provider, report.task_id, hint, report.provider_status, said)
        missed = self._store.record_callback(job_id, news, active=ACTIVE)
        if missed is None:
            if hint is None:
                return Done(CallbackOutcome.RECORDED, "progress")
            if hint is JobStatus.RUNNING:
                return Done(CallbackOutcome.RECORDED, "running")
            return Done(CallbackOutcome.QUEUED, f"{hint.value.lower()}: archive confirms")
        if missed.job is None:
            raise JobNotFound("no such callback")
        return self._decide(missed.job, body, provider=signed.provider, sent=sent)

    def _decide(self, job: Job, body: Any, *, provider: str | None, sent: bool) -> Done[CallbackOutcome]:
        """The slow path: a job that is not simply live at the callback's provider."""
        if job.provider is None and job.submitting_to is not None and provider in (None, job.submitting_to):
            adopted = self._adopt_unconfirmed(job, body)
            if isinstance(adopted, Done):
                return adopted
            job = adopted
            sent = False  # archive may have looked before the task was adopted: tell it again
        if provider is not None and job.provider is not None and provider != job.provider:
            return Done(CallbackOutcome.IGNORED, f"from {provider}; the job is at {job.provider}")
        if job.salvaging and job.provider is not None:
            return self._late_hint(job, body, sent=sent)
        if job.status.terminal or job.provider is None:
            return Done(CallbackOutcome.IGNORED, f"job is {job.status.value}")
        return self._hint(job, body, sent=sent)

    def _hint(self, job: Job, body: Any, *, sent: bool) -> Done[CallbackOutcome]:
        """Record a live job's hint if it moves the job forward; a terminal one goes to archive."""
        assert job.provider is not None
        job_id = job.job_id
        try:
            report = self._registry.adapter(job.provider).parse_callback(body)
        except (KlingflowError, ValueError, TypeError, KeyError) as error:
            # Unreadable, but it still says "look at this job": archive asks the provider.
            logger.warning("unreadable callback", extra={"job_id": job_id, "error": str(error)})
            self._queue.enqueue(job_id, "callback-unreadable")
            return Done(CallbackOutcome.QUEUED, "unreadable: archive asks the provider")
        if report.task_id not in (job.provider_task_id, job.external_task_id, job.job_id):
            logger.warning("callback for another task", extra={"job_id": job_id, "task_id": report.task_id})
            return Done(CallbackOutcome.IGNORED, "task id does not match")
        hint = report.status
        said = progress_of(report, epoch(self._clock.now()))
        if hint is None or hint is JobStatus.SUBMITTED:
            if said:
                self._store.touch(job_id, status_in=ACTIVE, fields=said)
                return Done(CallbackOutcome.RECORDED, "progress")
            return Done(CallbackOutcome.IGNORED, f"status {report.provider_status!r} moves nothing")
        if hint in _CONFIRM:
            # Queued before the hint is recorded: if queueing fails, the provider's retry finds
            # the hint unrecorded and tries again. A duplicate message only costs archive a query.
            if (job.hint_status.rank if job.hint_status else -1) >= hint.rank:
                return Done(CallbackOutcome.IGNORED, "duplicate or out of order")
            if not sent:
                self._queue.enqueue(job_id, f"callback-{report.provider_status}")
        if self._store.record_hint(job_id, hint, active=ACTIVE) is None:
            return Done(CallbackOutcome.IGNORED, "duplicate or out of order")
        if hint is JobStatus.RUNNING:
            moved = self._store.transition(
                job_id, JobStatus.RUNNING, by=Actor.CALLBACK, note=report.provider_status, fields=said
            )
            if moved is None and said:  # already RUNNING: the news is the progress
                self._store.touch(job_id, status_in=ACTIVE, fields=said)
            return Done(CallbackOutcome.RECORDED, "running")
        return Done(CallbackOutcome.QUEUED, f"{hint.value.lower()}: archive confirms")

    def _adopt_unconfirmed(self, job: Job, body: Any) -> Job | Done[CallbackOutcome]:
        """The create answer was lost (a timeout after sending), but the task exists and calls
        back to this job's own URL: adopt it instead of ever sending the job again (after the
        deadline too: if it completes, it was paid for)."""
        if not (job.status is JobStatus.QUEUED or job.salvaging):
            return job
        assert job.submitting_to is not None
        try:
            report = self._registry.adapter(job.submitting_to).parse_callback(body)
        except (KlingflowError, ValueError, TypeError, KeyError):
            return Done(CallbackOutcome.IGNORED, "unreadable callback for an unconfirmed submission")
        adopt = self._adopt_late if job.salvaging else self._adopt
        logger.info("adopted task from callback", extra={"job_id": job.job_id, "task_id": report.task_id})
        return adopt(job, job.submitting_to, report.task_id) or job

    def _late_hint(self, job: Job, body: Any, *, sent: bool) -> Done[CallbackOutcome]:
        """A timed-out job's task reports in: its end goes to archive, which asks the provider
        and salvages the output (or releases the reservation if the task failed)."""
        assert job.provider is not None
        try:
            report = self._registry.adapter(job.provider).parse_callback(body)
        except (KlingflowError, ValueError, TypeError, KeyError):
            self._queue.enqueue(job.job_id, "callback-late-unreadable")
            return Done(CallbackOutcome.QUEUED, "unreadable, after the deadline: archive asks the provider")
        if report.status not in _CONFIRM:
            return Done(CallbackOutcome.IGNORED, f"status {report.provider_status!r} after the deadline")
        if not sent:
            self._queue.enqueue(job.job_id, f"callback-late-{report.provider_status}")
        return Done(CallbackOutcome.QUEUED, "completed after the deadline: salvage")

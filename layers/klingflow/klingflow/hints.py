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

from .errors import JobNotFound, KlingflowError
from .models import Job
from .providers.registry import Registry
from .queue import JobQueue
from .states import JobStatus
from .store import JobStore
from .tokens import CallbackSigner

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
    ) -> None:
        self._store = store
        self._queue = queue
        self._signer = signer
        self._registry = registry
        self._adopt = adopt

    def receive(self, job_id: str, token: str, body: Any) -> str:
        """Returns what was done (for the log and the reply); raises JobNotFound on a bad token."""
        if not self._signer.verify(job_id, token):
            # Same answer as an unknown job: a guesser learns nothing, and nothing is written.
            raise JobNotFound("no such callback")
        job = self._store.get(job_id)
        if job is None:
            raise JobNotFound("no such callback")
        if job.status is JobStatus.QUEUED and job.submitting_to:
            # The create answer was lost (a timeout after sending), but the task exists and calls
            # back to this job's own URL: adopt it instead of ever sending the job again.
            try:
                report = self._registry.adapter(job.submitting_to).parse_callback(body)
            except (KlingflowError, ValueError, TypeError, KeyError):
                return "ignored: unreadable callback for an unconfirmed submission"
            job = self._adopt(job, job.submitting_to, report.task_id)
            logger.info("adopted task from callback", extra={"job_id": job_id, "task_id": report.task_id})
        if job.status.terminal or job.provider is None:
            return "ignored: job is " + job.status.value
        try:
            report = self._registry.adapter(job.provider).parse_callback(body)
        except (KlingflowError, ValueError, TypeError, KeyError) as error:
            # Unreadable, but it still says "look at this job": archive asks the provider.
            logger.warning("unreadable callback", extra={"job_id": job_id, "error": str(error)})
            self._queue.enqueue(job_id, "callback-unreadable")
            return "queued for confirmation"
        if report.task_id not in (job.provider_task_id, job.external_task_id, job.job_id):
            logger.warning("callback for another task", extra={"job_id": job_id, "task_id": report.task_id})
            return "ignored: task id does not match"
        hint = report.status
        if hint is None or hint is JobStatus.SUBMITTED:
            return f"ignored: status {report.provider_status!r} moves nothing"
        if hint in _CONFIRM:
            # Queued before the hint is recorded: if queueing fails, the provider's retry finds
            # the hint unrecorded and tries again. A duplicate message only costs archive a query.
            if (job.hint_status.rank if job.hint_status else -1) >= hint.rank:
                return "ignored: duplicate or out of order"
            self._queue.enqueue(job_id, f"callback-{report.provider_status}")
        if self._store.record_hint(job_id, hint, active=ACTIVE) is None:
            return "ignored: duplicate or out of order"
        if hint is JobStatus.RUNNING:
            self._store.transition(job_id, JobStatus.RUNNING, by="callback", note=report.provider_status)
            return "recorded: running"
        return f"recorded: {hint.value.lower()}, queued for archive"

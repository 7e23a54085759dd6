"""What happened to a submission, written down: its attempts, SUBMITTED or FAILED, the events.

Shared by submit, by the sweeper (which resolves submissions whose submitter vanished) and by
the callback (which adopts a task whose create answer was lost). Its own module so that the
callback, which only ever adopts, does not load intake's request parsing and media probing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from klingflow.core.clock import Clock, epoch, iso
from klingflow.core.codes import Actor, AttemptOutcome, JobErrorCode, ProviderErrorClass
from klingflow.core.errors import ProviderError
from klingflow.core.models import Attempt, Cost, DetailType, Job, JobPatch, progress_patch
from klingflow.core.states import JobStatus
from klingflow.infra.events import EventPublisher
from klingflow.money.ledger import usd
from klingflow.money.pricing import estimate, provider_reserved_usd
from klingflow.money.settlement import Money, Release
from klingflow.providers.base import Submission
from klingflow.providers.telemetry import ProviderMetrics

from .endings import announce, end_job
from .items import NoRoom
from .writes import Guard

if TYPE_CHECKING:
    from klingflow.infra.queue import JobQueue
    from klingflow.providers.registry import Registry

    from .store import JobStore

logger = Logger(child=True)
_QUEUED = frozenset({JobStatus.QUEUED})
# A provider that calls back does so when the task ends, and retries 3 times 10 s apart: a job
# is first looked at this long after the provider expects it done.
CALLBACK_GRACE_S = 60
# The longest estimate believed: a task takes minutes (an element ~10); an estimate of hours is
# a unit mistaken, and would leave a job whose callback was lost unlooked-at until its deadline.
MAX_ESTIMATE_S = 3600


def expected_finish_s(eta_s: float | None, otherwise_s: int) -> int:
    """When to first poll a job whose provider calls back: at its expected finish (the provider's
    estimate, at most MAX_ESTIMATE_S), plus the callback's own retries; without one, `otherwise_s`."""
    return int(min(eta_s, MAX_ESTIMATE_S)) + CALLBACK_GRACE_S if eta_s else otherwise_s


class SubmissionRecorder:
    """Writes what happened to a submission: attempts, SUBMITTED or FAILED, and the events.

    Shared by submit and by the sweeper, which resolves submissions whose submitter vanished.
    """

    def __init__(
        self,
        *,
        store: JobStore,
        events: EventPublisher,
        registry: Registry,
        clock: Clock,
        first_poll_with_callback_s: int,
        first_poll_without_callback_s: int,
        metrics: ProviderMetrics | None = None,
        archive_queue: JobQueue | None = None,
    ) -> None:
        self._archive_queue = archive_queue
        self._store = store
        self._events = events
        self._registry = registry
        self._metrics = metrics or ProviderMetrics(namespace=None)
        self._clock = clock
        self._first_poll_with_callback_s = first_poll_with_callback_s
        self._first_poll_without_callback_s = first_poll_without_callback_s

    def resolve_unknown(self, job_id: str, provider: str) -> Job | None:
        """Look a task up by the id we gave it; the job moves to SUBMITTED when it exists."""
        job = self._store.get(job_id)
        client = self._registry.client(provider)
        if job is None or not client.adapter.looks_up(job.kind):
            return None
        try:
            report = client.query(job_id, job.kind)
        except ProviderError as error:
            self.attempt(
                job_id, provider, AttemptOutcome.lookup_failed(error.error_class), None, error.message
            )
            if error.error_class is ProviderErrorClass.NOT_FOUND:
                return None
            raise  # "could not ask" is not "not there"
        assert report is not None  # looks_up() promised a query for this kind
        self.attempt(job_id, provider, AttemptOutcome.FOUND_BY_LOOKUP, None, report.task_id)
        return self.submitted(job, provider, Submission(report.task_id))

    def submitted(self, job: Job, provider: str, submission: Submission) -> Job:
        adapter = self._registry.adapter(provider)
        task_id = submission.task_id
        eta_s = submission.eta_s or adapter.typical_eta_s(job.kind)
        first_poll = (
            expected_finish_s(eta_s, self._first_poll_with_callback_s)
            if adapter.calls_back(job.kind)
            else self._first_poll_without_callback_s
        )
        # Never first looked at after the deadline: that look is what enforces it.
        first_poll = max(1, min(first_poll, job.deadline_at - epoch(self._clock.now())))
        fields: JobPatch = {
            "provider": provider,
            "provider_task_id": task_id,
            "external_task_id": job.job_id if adapter.looks_up(job.kind) else None,
            "cost": Cost(
                estimated_usd=estimate(self._registry, provider, job.parsed_request, job.inputs).usd,
                currency=self._registry.configs[provider].currency,
            ).model_dump(mode="json", exclude_none=True),
        }
        fields.update(
            progress_patch(
                progress=None,
                eta_s=eta_s,
                message=None,
                now=epoch(self._clock.now()),
            )
        )
        if submission.element_id is not None:
            # The provider made it while we waited (gateway elements): its answer is the outcome,
            # so archive can finish the job now instead of polling for a task that is not there.
            fields["element_id"] = submission.element_id
            first_poll = 0
        moved = self._store.transition(
            job.job_id,
            JobStatus.SUBMITTED,
            by=Actor.SUBMIT,
            note=f"{provider} task {task_id}",
            fields=fields,
            due_in_s=first_poll,
            announce=DetailType.SUBMITTED.value,
        )
        if moved is None:
            current = self._store.get(job.job_id) or job
            if current.salvaging and current.provider is None:
                # The answer came after the deadline timed the job out: the task is ours to watch.
                return self.adopt_late(current, provider, task_id) or current
            return current
        announce(self._store, self._events, moved, DetailType.SUBMITTED)
        if submission.element_id is not None and self._archive_queue is not None:
            self._archive_queue.enqueue(job.job_id, "made-synchronously")
        return moved

    def hold_reserved(self, job: Job, claim: str, provider: str, submission: Submission) -> None:
        """The provider set aside more than the job's reservation (evolink's
        `usage.credits_reserved`): the reservation rises to its figure, the most it will charge,
        if the day can hold the difference. If not, the reservation stays and whatever the
        provider charges beyond it is settled and counted as an overrun."""
        held = job.reservation
        reserved = provider_reserved_usd(self._registry, provider, submission)
        if held is None or reserved is None or usd(reserved) <= usd(held.usd):
            return
        try:
            self._store.move_reservation(job, claim, provider, reserved)
        except NoRoom:
            logger.warning(
                "the provider reserved more than the day can hold; any excess charged is an overrun",
                extra={
                    "job_id": job.job_id,
                    "provider": provider,
                    "held_usd": held.usd,
                    "reserved_usd": reserved,
                },
            )

    def element_deleted(self, job_id: str, element_id: str) -> Job:
        """A job whose element was deleted while it waited ends here, never sent, released."""
        return self.fail(
            job_id,
            JobErrorCode.ELEMENT_DELETED,
            f"element {element_id} was deleted after the job was accepted; the job was not sent "
            "and nothing was charged: submit it again without that element",
        )

    def adopt_late(self, job: Job, provider: str, task_id: str) -> Job | None:
        """A timed-out job whose create answer was lost turns out to have a task (found by
        lookup, or calling back): record it, so the salvage watch follows that task."""
        adapter = self._registry.adapter(provider)
        self.attempt(job.job_id, provider, AttemptOutcome.FOUND_AFTER_DEADLINE, None, task_id)
        return self._store.touch(
            job.job_id,
            status_in=frozenset({JobStatus.TIMED_OUT}),
            fields={
                "provider": provider,
                "provider_task_id": task_id,
                "external_task_id": job.job_id if adapter.looks_up(job.kind) else None,
            },
            guard=Guard.NO_TASK_YET,
        )

    def fail(
        self,
        job_id: str,
        code: JobErrorCode,
        message: str,
        *,
        money: Money | None = None,
        budget: dict[str, float] | None = None,
    ) -> Job:
        """End a job that never reached a provider (QUEUED); its reservation is released unless
        `money` says otherwise (a submission whose outcome is unknown keeps it)."""
        failed = end_job(
            self._store,
            self._events,
            job_id,
            JobStatus.FAILED,
            by=Actor.SUBMIT,
            code=code,
            message=message,
            only_from=_QUEUED,
            money=money or Release(),
            budget=budget,
        )
        if failed is None:
            current = self._store.get(job_id)
            assert current is not None
            return current
        return failed

    def attempt(
        self, job_id: str, provider: str, outcome: AttemptOutcome, latency_ms: int | None, detail: str | None
    ) -> None:
        self._metrics.call(provider, outcome, latency_ms)
        self._store.add_attempt(
            job_id,
            Attempt(
                provider=provider,
                outcome=outcome,
                at=iso(self._clock.now()),
                latency_ms=latency_ms,
                detail=detail,
            ),
        )

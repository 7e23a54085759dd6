"""Dispatch: send a stored job to a provider, paying at most once.

The claim that makes this submitter the job's only sender reserves its estimate in the same
write; then the candidates are tried in turn (fail-over moves the one reservation), a pinned
provider's "not now" makes the job wait to be sent again, and a request whose outcome is
unknown is looked up, never sent twice.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from klingflow.core.clock import Clock, epoch
from klingflow.core.codes import AttemptOutcome, JobErrorCode, ProviderErrorClass
from klingflow.core.errors import BudgetExceeded, ProviderError, Refused
from klingflow.core.kinds import AnyRequest, Billing, with_media
from klingflow.core.models import Job
from klingflow.core.outcomes import Done, SubmitOutcome
from klingflow.core.states import JobStatus
from klingflow.core.tokens import CallbackSigner
from klingflow.jobs.items import ElementDeleted, NoRoom
from klingflow.jobs.reservations import Claim
from klingflow.jobs.store import JobStore
from klingflow.jobs.submissions import SubmissionRecorder
from klingflow.jobs.writes import ClaimHeld
from klingflow.money.ledger import Ledger, usd
from klingflow.money.pricing import billing_of
from klingflow.money.settlement import Keep
from klingflow.providers.base import TaskSpec
from klingflow.providers.health import Breakers
from klingflow.providers.registry import Registry

from .configs import DispatchConfig
from .inputs import Inputs

logger = Logger(child=True)

_QUEUED = frozenset({JobStatus.QUEUED})
# Failures another provider may not share: try the next candidate.
FAIL_OVER = frozenset(
    {
        ProviderErrorClass.PROVIDER_DOWN,
        ProviderErrorClass.RATE_LIMITED,
        ProviderErrorClass.CONCURRENCY_LIMIT,
        ProviderErrorClass.INSUFFICIENT_BALANCE,
        ProviderErrorClass.AUTH,
        # A missing route or model at one provider (404 / Kling 1202-1203) is not the request's fault.
        ProviderErrorClass.NOT_FOUND,
    }
)
# "Not now" answers: a job pinned to the provider that gave one waits and asks again later.
WAIT = frozenset(
    {
        ProviderErrorClass.PROVIDER_DOWN,
        ProviderErrorClass.RATE_LIMITED,
        ProviderErrorClass.CONCURRENCY_LIMIT,
    }
)


class Dispatcher:
    def __init__(
        self,
        *,
        store: JobStore,
        registry: Registry,
        ledger: Ledger,
        breakers: Breakers,
        recorder: SubmissionRecorder,
        inputs: Inputs,
        signer: CallbackSigner,
        api_url: Callable[[], str],
        clock: Clock,
        config: DispatchConfig,
    ) -> None:
        self._store = store
        self._registry = registry
        self._ledger = ledger
        self._breakers = breakers
        self._recorder = recorder
        self._inputs = inputs
        self._signer = signer
        self._api_url = api_url
        self._clock = clock
        self._config = config

    def submit_queued(self, job_id: str) -> tuple[Done[SubmitOutcome], Job | None]:
        """Send a job taken from the submit queue (every source queues the jobs it accepts);
        anything but a QUEUED job is left as it is. Also returns the job as it was left (None
        for an unknown job)."""
        job = self._store.get(job_id)
        if job is None or job.status is not JobStatus.QUEUED:
            return Done(SubmitOutcome.IGNORED, job.status.value if job else "unknown job"), job
        after = self.submit(job)
        outcome = {
            JobStatus.QUEUED: SubmitOutcome.WAITING,
            JobStatus.FAILED: SubmitOutcome.FAILED,
            JobStatus.CANCELLED: SubmitOutcome.IGNORED,
        }.get(after.status, SubmitOutcome.SENT)
        detail = f"{after.status.value} {after.provider or after.submitting_to or ''}".strip()
        return Done(outcome, detail), after

    def submit(self, job: Job) -> Job:
        """Send a QUEUED job to the first candidate that takes it; at most one paid submission.

        Claiming the job reserves its estimate against today's budget in the same write; on
        fail-over the one reservation moves to the next provider's estimate. A job pinned to a
        provider that says "not now" keeps its reservation and waits to be sent again.
        """
        request = job.parsed_request
        if missing := self._inputs.missing(request):
            # Its intake stopped between storing the job and its image (`Inputs.write`), and no
            # retry of the request came to write it: a provider would be sent a link to nothing.
            return self._recorder.fail(
                job.job_id,
                JobErrorCode.INPUT_MISSING,
                f"the base64 image given as {', '.join(missing)} was never stored (its intake was "
                "interrupted); nothing was sent or charged: send the request again",
            )
        billing = billing_of(request, job.inputs)
        try:
            estimates = self.affordable(request, billing, self._registry.candidates(request, billing))
        except Refused as refusal:
            # Nothing can take it now (disabled, no keys, dearer than MaxJobCostUsd): say so
            # instead of retrying until the deadline. Nothing was sent or charged.
            return self._recorder.fail(job.job_id, refusal.code, refusal.message, budget=_budget_of(refusal))
        candidates = list(estimates)
        # Everything that can fail before a provider is called (secrets, the API URL, presigning)
        # happens before the claim, so such a failure leaves the job for the trigger's retry.
        specs = self._specs(job, request, billing, candidates)
        claim = uuid.uuid4().hex
        try:
            # The claim also checks, in its one write, that no element the job names was deleted.
            elements = getattr(request, "elements", None) or ()
            outcome, claimed = self._store.reserve_and_claim(
                job, claim, candidates[0], estimates[candidates[0]], elements=elements
            )
        except ElementDeleted as deleted:
            return self._recorder.element_deleted(job.job_id, deleted.element_id)
        if outcome is Claim.NO_ROOM:
            day = self._ledger.today()
            exceeded = self._ledger.exceeded(estimates[candidates[0]], self._ledger.remaining(day), day)
            return self._recorder.fail(job.job_id, exceeded.code, exceeded.message, budget=exceeded.budget)
        if claimed is None:
            logger.info("another submitter holds this job", extra={"job_id": job.job_id})
            return self._store.get(job.job_id) or job
        return self._send(claimed, claim, candidates, estimates, specs, pinned=request.provider is not None)

    def _send(
        self,
        job: Job,
        claim: str,
        candidates: list[str],
        estimates: dict[str, float],
        specs: dict[str, TaskSpec],
        *,
        pinned: bool,
    ) -> Job:
        """Walk the candidates under our claim until one takes the job (or says wait)."""
        failures: list[str] = []
        skipped: Counter[str] = Counter()
        code = JobErrorCode.ALL_PROVIDERS_FAILED
        for provider in candidates:
            if not self._allowed(provider):
                # Its breaker is open: skipping it costs nothing and says so in the attempts.
                self._recorder.attempt(
                    job.job_id, provider, AttemptOutcome.SKIPPED_UNHEALTHY, None, "circuit breaker open"
                )
                if pinned:
                    return self._wait(job, claim, provider, self._config.breaker_cool_down_s, "breaker open")
                failures.append(f"{provider}: skipped (circuit breaker open)")
                skipped["unhealthy"] += 1
                continue
            try:
                moved = self._store.move_reservation(job, claim, provider, estimates[provider])
            except NoRoom:
                self._best_effort(
                    self._recorder.attempt,
                    job.job_id,
                    provider,
                    AttemptOutcome.SKIPPED_BUDGET,
                    None,
                    "over today's budget",
                )
                failures.append(f"{provider}: skipped (${estimates[provider]} does not fit today's budget)")
                skipped["budget"] += 1
                continue
            if moved is None:  # cancelled meanwhile, or the claim was lost: nothing more to do
                return self._store.get(job.job_id) or job
            job = moved
            outcome = self._try(job, provider, specs[provider], claim)
            if isinstance(outcome, Job):
                return outcome
            if pinned and outcome.error_class in WAIT:
                return self._wait(job, claim, provider, outcome.retry_after_s, outcome.message)
            failures.append(f"{provider}: {outcome.error_class.value} ({outcome.message})")
            if outcome.error_class not in FAIL_OVER:
                # Invalid request or content policy: another provider would say the same.
                code = JobErrorCode.PROVIDER_REJECTED
                break
        if failures and skipped["unhealthy"] == len(failures):
            code = JobErrorCode.NO_HEALTHY_PROVIDER
        elif failures and skipped["budget"] == len(failures):
            code = BudgetExceeded.code
        return self._recorder.fail(job.job_id, code, "; ".join(failures))

    def affordable(self, request: AnyRequest, billing: Billing, candidates: list[str]) -> dict[str, float]:
        """The candidates whose estimate (USD) is within MaxJobCostUsd, cheapest first; refuses
        when none is."""
        estimates = {name: self._registry.price_usd(name, request.kind, billing) for name in candidates}
        most = usd(self._ledger.budget.max_job_usd)
        kept = {name: price for name, price in estimates.items() if usd(price) <= most}
        if not kept:
            self._ledger.check_job(estimates[candidates[0]])
        return kept

    def _wait(self, job: Job, claim: str, provider: str, retry_after_s: float | None, why: str) -> Job:
        """A pinned provider said "not now": give up the claim (nothing was sent), keep the
        reservation, and come due again after Retry-After or a growing backoff. The sweeper
        hands the job back to the submit queue then; its deadline ends the waiting."""
        backoff = min(self._config.retry_max_s, self._config.retry_base_s * 2 ** min(job.send_retries, 16))
        delay = max(backoff, int(retry_after_s or 0))
        delay = max(1, min(delay, job.deadline_at - epoch(self._clock.now())))
        self._best_effort(
            self._recorder.attempt,
            job.job_id,
            provider,
            AttemptOutcome.WAITING,
            None,
            f"again in {delay} s: {why}",
        )
        waiting = self._store.touch(
            job.job_id,
            status_in=_QUEUED,
            due_in_s=delay,
            increments={"send_retries": 1},
            removes=("submit_claim", "submit_claimed_at", "submitting_to"),
            guard=ClaimHeld(claim),
        )
        return waiting or self._store.get(job.job_id) or job

    def _allowed(self, provider: str) -> bool:
        try:
            return self._breakers.allows(provider)
        except Exception:  # the breaker's table is unavailable: fail open, the call decides
            logger.exception("circuit breaker unavailable", extra={"provider": provider})
            return True

    def _specs(
        self, job: Job, request: AnyRequest, billing: Billing, candidates: list[str]
    ) -> dict[str, TaskSpec]:
        """One spec per candidate: the same links to the media; a callback URL where one is sent."""
        sent = with_media(
            request, {media.name: self._inputs.provider_url(media.ref) for media in request.media()}
        )
        api_url: str | None = None
        specs = {}
        for provider in candidates:
            adapter = self._registry.client(provider).adapter  # reads the provider's credentials
            callback: str | None = None
            if adapter.calls_back(request.kind):
                # Its own URL per provider: the callback then says whose dialect it speaks.
                api_url = api_url or self._api_url()  # read once
                callback = self._signer.callback_url(api_url, job.job_id, provider)
            specs[provider] = TaskSpec(
                job_id=job.job_id, request=sent, callback_url=callback, billing=billing
            )
        return specs

    def _try(self, job: Job, provider: str, spec: TaskSpec, claim: str) -> Job | ProviderError:
        client = self._registry.client(provider)
        # Recorded before sending, so whoever finds this job later knows where to look it up.
        if self._store.touch(job.job_id, status_in=_QUEUED, fields={"submitting_to": provider}) is None:
            return self._store.get(job.job_id) or job
        started = time.monotonic()
        try:
            submission, _ = client.create(spec)
        except ProviderError as error:
            latency = int((time.monotonic() - started) * 1000)
            self._best_effort(
                self._recorder.attempt,
                job.job_id,
                provider,
                AttemptOutcome.failed(error.error_class),
                latency,
                error.message,
            )
            if not error.request_may_have_landed:
                self._best_effort(self._breakers.record_answer, provider, error.error_class)
                return error
            return self._unknown_outcome(job, provider, error)
        latency = int((time.monotonic() - started) * 1000)
        # Bookkeeping is best effort: once the provider has the task, nothing may undo that.
        self._best_effort(
            self._recorder.attempt,
            job.job_id,
            provider,
            AttemptOutcome.SUBMITTED,
            latency,
            submission.task_id,
        )
        self._best_effort(self._recorder.hold_reserved, job, claim, provider, submission)
        submitted = self._recorder.submitted(job, provider, submission)
        self._best_effort(self._breakers.record_answer, provider, None)
        return submitted

    def _unknown_outcome(self, job: Job, provider: str, error: ProviderError) -> Job | ProviderError:
        """The provider may have created the task: find it, or wait for it; never send it again.

        One case is decided at once: the provider answered (500, 502, 504) and a lookup by our
        own task id says no such task exists. It finished handling the request without making
        a task, so nothing was charged and the job may fail over.
        """
        adapter = self._registry.adapter(provider)
        asked = False
        try:
            found = self._recorder.resolve_unknown(job.job_id, provider)
            asked = adapter.looks_up(job.kind)
        except ProviderError:
            found = None  # the lookup itself failed: try again later, below
        self._best_effort(self._breakers.record_answer, provider, None if found else error.error_class)
        if found is not None:
            return found
        if asked and error.status_code is not None:
            return ProviderError(
                provider,
                ProviderErrorClass.PROVIDER_DOWN,
                f"answered HTTP {error.status_code} and has no task {job.job_id}: not created",
                status_code=error.status_code,
            )
        if adapter.looks_up(job.kind) or adapter.calls_back(job.kind):
            # Not visible yet is not "never created": the job stays QUEUED under our claim. The
            # sweeper looks it up again, or the task's own callback (its URL names this job)
            # adopts it; only then, or at the deadline, is the outcome decided.
            waiting = (
                AttemptOutcome.LOOKUP_DEFERRED
                if adapter.looks_up(job.kind)
                else AttemptOutcome.AWAITING_CALLBACK
            )
            self._best_effort(
                self._recorder.attempt, job.job_id, provider, waiting, None, "task not found yet"
            )
            return self._store.get(job.job_id) or job
        return self._recorder.fail(
            job.job_id,
            JobErrorCode.SUBMIT_OUTCOME_UNKNOWN,
            f"{provider} did not answer after the request was sent and the task cannot be looked "
            f"up; not resent to avoid paying twice ({error.message})",
            money=Keep(),
        )

    @staticmethod
    def _best_effort(action: Callable[..., object], *args: Any) -> None:
        """Health and attempt bookkeeping: a failure there is logged, never allowed to strand a job."""
        try:
            action(*args)
        except Exception:
            logger.exception(
                "bookkeeping failed; the job carries on", extra={"action": getattr(action, "__name__", "")}
            )


def _budget_of(refusal: Refused) -> dict[str, float] | None:
    return refusal.budget if isinstance(refusal, BudgetExceeded) else None

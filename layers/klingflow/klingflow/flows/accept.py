"""Accept: turn a request into a QUEUED job, or refuse it saying why; quote one without storing.

Order matters for money: validate and probe everything first (nothing is spent on a request a
provider would reject), then store the job; only then may the dispatcher claim and send it.
Every source (POST /jobs, a manifest under incoming/, a `Job Requested` event) stops there and
hands the job to the submit queue: only its consumer calls providers, so the queue's
`MaximumConcurrency` (`SubmitConcurrency`) is the one cap on provider calls, whichever way the
jobs came.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from ulid import ULID

from klingflow.core.clock import Clock, epoch, iso
from klingflow.core.codes import Actor
from klingflow.core.errors import (
    FieldError,
    IdempotencyConflict,
    KlingflowError,
    NoProviderAvailable,
    Refused,
    RequestRejected,
)
from klingflow.core.kinds import AnyRequest, Billing, JobKind, parse_request, with_media
from klingflow.core.models import Cost, DetailType, HistoryEntry, Job, JobError, JobEventDetail, Source
from klingflow.core.states import JobStatus
from klingflow.core.webhookurls import check_webhook_url
from klingflow.infra.events import EventPublisher
from klingflow.infra.queue import JobQueue
from klingflow.jobs.creation import refuse_unstorable
from klingflow.jobs.elements import ElementDirectory
from klingflow.jobs.store import JobStore
from klingflow.money.ledger import Ledger, usd
from klingflow.money.pricing import billing_of
from klingflow.providers.registry import Registry

from .configs import AcceptConfig
from .dispatch import Dispatcher
from .inputs import Input, Inputs

logger = Logger(child=True)


class Acceptor:
    def __init__(
        self,
        *,
        store: JobStore,
        events: EventPublisher,
        registry: Registry,
        elements: ElementDirectory,
        ledger: Ledger,
        inputs: Inputs,
        dispatcher: Dispatcher,
        submit_queue: JobQueue,
        clock: Clock,
        config: AcceptConfig,
    ) -> None:
        self._store = store
        self._events = events
        self._registry = registry
        self._elements = elements
        self._ledger = ledger
        self._inputs = inputs
        self._dispatcher = dispatcher
        self._submit_queue = submit_queue
        self._clock = clock
        self._config = config

    def accept(self, data: Any, source: Source, *, idempotency_key: str | None = None) -> Job:
        """Validate and store one request as a QUEUED job, and hand it to the submit queue
        (provider calls and fail-over happen there, off the trigger's clock). Rejections raise
        RequestRejected and emit `Job Rejected`; a request seen before (same idempotency key)
        returns its first job, handed to the queue again while it is still QUEUED."""
        fingerprint = request_sha256(data)
        try:
            request = parse_request(data)
            if request.webhook is not None:
                check_webhook_url(request.webhook.url, allow_loopback_http=self._config.allow_loopback_http)
            key = request.idempotency_key or idempotency_key
            if key is not None and (seen := self._store.job_for_key(key)) is not None:
                # Before any check that could now refuse it (today's budget): a retry gets its job.
                _same_request(seen, key, fingerprint)
                self._inputs.restore(seen, request)
                return self._again(seen)
            job_id, request, inputs, estimates = self._priced(request)
        except Refused as rejection:
            self.reject(data, source, rejection)
            raise
        cheapest = next(iter(estimates.values()))
        job = self._new_job(
            job_id, request, source=source, inputs=inputs, cheapest=cheapest, fingerprint=fingerprint
        )
        try:
            stored, created = self._store.create(job, idempotency_key=key)
            if not created:
                _same_request(stored, key, fingerprint)
        except Refused as rejection:  # a value the table cannot hold, or the key's other request
            self.reject(data, source, rejection)
            raise
        if not created:
            self._inputs.restore(stored, request)
            return self._again(stored)
        self._inputs.write(inputs)  # before the job is queued: its sender reads the image
        self._queue(stored.job_id, "accepted")
        return stored

    def _queue(self, job_id: str, reason: str) -> None:
        """Hand a stored job to the submit queue. A failed send is not the caller's failure:
        the job is stored, and the sweeper sends a QUEUED job nobody claimed after
        `submit_grace_s`; a 500 here would invite a retry that makes a second job."""
        try:
            self._submit_queue.enqueue(job_id, reason)
        except (BotoCoreError, ClientError) as error:
            logger.warning(
                "the submit queue refused a stored job: the sweeper sends it",
                extra={"job_id": job_id, "error": str(error), "after_s": self._config.submit_grace_s},
            )

    def _priced(self, request: AnyRequest) -> tuple[str, AnyRequest, dict[str, Input], dict[str, float]]:
        """A new request placed (with its elements' holder), its media inspected and its
        candidates priced, cheapest first; refused when none can take it today."""
        # Elements live in one account: the job goes to their holder (or is refused).
        placed = self._elements.place(request)
        job_id = str(ULID.from_datetime(self._clock.now()))
        inputs = self._inputs.inspect(job_id, placed)
        billing = billing_of(placed, {name: value.facts for name, value in inputs.items()})
        candidates = self._holder_candidates(request, placed, billing)
        estimates = self._dispatcher.affordable(placed, billing, candidates)
        # Not the reservation (that is atomic, when the job is claimed for sending), but a
        # request that cannot fit today is refused now rather than accepted to fail.
        self._ledger.check_fits(next(iter(estimates.values())))
        return job_id, placed, inputs, estimates

    def _new_job(
        self,
        job_id: str,
        request: AnyRequest,
        *,
        source: Source,
        inputs: dict[str, Input],
        cheapest: float,
        fingerprint: str,
    ) -> Job:
        now = self._clock.now()
        deadline_s = request.deadline_s or self._config.job_deadline_s
        stored_media = {name: value.key or value.url or "" for name, value in inputs.items()}
        return Job(
            job_id=job_id,
            kind=request.kind,
            status=JobStatus.QUEUED,
            request=with_media(request, stored_media).model_dump(mode="json", exclude_none=True),
            source=source,
            created_at=iso(now),
            updated_at=iso(now),
            deadline_at=epoch(now) + deadline_s,
            inputs={name: value.facts for name, value in inputs.items()},
            cost=Cost(estimated_usd=cheapest),
            metadata=request.metadata,
            request_sha256=fingerprint,
            due_at=epoch(now) + min(self._config.submit_grace_s, deadline_s),
            history=[
                HistoryEntry(
                    at=iso(now), status=JobStatus.QUEUED, by=Actor.SUBMIT, note=f"from {source.type}"
                )
            ],
        )

    def quote(self, data: Any) -> dict[str, Any]:
        """The whole validation, media probe included, and each provider's price for the job,
        cheapest first, with every refusing provider's reason. Creates and spends nothing."""
        request = parse_request(data)
        # What POST /jobs would refuse to store is not quoted either.
        refuse_unstorable({"request": request.model_dump(mode="json")})
        placed = self._elements.place(request)
        inputs = self._inputs.inspect("quote", placed)  # base64 images are decoded, never stored
        facts = {name: value.facts for name, value in inputs.items()}
        billing = billing_of(placed, facts)
        priced, refusing = self._registry.quotes(placed, billing)
        most = usd(self._ledger.budget.max_job_usd)
        for quote in priced:
            quote["within_max_job_cost"] = usd(quote["usd"]) <= most
        return {
            "kind": placed.kind.value,
            "provider": placed.provider,
            "billing": {
                "tier": billing.tier.value,
                "seconds": billing.seconds,
                "upper_bound": billing.upper_bound,
            },
            "inputs": {
                name: value.model_dump(mode="json", exclude_none=True) for name, value in facts.items()
            },
            "quotes": priced,
            "refusing": refusing,
            "max_job_cost_usd": self._ledger.budget.max_job_usd,
        }

    def _holder_candidates(self, asked: AnyRequest, placed: AnyRequest, billing: Billing) -> list[str]:
        """Routing for a request; when klingflow chose the provider (the elements' holder), a
        holder that cannot take the job is the elements' problem, and the refusal says so."""
        try:
            return self._registry.candidates(placed, billing)
        except (RequestRejected, NoProviderAvailable) as refusal:
            if asked.provider is not None or placed.provider is None:
                raise
            holder = placed.provider
            raise RequestRejected(
                [
                    FieldError(
                        "elements",
                        "element_holder_cannot",
                        f"the elements are held by {holder}'s account, the only one that can use them, "
                        f"and it cannot take this job: {refusal.message}",
                    )
                ]
            ) from None

    def _again(self, stored: Job) -> Job:
        """A request seen before returns its first job; one still QUEUED (its first delivery
        may have stopped before queueing it) is queued again. A duplicate message only finds
        the job claimed, or ended, and stops."""
        logger.info("request seen before", extra={"job_id": stored.job_id, "status": stored.status})
        if stored.status is JobStatus.QUEUED:
            self._queue(stored.job_id, "accepted again")
        return stored

    def reject(self, data: Any, source: Source, rejection: KlingflowError) -> None:
        metadata = data.get("metadata") if isinstance(data, dict) else None
        kind = data.get("kind") if isinstance(data, dict) else None
        detail = JobEventDetail(
            job_id=None,
            # Whatever a rejected request says its kind is (a list, an object, a typo): only a
            # known one is repeated in the event.
            kind=JobKind(kind) if isinstance(kind, str) and kind in set(JobKind) else JobKind.MOTION_CONTROL,
            status="REJECTED",
            metadata=metadata
            if isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
            else {},
            error=JobError(code=rejection.code, message=rejection.message),
            source=source,
        )
        self._events.publish(DetailType.REJECTED, detail)


def request_sha256(data: Any) -> str:
    """A request's fingerprint: its JSON with keys sorted, so key order and spacing do not count."""
    try:
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        canonical = repr(data)
    return hashlib.sha256(canonical.encode("utf-8", errors="surrogatepass")).hexdigest()


def _same_request(seen: Job, key: str | None, fingerprint: str) -> None:
    """A key's first job answers only a retry of the same request."""
    if seen.request_sha256 is not None and seen.request_sha256 != fingerprint:
        raise IdempotencyConflict(
            f"idempotency key {key!r} was used for job {seen.job_id} with a different request; "
            "use a new key for a new request",
            job_id=seen.job_id,
        )

"""Submit: turn a request into a job and send it to a provider, paying at most once.

Order matters for money: validate and probe everything first (nothing is spent on a request a
provider would reject), store the job, then claim the one right to submit it, then submit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger
from ulid import ULID

from klingflow.core.clock import Clock, epoch, iso
from klingflow.core.errors import (
    BudgetExceeded,
    FieldError,
    IdempotencyConflict,
    KlingflowError,
    NoProviderAvailable,
    ProviderError,
    ProviderErrorClass,
    Refused,
    RequestRejected,
)
from klingflow.core.kinds import AnyRequest, Billing, JobKind, MediaRef, parse_request, with_media
from klingflow.core.media_rules import IMAGE_MAX_BYTES, check_media, facts_from_probe, format_from_name
from klingflow.core.models import (
    Cost,
    DetailType,
    HistoryEntry,
    Job,
    JobError,
    JobEventDetail,
    MediaFacts,
    Source,
)
from klingflow.core.outcomes import Done, SubmitOutcome
from klingflow.core.probe import BytesReader, ImageInfo, ProbeError, VideoInfo, probe_image, probe_video
from klingflow.core.states import JobStatus
from klingflow.core.tokens import CallbackSigner
from klingflow.core.webhookurls import check_webhook_url
from klingflow.infra.events import EventPublisher
from klingflow.infra.queue import JobQueue
from klingflow.infra.storage import Storage
from klingflow.jobs.elements import ElementDirectory
from klingflow.jobs.store import Claim, ElementDeleted, JobStore, NoRoom, refuse_unstorable
from klingflow.jobs.submissions import SubmissionRecorder
from klingflow.money.ledger import Ledger, usd
from klingflow.money.pricing import billing_of
from klingflow.money.settlement import Keep
from klingflow.providers.base import TaskSpec
from klingflow.providers.health import Breakers
from klingflow.providers.registry import Registry
from klingflow.providers.telemetry import ProviderMetrics

logger = Logger(child=True)

_QUEUED = frozenset({JobStatus.QUEUED})
# A job whose base64 image is not in the bucket when it is sent (see `Intake._write_images`).
INPUT_MISSING = "INPUT_MISSING"
_DATA_URI = re.compile(r"^data:image/(?P<subtype>[a-z]+);base64,", re.IGNORECASE)
# Where a job's base64 images are stored: incoming/<job id, a ULID>/.
_JOB_FOLDER = re.compile(r"incoming/[0-9A-HJKMNP-TV-Z]{26}")
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


@dataclass(frozen=True)
class IntakeConfig:
    job_deadline_s: int
    input_url_ttl_s: int
    first_poll_with_callback_s: int
    first_poll_without_callback_s: int
    max_manifest_bytes: int = 256 * 1024
    # A QUEUED job the sweeper sees after this long lost its submitter.
    submit_grace_s: int = 300
    # A pinned job whose provider said "not now" asks again after this, doubling up to the cap
    # (or after the provider's Retry-After, or its circuit breaker's cool-down, if longer).
    retry_base_s: int = 20
    retry_max_s: int = 300
    breaker_cool_down_s: int = 60
    # Sandbox only: a webhook to a loopback receiver over plain http (webhookurls.py).
    allow_loopback_http: bool = False


@dataclass(frozen=True)
class _Input:
    facts: MediaFacts
    key: str | None  # set when the input is an object in our bucket
    url: str | None  # set when the input is an https URL the provider fetches itself
    # A base64 image to be stored at `key` once the job is (`Intake._write_images`): nothing of
    # a rejected request, or of a race's loser, may be left in the bucket.
    pending: bytes | None = None


class Intake:
    def __init__(
        self,
        *,
        store: JobStore,
        storage: Storage,
        events: EventPublisher,
        registry: Registry,
        elements: ElementDirectory,
        signer: CallbackSigner,
        api_url: Callable[[], str],
        clock: Clock,
        config: IntakeConfig,
        breakers: Breakers,
        submit_queue: JobQueue,
        ledger: Ledger,
        archive_queue: JobQueue | None = None,
        metrics: ProviderMetrics | None = None,
    ) -> None:
        self._ledger = ledger
        self._store = store
        self._storage = storage
        self._breakers = breakers
        self._submit_queue = submit_queue
        self._events = events
        self._registry = registry
        self._elements = elements
        self._signer = signer
        self._api_url = api_url
        self._clock = clock
        self._config = config
        self.recorder = SubmissionRecorder(
            store=store,
            events=events,
            registry=registry,
            clock=clock,
            first_poll_with_callback_s=config.first_poll_with_callback_s,
            first_poll_without_callback_s=config.first_poll_without_callback_s,
            metrics=metrics,
            archive_queue=archive_queue,
        )

    # ---- accept ----------------------------------------------------------------------------

    def accept(
        self, data: Any, source: Source, *, idempotency_key: str | None = None, defer: bool = False
    ) -> Job:
        """Validate, store and submit one request. Rejections raise RequestRejected and emit
        `Job Rejected`; a request seen before (same idempotency key) returns its first job.

        With `defer` the job is stored QUEUED and handed to the submit queue instead of being
        sent now (the API answers at once; provider calls and fail-over happen off its clock).
        """
        fingerprint = request_sha256(data)
        try:
            request = parse_request(data)
            if request.webhook is not None:
                check_webhook_url(request.webhook.url, allow_loopback_http=self._config.allow_loopback_http)
            key = request.idempotency_key or idempotency_key
            if key is not None and (seen := self._store.job_for_key(key)) is not None:
                # Before any check that could now refuse it (today's budget): a retry gets its job.
                _same_request(seen, key, fingerprint)
                self._restore_images(seen, request)
                return self._again(seen, defer=defer)
            # Elements live in one account: the job goes to their holder (or is refused).
            placed = self._elements.place(request)
            job_id = str(ULID.from_datetime(self._clock.now()))
            inputs = self._inspect(job_id, placed)
            facts = {name: value.facts for name, value in inputs.items()}
            billing = billing_of(placed, facts)
            candidates = self._holder_candidates(request, placed, billing)
            request = placed
            estimates = self._affordable(request, billing, candidates)
            cheapest = next(iter(estimates.values()))
            # Not the reservation (that is atomic, when the job is claimed for sending), but a
            # request that cannot fit today is refused now rather than accepted to fail.
            self._ledger.check_fits(cheapest)
        except Refused as rejection:
            self._reject(data, source, rejection)
            raise
        now = self._clock.now()
        deadline_s = request.deadline_s or self._config.job_deadline_s
        stored_media = {name: value.key or value.url or "" for name, value in inputs.items()}
        job = Job(
            job_id=job_id,
            kind=request.kind,
            status=JobStatus.QUEUED,
            request=with_media(request, stored_media).model_dump(mode="json", exclude_none=True),
            source=source,
            created_at=iso(now),
            updated_at=iso(now),
            deadline_at=epoch(now) + deadline_s,
            inputs=facts,
            cost=Cost(estimated_usd=cheapest),
            metadata=request.metadata,
            request_sha256=fingerprint,
            due_at=epoch(now) + min(self._config.submit_grace_s, deadline_s),
            history=[
                HistoryEntry(at=iso(now), status=JobStatus.QUEUED, by="submit", note=f"from {source.type}")
            ],
        )
        try:
            stored, created = self._store.create(job, idempotency_key=key)
            if not created:
                _same_request(stored, key, fingerprint)
        except Refused as rejection:  # a value the table cannot hold, or the key's other request
            self._reject(data, source, rejection)
            raise
        if not created:
            self._restore_images(stored, request)
            return self._again(stored, defer=defer)
        self._write_images(inputs)
        if defer:
            self._submit_queue.enqueue(stored.job_id, "accepted")
            return stored
        return self.submit(stored, estimates)

    def quote(self, data: Any) -> dict[str, Any]:
        """The whole validation, media probe included, and each provider's price for the job,
        cheapest first, with every refusing provider's reason. Creates and spends nothing."""
        request = parse_request(data)
        # What POST /jobs would refuse to store is not quoted either.
        refuse_unstorable({"request": request.model_dump(mode="json")})
        placed = self._elements.place(request)
        inputs = self._inspect("quote", placed)  # base64 images are decoded, never stored
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

    def _again(self, stored: Job, *, defer: bool) -> Job:
        """A request seen before returns its first job; one still QUEUED (its first delivery
        stopped before sending) is sent on. A duplicate only finds the job claimed and stops."""
        logger.info("request seen before", extra={"job_id": stored.job_id, "status": stored.status})
        if stored.status is not JobStatus.QUEUED:
            return stored
        if defer:
            self._submit_queue.enqueue(stored.job_id, "accepted again")
            return stored
        return self.submit(stored)

    def submit_queued(self, job_id: str) -> Done[SubmitOutcome]:
        """Send a job the API accepted; anything but a QUEUED job is left as it is."""
        job = self._store.get(job_id)
        if job is None or job.status is not JobStatus.QUEUED:
            return Done(SubmitOutcome.IGNORED, job.status.value if job else "unknown job")
        after = self.submit(job)
        outcome = {
            JobStatus.QUEUED: SubmitOutcome.WAITING,
            JobStatus.FAILED: SubmitOutcome.FAILED,
            JobStatus.CANCELLED: SubmitOutcome.IGNORED,
        }.get(after.status, SubmitOutcome.SENT)
        return Done(outcome, f"{after.status.value} {after.provider or after.submitting_to or ''}".strip())

    def accept_manifest(self, key: str, *, delivery: str) -> Job | None:
        """A manifest dropped under incoming/. One that cannot become a job gets an error report
        under rejected/ (the manifest itself stays where it is); None is returned for it.

        `delivery` identifies this upload (version id or sequencer), so a redelivered S3 event
        finds the job the first delivery made while a new upload of the same name is a new job.
        """
        source = Source(type="s3", ref=self._storage.uri(key))
        try:
            data = _relative_to(
                key, json.loads(self._storage.read_small(key, self._config.max_manifest_bytes))
            )
        except (ValueError, RecursionError) as error:  # not UTF-8, not JSON, or nested past parsing
            reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
            rejection = RequestRejected([FieldError("(manifest)", "json", f"not valid JSON: {reason}")])
            self._reject(None, source, rejection)
            self._report(key, rejection)
            return None
        except Refused as rejection:
            self._reject(None, source, rejection)
            self._report(key, rejection)
            return None
        try:
            job = self.accept(data, source, idempotency_key=f"s3:{key}:{delivery}")
        except Refused as rejection:
            self._report(key, rejection)
            return None
        if job.status is JobStatus.FAILED and job.error is not None and job.error.code == BudgetExceeded.code:
            # Accepted, then refused by the day's budget when it was claimed: the manifest's
            # owner looks in rejected/ for what became of it.
            self._report(
                key, {"job_id": job.job_id, "error": job.error.model_dump(mode="json", exclude_none=True)}
            )
        return job

    def _report(self, key: str, rejection: KlingflowError | dict[str, Any]) -> None:
        self._storage.put_json(
            report_key(key),
            {
                "manifest": self._storage.uri(key),
                "rejected_at": iso(self._clock.now()),
                **(rejection.body() if isinstance(rejection, KlingflowError) else rejection),
            },
        )

    def _reject(self, data: Any, source: Source, rejection: KlingflowError) -> None:
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

    # ---- inputs ----------------------------------------------------------------------------

    def _write_images(self, inputs: dict[str, _Input]) -> None:
        """Store the base64 images of a job whose create has just won.

        After the create, not before: written first, an image would be left behind by every
        request that then loses an idempotency race or cannot be stored, with nothing to delete
        it. Written after, the job exists a moment before its image, so nothing may read the
        image until it is there: this job is sent (or queued for sending) only after this
        returns; a repeat of the request that finds the job QUEUED (a race's loser, the
        trigger's retry after a crash between the two writes) writes the same bytes to the same
        key before sending it (`_restore_images`); and `submit` fails a job whose stored image
        is missing rather than send a link to nothing. Every such write is conditional on the
        key being empty (`put_new`): whoever writes first stores the one version the bucket keeps.
        """
        for value in inputs.values():
            if value.pending is not None and value.key is not None:
                self._storage.put_new(value.key, value.pending, value.facts.content_type or "image/png")

    def _restore_images(self, stored: Job, request: AnyRequest) -> None:
        """Before a repeat of a stored request may send its job (still QUEUED), the job's
        base64 images are where it expects them: the same bytes at the same key, written only if
        the key is empty, so however many repeats race, the bucket holds one version per image."""
        if stored.status is not JobStatus.QUEUED:
            return  # sent already: its images were there
        expected = {media.name: media.ref for media in stored.parsed_request.media()}
        for media in request.media():
            key = expected.get(media.name, "")
            if not (media.is_image and _is_base64_image(media.ref) and _holds_base64(key, media.name)):
                continue
            try:
                data = base64.b64decode(_DATA_URI.sub("", media.ref, count=1), validate=True)
            except (binascii.Error, ValueError):
                continue  # not the bytes the job was made from (a job older than fingerprints)
            facts = stored.inputs.get(media.name)
            self._storage.put_new(key, data, (facts.content_type if facts else None) or "image/png")

    def _inspect(self, job_id: str, request: AnyRequest) -> dict[str, _Input]:
        errors: list[FieldError] = []
        found: dict[str, _Input] = {}
        for media in request.media():
            try:
                found[media.name] = self._inspect_one(job_id, media)
            except RequestRejected as rejection:
                errors.extend(rejection.errors)
        errors.extend(check_media(request, {name: value.facts for name, value in found.items()}))
        if errors:
            raise RequestRejected(errors)
        return found

    def _inspect_one(self, job_id: str, media: MediaRef) -> _Input:
        field, ref, kind = media.name, media.ref, "image" if media.is_image else "video"
        if ref.startswith("https://"):
            # A provider fetches it itself; all we can check is what the name says.
            return _Input(MediaFacts(source=ref, format=format_from_name(ref)), None, ref)
        if kind == "image" and _is_base64_image(ref):
            return self._store_base64_image(job_id, field, ref)
        key = self._storage.key_of(field, ref)
        info = self._storage.head(field, key)
        reader = self._storage.reader(info)
        probed: ImageInfo | VideoInfo
        try:
            probed = probe_image(reader) if kind == "image" else probe_video(reader)
        except ProbeError as error:
            raise RequestRejected(
                [FieldError(field, f"{kind}_{error.rule}", f"{self._storage.uri(key)}: {error}")]
            ) from None
        return _Input(facts_from_probe(self._storage.uri(key), probed, info.content_type), key, None)

    def _store_base64_image(self, job_id: str, field: str, ref: str) -> _Input:
        payload = _DATA_URI.sub("", ref, count=1)
        # Base64 grows data by a third: refuse oversized text before decoding it.
        if len(payload) > IMAGE_MAX_BYTES * 4 // 3 + 4:
            raise RequestRejected(
                [FieldError(field, "image_max_bytes", f"base64 image is larger than {IMAGE_MAX_BYTES} bytes")]
            )
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise RequestRejected(
                [FieldError(field, "base64", "image is neither a reference nor valid base64")]
            ) from None
        try:
            probed = probe_image(BytesReader(data))
        except ProbeError as error:
            raise RequestRejected([FieldError(field, f"image_{error.rule}", str(error))]) from None
        # Stored in the bucket once the request is accepted (a DynamoDB item cannot hold it) and
        # handed over as a URL, which every dialect accepts.
        key = f"incoming/{job_id}/{field}.{'jpg' if probed.format == 'jpeg' else probed.format}"
        facts = facts_from_probe(self._storage.uri(key), probed, f"image/{probed.format}")
        return _Input(facts, key, None, pending=data)

    # ---- submit ----------------------------------------------------------------------------

    def submit(self, job: Job, estimates: dict[str, float] | None = None) -> Job:
        """Send a QUEUED job to the first candidate that takes it; at most one paid submission.

        Claiming the job reserves its estimate against today's budget in the same write; on
        fail-over the one reservation moves to the next provider's estimate. A job pinned to a
        provider that says "not now" keeps its reservation and waits to be sent again.
        """
        request = job.parsed_request
        if missing := self._missing_images(request):
            # Its intake stopped between storing the job and its image (`_write_images`), and no
            # retry of the request came to write it: a provider would be sent a link to nothing.
            return self.recorder.fail(
                job.job_id,
                INPUT_MISSING,
                f"the base64 image given as {', '.join(missing)} was never stored (its intake was "
                "interrupted); nothing was sent or charged: send the request again",
            )
        billing = billing_of(request, job.inputs)
        try:
            if estimates is None:
                estimates = self._affordable(request, billing, self._registry.candidates(request, billing))
        except Refused as refusal:
            # Nothing can take it now (disabled, no keys, dearer than MaxJobCostUsd): say so
            # instead of retrying until the deadline. Nothing was sent or charged.
            return self.recorder.fail(job.job_id, refusal.code, refusal.message, budget=_budget_of(refusal))
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
            return self.recorder.element_deleted(job.job_id, deleted.element_id)
        if outcome is Claim.NO_ROOM:
            day = self._ledger.today()
            exceeded = self._ledger.exceeded(estimates[candidates[0]], self._ledger.remaining(day), day)
            return self.recorder.fail(job.job_id, exceeded.code, exceeded.message, budget=exceeded.budget)
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
        code = "ALL_PROVIDERS_FAILED"
        for provider in candidates:
            if not self._allowed(provider):
                # Its breaker is open: skipping it costs nothing and says so in the attempts.
                self.recorder.attempt(job.job_id, provider, "skipped_unhealthy", None, "circuit breaker open")
                if pinned:
                    return self._wait(job, claim, provider, self._config.breaker_cool_down_s, "breaker open")
                failures.append(f"{provider}: skipped (circuit breaker open)")
                skipped["unhealthy"] += 1
                continue
            try:
                moved = self._store.move_reservation(job, claim, provider, estimates[provider])
            except NoRoom:
                self._best_effort(
                    self.recorder.attempt, job.job_id, provider, "skipped_budget", None, "over today's budget"
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
                code = "PROVIDER_REJECTED"
                break
        if failures and skipped["unhealthy"] == len(failures):
            code = "NO_HEALTHY_PROVIDER"
        elif failures and skipped["budget"] == len(failures):
            code = BudgetExceeded.code
        return self.recorder.fail(job.job_id, code, "; ".join(failures))

    def _affordable(self, request: AnyRequest, billing: Billing, candidates: list[str]) -> dict[str, float]:
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
            self.recorder.attempt, job.job_id, provider, "waiting", None, f"again in {delay} s: {why}"
        )
        waiting = self._store.touch(
            job.job_id,
            status_in=_QUEUED,
            due_in_s=delay,
            increments={"send_retries": 1},
            removes=("submit_claim", "submit_claimed_at", "submitting_to"),
            extra_condition="submit_claim = :claim",
            extra_values={":claim": claim},
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
        sent = with_media(request, {media.name: self._provider_url(media.ref) for media in request.media()})
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
                self.recorder.attempt, job.job_id, provider, error.error_class.value, latency, error.message
            )
            if not error.request_may_have_landed:
                self._best_effort(self._breakers.record_answer, provider, error.error_class)
                return error
            return self._unknown_outcome(job, provider, error)
        latency = int((time.monotonic() - started) * 1000)
        # Bookkeeping is best effort: once the provider has the task, nothing may undo that.
        self._best_effort(
            self.recorder.attempt, job.job_id, provider, "submitted", latency, submission.task_id
        )
        self._best_effort(self.recorder.hold_reserved, job, claim, provider, submission)
        submitted = self.recorder.submitted(job, provider, submission)
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
            found = self.recorder.resolve_unknown(job.job_id, provider)
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
            waiting = "lookup_deferred" if adapter.looks_up(job.kind) else "awaiting_callback"
            self._best_effort(
                self.recorder.attempt, job.job_id, provider, waiting, None, "task not found yet"
            )
            return self._store.get(job.job_id) or job
        return self.recorder.fail(
            job.job_id,
            "SUBMIT_OUTCOME_UNKNOWN",
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

    def _missing_images(self, request: AnyRequest) -> list[str]:
        """The fields whose base64 image intake stores beside the job and which are not there."""
        missing = []
        for media in request.media():
            if media.is_image and _holds_base64(media.ref, media.name):
                try:
                    self._storage.head(media.name, media.ref)
                except RequestRejected:
                    missing.append(media.name)
        return missing

    def _provider_url(self, ref: str) -> str:
        if ref.startswith("https://"):
            return ref
        return self._storage.presign_get(ref, self._config.input_url_ttl_s)


def _budget_of(refusal: Refused) -> dict[str, float] | None:
    return refusal.budget if isinstance(refusal, BudgetExceeded) else None


# S3 keys are at most 1,024 bytes of UTF-8; "rejected/" + name + ".error.json" is 6 bytes more
# than the "incoming/" + name + ".json" it reports on.
S3_KEY_MAX_BYTES = 1024
_REPORT_PREFIX, _REPORT_SUFFIX = "rejected/", ".error.json"


def report_key(manifest_key: str) -> str:
    """Where the report on a refused manifest goes: beside its name under rejected/, or, for a
    name too long to fit, its leading part and a digest of the whole key (the report names the
    manifest in full)."""
    name = manifest_key.removeprefix("incoming/").removesuffix(".json")
    key = f"{_REPORT_PREFIX}{name}{_REPORT_SUFFIX}"
    if len(key.encode()) <= S3_KEY_MAX_BYTES:
        return key
    digest = "~" + hashlib.sha256(manifest_key.encode()).hexdigest()[:16]
    room = S3_KEY_MAX_BYTES - len(_REPORT_PREFIX) - len(_REPORT_SUFFIX) - len(digest)
    head = name.encode()[:room].decode(errors="ignore")  # never half a character
    return f"{_REPORT_PREFIX}{head}{digest}{_REPORT_SUFFIX}"


def _relative_to(manifest_key: str, data: Any) -> Any:
    """Bare file names in a manifest name objects beside it (incoming/a.json -> incoming/x.png).

    The request is parsed first to learn where its media are; one that does not parse is
    returned as it is, to be rejected with its own errors.
    """
    folder = manifest_key.rpartition("/")[0]
    if not isinstance(data, dict) or not folder:
        return data
    try:
        request = parse_request(data)
    except RequestRejected:
        return data
    beside = {
        media.name: f"{folder}/{media.ref}"
        for media in request.media()
        if "/" not in media.ref and ":" not in media.ref and 0 < len(media.ref) < 256
    }
    if not beside:
        return data
    resolved = with_media(request, beside).model_dump(mode="json", exclude_none=True)
    # Only the media change: everything else stays as the user wrote it.
    return {**data, **{key: resolved[key] for key in resolved if key in data}}


def _is_base64_image(ref: str) -> bool:
    return _DATA_URI.match(ref) is not None or _looks_base64(ref)


def _holds_base64(key: str, field: str) -> bool:
    """Whether `key` is where intake stores a base64 image given as `field`: in the job's own
    folder under incoming/ (named by its ULID), named by the field (`_store_base64_image`)."""
    folder, _, name = key.rpartition("/")
    return _JOB_FOLDER.fullmatch(folder) is not None and name.rpartition(".")[0] == field


def _looks_base64(value: str) -> bool:
    # Object keys carry dots and are short; a bare base64 image is long and has neither.
    return len(value) > 256 and re.fullmatch(r"[A-Za-z0-9+/=\s]+", value) is not None


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

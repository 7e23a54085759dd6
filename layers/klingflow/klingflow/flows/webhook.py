"""Per-job webhooks, signed per the Standard Webhooks specification.

A job may name a `webhook` (`url`, `events`). Every outcome klingflow puts on its outcome bus
also lands in the webhook queue; the webhook function reads the job, and when the job asked for
that outcome POSTs it to the URL through the SSRF-guarded client (https only, no private
address), within one wall-clock limit for the whole exchange. A receiver that does not answer
2xx is tried again with exponential backoff and jitter (the queue's visibility timeout), for
more than a day, then the message is dead-lettered (alarmed). Each try is recorded on the job
(`webhook_attempts`, `webhook_last`, `webhook_next_try_at`, `webhook_delivered`).

A webhook says only what klingflow recorded: the event is a prompt, never the content. The body
is the job's stored record (`events.detail_for`, the same shape as the bus's details), and an
event whose claim the record does not back (an unknown job, `Job Completed` for a job that is
not ARCHIVED, `Job Submitted` for one never submitted) is not sent: it is logged and counted
(`WebhooksUnbacked`, alarmed), never retried. A claim is backed when the job is in the status
it names or its history shows it was (so a `Job Submitted` handled after the job moved on to
RUNNING or ARCHIVED is still sent).

Signatures (https://www.standardwebhooks.com): `webhook-id` (`<job_id>.<outcome>`: the same on
every retry and every re-publication of that outcome, so a receiver can drop duplicates),
`webhook-timestamp` (Unix seconds) and `webhook-signature` = `v1,` +
base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")). The key is the stack's webhook signing
secret as UTF-8 bytes; Standard Webhooks libraries take it as `whsec_` + base64(secret).
`verify_webhook` is what a receiver calls; whatever it is given, it raises only
WebhookVerificationError.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError

from klingflow.core.clock import iso
from klingflow.core.codes import JobErrorCode
from klingflow.core.errors import KlingflowError, UnsafeUrl
from klingflow.core.models import DetailType, Job, WebhookAttempt
from klingflow.core.outcomes import Done, WebhookOutcome
from klingflow.core.states import JobStatus
from klingflow.infra.events import SOURCE, detail_for
from klingflow.infra.safehttp import DownloadFailed, SafeHttp
from klingflow.jobs.store import JobStore

from .configs import WebhookConfig

logger = Logger(child=True)

# A signature older or newer than this is refused (replay protection), as the spec suggests.
TOLERANCE_S = 300
# Backoff per attempt: 30 s doubling to an hour, with jitter; the queue's maxReceiveCount (60)
# makes that more than a day of tries before the dead-letter queue.
FIRST_RETRY_S = 30
MAX_RETRY_S = 3600
MAX_ATTEMPTS = 60  # the webhook queue's maxReceiveCount (a test holds them equal)

# The status each outcome claims its job is in now, or was in once.
CLAIMS: Mapping[str, JobStatus] = {
    DetailType.SUBMITTED: JobStatus.SUBMITTED,
    DetailType.COMPLETED: JobStatus.ARCHIVED,
    DetailType.FAILED: JobStatus.FAILED,
    DetailType.TIMED_OUT: JobStatus.TIMED_OUT,
    DetailType.CANCELLED: JobStatus.CANCELLED,
}


class WebhookVerificationError(Exception):
    """The request is not one klingflow signed with this secret (or it is too old)."""


class DeliveryFailed(KlingflowError):
    """The receiver did not take the webhook; it is tried again in `retry_in_s`."""

    code = JobErrorCode.WEBHOOK_NOT_DELIVERED

    def __init__(self, message: str, *, retry_in_s: int = FIRST_RETRY_S) -> None:
        super().__init__(message)
        self.retry_in_s = retry_in_s


def _key(secret: str | bytes) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if raw.startswith(b"whsec_"):
        return base64.b64decode(raw.removeprefix(b"whsec_"), validate=True)
    return raw


def sign(secret: str | bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def verify_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str | bytes,
    *,
    tolerance_s: int = TOLERANCE_S,
    now: float | None = None,
) -> Any:
    """Check a webhook klingflow sent and return its JSON; raises WebhookVerificationError,
    and only that, whatever it is given.

    `secret` is the stack's webhook signing secret (as stored, or `whsec_` + base64 of it).
    """
    try:
        return _verified(payload, headers, secret, tolerance_s, now)
    except WebhookVerificationError:
        raise
    except binascii.Error:
        raise WebhookVerificationError("the secret starts with whsec_ but the rest is not base64") from None
    except (UnicodeError, ValueError):  # json.JSONDecodeError is a ValueError
        raise WebhookVerificationError("the body is not UTF-8 JSON") from None
    except Exception as error:
        # Inputs of any other type or shape (None, numbers, nesting too deep to parse): a
        # receiver handles one error type, never a surprise from inside.
        raise WebhookVerificationError(f"not a webhook klingflow signed ({type(error).__name__})") from None


def _verified(payload: Any, headers: Any, secret: Any, tolerance_s: int, now: float | None) -> Any:
    if not isinstance(secret, str | bytes) or not secret:
        raise WebhookVerificationError("the secret must be the signing secret, as text or bytes")
    try:
        _key(secret)
    except UnicodeError:
        raise WebhookVerificationError("the secret is not text that UTF-8 can encode") from None
    if not isinstance(headers, Mapping):
        raise WebhookVerificationError("headers must be a mapping of header names to values")
    lowered = {str(name).lower(): value for name, value in headers.items()}
    message_id, stamp, signatures = (
        _ascii(lowered.get(h)) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not (message_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise WebhookVerificationError("webhook-timestamp is not a number")
    timestamp = int(stamp)
    # Written so that a NaN (a clock or tolerance that is not a number) refuses, never admits.
    if not abs((time.time() if now is None else now) - timestamp) <= tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance (a replay?)")
    if isinstance(payload, str):
        body = payload.encode()
    elif isinstance(payload, bytes | bytearray | memoryview):
        body = bytes(payload)
    else:
        raise WebhookVerificationError("the body must be the request's bytes (or text)")
    expected = sign(secret, message_id, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
        raise WebhookVerificationError("no signature matches")
    return json.loads(body)


def _ascii(value: Any) -> str | None:
    """A header's value as text; header values are ASCII (anything else cannot be ours)."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    if not text.isascii():
        raise WebhookVerificationError("a webhook header is not ASCII")
    return text


def retry_delay_s(attempt: int, rand: Callable[[], float] = random.random) -> int:
    """Seconds before try `attempt` + 1: exponential, capped, with jitter (half to all of it)."""
    ceiling = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(max(attempt - 1, 0), 16))
    return max(1, int(ceiling * (0.5 + rand() / 2)))


def backed(kind: str, job: Job) -> bool:
    """The job's record backs the outcome: it is in the status the outcome names, or was."""
    claimed = CLAIMS.get(kind)
    return claimed is not None and (job.status is claimed or any(e.status is claimed for e in job.history))


def message_id(job_id: str, kind: str) -> str:
    return f"{job_id}.{kind.lower().replace(' ', '-')}"


class WebhookSender:
    def __init__(
        self,
        *,
        store: JobStore,
        http: SafeHttp,
        secret: Callable[[], str],
        clock: Callable[[], float] = time.time,
        config: WebhookConfig | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._http = http
        self._secret = secret
        self._clock = clock
        self._deadline_s = (config or WebhookConfig()).webhook_timeout_s
        self._rand = rand

    def deliver(self, event: Mapping[str, Any], *, attempt: int = 1) -> Done[WebhookOutcome]:
        """POST one outcome of a job to its webhook, as the job's record has it, if the job
        asked for it and its record backs the outcome; raises DeliveryFailed (with when to try
        again) when the receiver did not take it. `attempt` counts from 1."""
        given = event.get("detail")
        detail: Mapping[str, Any] = given if isinstance(given, Mapping) else {}
        job_id, kind = detail.get("job_id"), str(event.get("detail-type", ""))
        # A job id is a 26-character ULID; anything far from that names no job (and a key that
        # long would be a DynamoDB error, not an answer).
        job = self._store.get(job_id) if isinstance(job_id, str) and 0 < len(job_id) <= 64 else None
        if event.get("source") != SOURCE or job is None or not backed(kind, job):
            return self._unbacked(kind, job_id, job)
        hook = _webhook_of(job)
        if hook is None or kind not in hook.get("events", []):
            return Done(WebhookOutcome.NOT_ASKED, kind)
        target = _Target(job.job_id, str(hook["url"]), kind)
        try:
            status = self._post(target, _body(kind, job))
        except UnsafeUrl as error:
            # A URL the guard refuses never becomes deliverable: say so once, do not retry.
            self._record(target, "refused", detail=error.message)
            return Done(WebhookOutcome.REFUSED, error.message)
        except DownloadFailed as error:
            raise self._failed(target, attempt, None, error.message) from error
        if not 200 <= status < 300:
            raise self._failed(target, attempt, status, f"the receiver answered HTTP {status}")
        self._record(target, "delivered", status_code=status)
        return Done(WebhookOutcome.DELIVERED, f"{kind} {status}")

    def _post(self, target: _Target, body: bytes) -> int:
        ident = message_id(target.job_id, target.kind)
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "klingflow-webhooks/1",
            "webhook-id": ident,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret(), ident, timestamp, body),
        }
        return self._http.post(target.url, content=body, headers=headers, deadline_s=self._deadline_s)

    def _unbacked(self, kind: str, job_id: object, job: Job | None) -> Done[WebhookOutcome]:
        found = (
            "no such job" if job is None else f"the job is {job.status.value} and never was what it claims"
        )
        logger.warning(
            "an outcome event the jobs table does not back: not sent",
            extra={"detail_type": kind[:100], "job_id": str(job_id)[:100], "why": found},
        )
        return Done(WebhookOutcome.UNBACKED, f"{kind[:100]}: {found}")

    def _failed(self, target: _Target, attempt: int, status: int | None, why: str) -> DeliveryFailed:
        delay = retry_delay_s(attempt, self._rand)
        # The queue dead-letters the message after its last try: no next one to show.
        next_at = _iso(self._clock() + delay) if attempt < MAX_ATTEMPTS else None
        self._record(target, "failed", status_code=status, detail=why, next_try_at=next_at)
        return DeliveryFailed(f"{target.kind} for job {target.job_id}: {why}", retry_in_s=delay)

    def _record(
        self,
        target: _Target,
        outcome: Literal["delivered", "failed", "refused"],
        *,
        status_code: int | None = None,
        detail: str | None = None,
        next_try_at: str | None = None,
    ) -> None:
        attempt = WebhookAttempt(
            event=target.kind,
            at=_iso(self._clock()),
            outcome=outcome,
            status_code=status_code,
            detail=detail[:300] if detail else None,
        )
        try:
            self._store.record_webhook_attempt(target.job_id, target.url, attempt, next_try_at=next_try_at)
        except (ClientError, BotoCoreError) as error:
            # Bookkeeping only: the delivery happened (or did not) either way, and failing here
            # would send a delivered webhook again.
            logger.warning("webhook attempt not recorded on the job", extra={"problem": str(error)})


@dataclass(frozen=True)
class _Target:
    job_id: str
    url: str
    kind: str


def _body(kind: str, job: Job) -> bytes:
    claimed = CLAIMS[kind]
    happened = next((e.at for e in job.history if e.status is claimed), job.updated_at)
    data = detail_for(job).model_dump(mode="json")
    return json.dumps({"type": kind, "timestamp": happened, "data": data}, separators=(",", ":")).encode()


def _iso(epoch_s: float) -> str:
    return iso(datetime.fromtimestamp(epoch_s, UTC))


def _webhook_of(job: Job) -> dict[str, Any] | None:
    hook = job.request.get("webhook") or None
    return hook if isinstance(hook, dict) and hook.get("url") else None

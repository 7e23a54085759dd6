"""Per-job webhooks, signed per the Standard Webhooks specification.

A job may name a `webhook` (`url`, `events`). Every outcome klingflow puts on its bus also lands
in the webhook queue; the webhook function reads the job, and when the job asked for that
outcome POSTs it to the URL through the SSRF-guarded client (https only, no private address).
A receiver that does not answer 2xx is tried again with exponential backoff and jitter (the
queue's visibility timeout), for more than a day, then the message is dead-lettered (alarmed).

Signatures (https://www.standardwebhooks.com): `webhook-id` (the event's id, the same on every
retry, so a receiver can drop duplicates), `webhook-timestamp` (Unix seconds) and
`webhook-signature` = `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")). The key is
the stack's webhook signing secret as UTF-8 bytes; Standard Webhooks libraries take it as
`whsec_` + base64(secret). `verify_webhook` is what a receiver calls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from .errors import KlingflowError, UnsafeUrl
from .models import Job
from .outcomes import Done, WebhookOutcome
from .safehttp import DownloadFailed, SafeHttp
from .store import JobStore

# A signature older or newer than this is refused (replay protection), as the spec suggests.
TOLERANCE_S = 300
# Backoff per attempt: 30 s doubling to an hour, with jitter; the queue's maxReceiveCount (60)
# makes that more than a day of tries before the dead-letter queue.
FIRST_RETRY_S = 30
MAX_RETRY_S = 3600


class WebhookVerificationError(Exception):
    """The request is not one klingflow signed with this secret (or it is too old)."""


class DeliveryFailed(KlingflowError):
    """The receiver did not take the webhook; it is tried again later."""

    code = "WEBHOOK_NOT_DELIVERED"


def _key(secret: str) -> bytes:
    if secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(_key(secret), signed, hashlib.sha256).digest()).decode()


def verify_webhook(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: int = TOLERANCE_S,
    now: float | None = None,
) -> Any:
    """Check a webhook klingflow sent and return its JSON; raises WebhookVerificationError.

    `secret` is the stack's webhook signing secret (as stored, or `whsec_` + base64 of it).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id, stamp, signatures = (
        lowered.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature")
    )
    if not (message_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not a number") from None
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance (a replay?)")
    body = payload.encode() if isinstance(payload, str) else payload
    expected = sign(secret, message_id, timestamp, body)
    if not any(hmac.compare_digest(expected, given) for given in signatures.split()):
        raise WebhookVerificationError("no signature matches")
    return json.loads(body)


def retry_delay_s(attempt: int, rand: Callable[[], float] = random.random) -> int:
    """Seconds before try `attempt` + 1: exponential, capped, with jitter (half to all of it)."""
    ceiling = min(MAX_RETRY_S, FIRST_RETRY_S * 2 ** min(max(attempt - 1, 0), 16))
    return max(1, int(ceiling * (0.5 + rand() / 2)))


class WebhookSender:
    def __init__(
        self,
        *,
        store: JobStore,
        http: SafeHttp,
        secret: Callable[[], str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._http = http
        self._secret = secret
        self._clock = clock

    def deliver(self, event: Mapping[str, Any]) -> Done[WebhookOutcome]:
        """POST one bus event to its job's webhook, if the job asked for it; raises
        DeliveryFailed when the receiver did not take it (so it is tried again)."""
        given = event.get("detail")
        detail: dict[str, Any] = given if isinstance(given, dict) else {}
        job_id, kind = detail.get("job_id"), str(event.get("detail-type", ""))
        job = self._store.get(str(job_id)) if job_id else None
        hook = _webhook_of(job)
        if job is None or hook is None or kind not in hook.get("events", []):
            return Done(WebhookOutcome.NOT_ASKED, kind)
        body = json.dumps(
            {"type": kind, "timestamp": event.get("time"), "data": detail}, separators=(",", ":")
        ).encode()
        message_id = str(event.get("id") or f"{job.job_id}:{kind}")
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "klingflow-webhooks/1",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._secret(), message_id, timestamp, body),
        }
        try:
            status = self._http.post(str(hook["url"]), content=body, headers=headers)
        except UnsafeUrl as error:
            # A URL the guard refuses never becomes deliverable: say so once, do not retry.
            return Done(WebhookOutcome.REFUSED, error.message)
        except DownloadFailed as error:
            raise DeliveryFailed(f"{kind} for job {job.job_id}: {error.message}") from error
        if not 200 <= status < 300:
            raise DeliveryFailed(f"{kind} for job {job.job_id}: the receiver answered HTTP {status}")
        return Done(WebhookOutcome.DELIVERED, f"{kind} {status}")


def _webhook_of(job: Job | None) -> dict[str, Any] | None:
    hook = (job.request.get("webhook") if job is not None else None) or None
    return hook if isinstance(hook, dict) and hook.get("url") else None

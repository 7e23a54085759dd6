"""Specification of webhook signing (Standard Webhooks) and its retry schedule."""

from __future__ import annotations

import base64

import pytest

from klingflow.webhooks import WebhookVerificationError, retry_delay_s, sign, verify_webhook
from klingflow_dev.sandbox import template
from tests.conftest import REPO

SECRET = "k3yFromSecretsManager"
BODY = b'{"type":"Job Completed","data":{"job_id":"01J"}}'


def headers(timestamp: int = 1_800_000_000, secret: str = SECRET, body: bytes = BODY) -> dict[str, str]:
    return {
        "webhook-id": "evt-1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, "evt-1", timestamp, body),
    }


def test_a_signed_body_verifies_with_the_secret_as_stored_or_in_whsec_form() -> None:
    whsec = "whsec_" + base64.b64encode(SECRET.encode()).decode()
    assert verify_webhook(BODY, headers(), SECRET, now=1_800_000_010)["type"] == "Job Completed"
    assert verify_webhook(BODY, headers(), whsec, now=1_800_000_010)["data"]["job_id"] == "01J"


def test_any_of_several_signatures_may_match_as_the_spec_allows() -> None:
    given = headers()
    given["webhook-signature"] = "v1,bm90LWl0 " + given["webhook-signature"]
    assert verify_webhook(BODY, given, SECRET, now=1_800_000_000)


@pytest.mark.parametrize(
    ("given", "now", "message"),
    [
        (headers(secret="another"), 1_800_000_000, "no signature matches"),
        (headers(), 1_800_000_301, "tolerance"),  # a replay five minutes later
        ({"webhook-id": "evt-1"}, 1_800_000_000, "missing"),
        ({**headers(), "webhook-timestamp": "soon"}, 1_800_000_000, "not a number"),
    ],
)
def test_what_klingflow_did_not_sign_now_is_refused(given: dict[str, str], now: int, message: str) -> None:
    with pytest.raises(WebhookVerificationError, match=message):
        verify_webhook(BODY, given, SECRET, now=now)


def test_retries_back_off_exponentially_with_jitter_to_an_hour_and_span_a_day_in_60_tries() -> None:
    assert [retry_delay_s(n, rand=lambda: 1.0) for n in (1, 2, 3)] == [30, 60, 120]
    assert retry_delay_s(30, rand=lambda: 1.0) == 3600
    assert retry_delay_s(1, rand=lambda: 0.0) == 15  # jitter: half to all of the step
    # the waits between the tries the webhook queue allows (its maxReceiveCount), at the
    # shortest jitter, add up to more than a day, and fit in the queue's retention
    queue = template.load(REPO / "template.yaml")["Resources"]["WebhookQueue"]["Properties"]
    tries = int(queue["RedrivePolicy"]["maxReceiveCount"])
    assert sum(retry_delay_s(n, rand=lambda: 0.0) for n in range(1, tries)) > 24 * 3600
    assert sum(retry_delay_s(n, rand=lambda: 1.0) for n in range(1, tries)) < int(
        queue["MessageRetentionPeriod"]
    )

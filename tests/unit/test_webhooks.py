"""Specification of webhook signing (Standard Webhooks) and its retry schedule."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from klingflow.flows.webhook import WebhookVerificationError, retry_delay_s, sign, verify_webhook
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


# ---- whatever a receiver hands verify_webhook, it raises only WebhookVerificationError

_VALUES = st.one_of(
    st.none(),
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(allow_nan=True),
    st.just("whsec_"),
    st.text().map(lambda t: "whsec_" + t),
    st.binary().map(lambda b: "whsec_" + base64.b64encode(b).decode()),
)
_HEADER_NAMES = st.sampled_from(["webhook-id", "Webhook-Timestamp", "webhook-signature", "x-other"])
_HEADERS = st.one_of(
    st.none(),
    st.lists(st.text()),
    st.dictionaries(st.one_of(_HEADER_NAMES, st.text()), _VALUES),
    st.builds(
        lambda stamp, sig: {"webhook-id": "evt-1", "webhook-timestamp": stamp, "webhook-signature": sig},
        st.one_of(st.text(), st.integers().map(str), st.just("1800000000"), st.just("²")),
        st.one_of(st.text(), st.just("v1,AAAA"), st.just("v1,\udcff")),
    ),
)


@given(payload=_VALUES, given_headers=_HEADERS, secret=_VALUES, now=st.one_of(st.none(), st.floats()))
def test_verify_webhook_raises_only_its_own_error_whatever_it_is_given(
    payload: Any, given_headers: Any, secret: Any, now: float | None
) -> None:
    with contextlib.suppress(WebhookVerificationError):
        verify_webhook(payload, given_headers, secret, now=now)


@given(
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    ),
    secret=st.one_of(st.text(min_size=1), st.binary(min_size=1)),
    message=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1),
)
def test_what_klingflow_signs_verifies_with_the_secret_in_any_form(
    body: Any, secret: str | bytes, message: str
) -> None:
    raw = json.dumps(body).encode()
    key = secret.encode("utf-8", "surrogatepass") if isinstance(secret, str) else secret
    for form in (key, "whsec_" + base64.b64encode(key).decode()):
        signed = {
            "webhook-id": message,
            "webhook-timestamp": "1800000000",
            "webhook-signature": sign(form, message, 1_800_000_000, raw),
        }
        assert verify_webhook(raw, signed, form, now=1_800_000_000) == body


@pytest.mark.parametrize(
    ("payload", "given", "secret", "message"),
    [
        (BODY, headers(), "whsec_!!not base64!!", "not base64"),
        (b"\xff\xfe not utf-8", None, SECRET, "mapping"),
        (BODY, {**headers(), "webhook-id": "évt"}, SECRET, "not ASCII"),
        (BODY, {**headers(), "webhook-timestamp": "²"}, SECRET, "not ASCII"),
        (BODY, {**headers(), "webhook-timestamp": "1.8e9"}, SECRET, "not a number"),
        (None, headers(), SECRET, "bytes"),
        (BODY, headers(), None, "secret"),
        (BODY, headers(), "k\udcff", "UTF-8 can encode"),
        (BODY, {**headers(), "webhook-id": b"\xe9vt"}, SECRET, "not ASCII"),
        (BODY, headers(), SECRET, "tolerance"),  # now is NaN below: refused, not admitted
    ],
)
def test_each_malformed_input_is_named(payload: Any, given: Any, secret: Any, message: str) -> None:
    now = float("nan") if message == "tolerance" else 1_800_000_000
    with pytest.raises(WebhookVerificationError, match=message):
        verify_webhook(payload, given, secret, now=now)


def test_a_signed_body_that_is_not_json_is_refused_as_such() -> None:
    raw = b"\xff not json"
    signed = {
        "webhook-id": "e",
        "webhook-timestamp": "1800000000",
        "webhook-signature": sign(SECRET, "e", 1_800_000_000, raw),
    }
    with pytest.raises(WebhookVerificationError, match="not UTF-8 JSON"):
        verify_webhook(raw, signed, SECRET, now=1_800_000_000)

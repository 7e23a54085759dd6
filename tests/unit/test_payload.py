"""A request that passes validation reaches its function whole: its base64 images and its body
are capped so that the event API Gateway hands Lambda stays within Lambda's 6 MB synchronous
payload, and a larger one is refused with a 413 that names the field, the limit and the S3 way
round it (core/payload.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from klingflow.core.codes import JobErrorCode
from klingflow.core.errors import RequestTooLarge, to_http
from klingflow.core.kinds import parse_request
from klingflow.core.payload import (
    BASE64_MAX_BYTES,
    BASE64_MAX_CHARS,
    BODY_MAX_BYTES,
    LAMBDA_PAYLOAD_BYTES,
    check_body,
)
from klingflow.infra.http import Router, json_body, json_response
from tests.conftest import sample_event

# API Gateway's quota for an HTTP API's request line and header values together.
REQUEST_LINE_AND_HEADERS_BYTES = 10_240


def _in_largest_envelope(body: str) -> bytes:
    """The sample POST /jobs event, as Lambda would be handed it, carrying `body`, with the whole
    request line and header quota used, all of it characters JSON escapes (a quote is two
    bytes), in each place an event repeats such text: a header, the raw query and the parsed one."""
    event = sample_event("api_post_job.json")
    filler = '"' * REQUEST_LINE_AND_HEADERS_BYTES
    event["headers"]["x-filler"] = filler
    event["rawQueryString"] = filler
    event["queryStringParameters"] = {"q": filler}
    event["body"] = body
    return json.dumps(event, ensure_ascii=False).encode()


def _motion(image: str, **more: Any) -> dict[str, Any]:
    return {
        "image": image,
        "video": "incoming/run/dance.mp4",
        "character_orientation": "image",
        "mode": "std",
        **more,
    }


def test_the_largest_body_that_passes_fits_lambdas_payload_in_the_largest_envelope() -> None:
    at_limit = "x" * (BODY_MAX_BYTES - 2)  # the event carries it with its two quotes
    assert check_body(at_limit) == []
    assert len(_in_largest_envelope(at_limit)) <= LAMBDA_PAYLOAD_BYTES

    [refused] = check_body(at_limit + "x")
    assert (refused.field, refused.rule) == ("(body)", "body_max_bytes")


def test_the_largest_base64_image_that_passes_leaves_a_body_that_passes() -> None:
    # Given a request whose image takes the whole base64 allowance, beside the longest prompt
    # (every character escaped by JSON) and the most metadata a request may have
    request = _motion(
        "A" * BASE64_MAX_CHARS,
        prompt="\u00e9" * 2500,
        metadata={"note": '"' * 1000},
    )
    assert parse_request(request) is not None

    # Then its body passes, and so fits Lambda's payload
    body = json.dumps(request)
    assert check_body(body) == []
    assert len(_in_largest_envelope(body)) <= LAMBDA_PAYLOAD_BYTES


def test_one_base64_character_over_is_a_413_naming_the_field_the_limit_and_the_s3_route() -> None:
    with pytest.raises(RequestTooLarge) as refused:
        parse_request(_motion("data:image/png;base64," + "A" * (BASE64_MAX_CHARS - 22 + 1)))

    [detail] = refused.value.errors
    assert (detail.field, detail.rule) == ("image", "base64_max_bytes")
    assert f"{BASE64_MAX_BYTES:,} bytes" in detail.message
    assert "upload the image to the bucket under incoming/ and pass its key" in detail.message
    answer = to_http(refused.value)
    assert answer.status == 413
    assert answer.body["error"]["code"] == JobErrorCode.REQUEST_TOO_LARGE
    assert answer.body["error"]["details"] == [detail.as_dict()]


def test_images_that_fit_alone_are_refused_together_each_named_largest_first() -> None:
    half = BASE64_MAX_CHARS // 2
    with pytest.raises(RequestTooLarge) as refused:
        parse_request(
            {
                "kind": "image_to_video",
                "image": "B" * half,
                "image_tail": "data:image/png;base64," + "C" * half,
                "prompt": "a dance",
            }
        )
    assert [(e.field, e.rule) for e in refused.value.errors] == [
        ("image_tail", "base64_max_bytes"),
        ("image", "base64_max_bytes"),
    ]


def test_object_keys_and_urls_do_not_count_against_the_base64_allowance() -> None:
    request = _motion("A" * BASE64_MAX_CHARS, video="incoming/" + "v" * 1000 + ".mp4")
    assert parse_request(request) is not None


def test_the_api_refuses_a_body_too_large_once_escaped_with_a_413() -> None:
    # Given a route that reads its JSON body, and a body whose characters are few enough but
    # which the event carries escaped (a quote takes two bytes there)
    api = Router()

    @api.post("/jobs")
    def post() -> dict[str, object]:
        return json_response(202, json_body(api.current_event))

    event = sample_event("api_post_job.json")
    event["body"] = '"' * (BODY_MAX_BYTES // 2)
    assert len(event["body"]) < BODY_MAX_BYTES

    answer = api.resolve(event)

    assert answer["statusCode"] == 413
    [detail] = json.loads(answer["body"])["error"]["details"]
    assert (detail["field"], detail["rule"]) == ("(body)", "body_max_bytes")
    assert f"at most {BODY_MAX_BYTES:,}" in detail["message"]

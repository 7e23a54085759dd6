"""The seeds' own example bodies round-trip through each adapter."""

from __future__ import annotations

import pytest

from klingflow.errors import ProviderErrorClass
from klingflow.models import parse_request
from klingflow.providers.apimaster import ApimasterAdapter
from klingflow.providers.base import MotionControlSpec
from klingflow.providers.gateway import GatewayAdapter
from klingflow.states import JobStatus


def _spec(**changes: object) -> MotionControlSpec:
    request = parse_request(
        {
            "image": "k.png",
            "video": "k.mp4",
            "character_orientation": "video",
            "mode": "pro",
            "prompt": "在舞台上表演",
            "keep_original_sound": "yes",
            **changes,
        }
    )
    return MotionControlSpec(
        job_id="01JOB",
        request=request,
        image_url="https://example.com/person.jpg",
        video_url="https://example.com/dance.mp4",
        video_duration_s=7.4,
        callback_url="https://api.example/callbacks/01JOB/t",
    )


def test_gateway_motion_control_body_matches_seed_003() -> None:
    call = GatewayAdapter("https://gw.example").create_motion_control(_spec())
    assert (call.method, call.path) == ("POST", "/v1/videos")
    # seed 003, "带提示词的动作控制", plus the callback and our own task id
    assert call.json == {
        "model": "Kling-V2.6",
        "action_control": True,
        "image_url": "https://example.com/person.jpg",
        "video_url": "https://example.com/dance.mp4",
        "mode": "pro",
        "character_orientation": "video",
        "prompt": "在舞台上表演",
        "keep_original_sound": "yes",
        "callback_url": "https://api.example/callbacks/01JOB/t",
        "external_task_id": "01JOB",
    }


def test_gateway_parses_the_seed_responses() -> None:
    adapter = GatewayAdapter("https://gw.example")
    created = adapter.parse_create(
        {
            "id": "task_abc123",
            "status": "pending",
            "created_at": "2025-01-13T10:00:00.000000Z",
            "model": "Kling-V2.6",
        }
    )
    assert created.task_id == "task_abc123"
    done = adapter.parse_task(
        {
            "id": "task_abc123",
            "status": "completed",
            "created_at": "2025-01-13T10:00:00.000000Z",
            "completed_at": "2025-01-13T10:03:00.000000Z",
            "model": "Kling-V2.6",
            "video_url": "https://example.com/output.mp4",
            "usage": {"seconds": 5.0, "video_count": 1, "size": "1920*1080"},
            "raw_response": {},
        }
    )
    assert done.status is JobStatus.SUCCEEDED
    assert done.outputs[0].url == "https://example.com/output.mp4"
    assert done.billed_seconds == 5.0
    failed = adapter.parse_task(
        {"id": "task_abc123", "status": "failed", "model": "Kling-V2.6", "error": "内容审核未通过"}
    )
    assert (failed.status, failed.error_message) == (JobStatus.FAILED, "内容审核未通过")
    assert adapter.parse_task({"id": "t", "status": "processing"}).status is JobStatus.RUNNING
    assert adapter.parse_task({"id": "t", "status": "pending"}).status is JobStatus.SUBMITTED


def test_apimaster_body_and_responses_match_seed_004() -> None:
    adapter = ApimasterAdapter("https://apimaster.ai/v1")
    call = adapter.create_motion_control(_spec(prompt=None, keep_original_sound="no"))
    assert (call.method, call.path) == ("POST", "/videos/generations")
    assert call.json == {
        "model": "kling-v3-motion-control",
        "image_url": "https://example.com/person.jpg",
        "video_url": "https://example.com/dance.mp4",
        "character_orientation": "video",
        "mode": "pro",
        "keep_original_sound": "no",
        "watermark_info": {"enabled": False},
        "duration": 8,  # 7.4 s rounded up: only the pre-charge estimate
    }
    assert adapter.parse_create(
        {"code": 200, "data": [{"status": "submitted", "task_id": "task_xxxxxxxx"}]}
    ).task_id == ("task_xxxxxxxx")
    done = adapter.parse_task(
        {"id": "task_xxxxxxxx", "status": "completed", "url": "https://cdn.example/v.mp4"}
    )
    assert done.status is JobStatus.SUCCEEDED
    assert adapter.download("task_xxxxxxxx", done.outputs[0]).url == "https://cdn.example/v.mp4"


def test_an_apimaster_proxy_url_is_fetched_through_the_content_endpoint_with_the_key() -> None:
    adapter = ApimasterAdapter("https://apimaster.ai/v1")
    done = adapter.parse_task(
        {"id": "task_1", "status": "completed", "url": "https://apimaster.ai/proxy/abc"}
    )
    download = adapter.download("task_1", done.outputs[0])
    assert download.url == "https://apimaster.ai/v1/videos/task_1/content"
    assert download.authenticated


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ProviderErrorClass.INVALID_REQUEST),
        (401, ProviderErrorClass.AUTH),
        (402, ProviderErrorClass.INSUFFICIENT_BALANCE),
        (429, ProviderErrorClass.RATE_LIMITED),
        (503, ProviderErrorClass.PROVIDER_DOWN),
        (504, ProviderErrorClass.UNKNOWN_OUTCOME),
    ],
)
def test_apimaster_error_codes_map_onto_the_taxonomy(status: int, expected: ProviderErrorClass) -> None:
    error = ApimasterAdapter("https://apimaster.ai/v1").classify(
        status, {"code": status, "message": "m"}, {"Retry-After": "7"}
    )
    assert error.error_class is expected
    assert error.retry_after_s == 7.0


def test_an_unknown_status_word_moves_nothing() -> None:
    assert GatewayAdapter("https://gw").parse_task({"id": "t", "status": "weird"}).status is None
